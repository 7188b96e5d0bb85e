"""Shared test setup: no network, tiny models built in code, adapters made from them."""

from __future__ import annotations

import os

# Tests never touch the network: a Hub lookup fails at once instead of after a long timeout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from adamergex.registry import ADAPTERS  # noqa: E402
from tests._adapters import make_state  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(params=ADAPTERS.names())  # every registered type, plug-ins included: a new one is tested at once
def adapter_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def trio(adapter_kind: str) -> dict[str, object]:
    """Three adapters of one kind on the same tiny base model, by role (task with a saved head)."""
    return {
        "task": make_state(adapter_kind, seed=1, rank=4, language="en", task="toy", head=True),
        "ref_source": make_state(adapter_kind, seed=2, rank=4, language="en", task="reference_clm"),
        "ref_target": make_state(adapter_kind, seed=3, rank=4, language="fr", task="reference_clm"),
    }


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> None:
    """Seed, and run tiny models on one intra-op thread: with two threads on shared cores OpenMP's waiting made
    small ops up to 50x slower here, and tiny tensors gain nothing from a second thread."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
