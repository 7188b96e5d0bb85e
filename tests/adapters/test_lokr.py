"""LoKr: PEFT round trip (whole and factored Kronecker factors), and merges (an exact LoRA) against dense float64
Kronecker products on logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import AdapterFormatError, IncompatibleAdaptersError
from adamergex.registry import ADAPTERS
from tests._adapters import make_state
from tests.adapters import _lycoris_checks as checks

LOKR = ADAPTERS.get("lokr")
T = make_state("lokr", seed=1, rank=4, head=True)  # whole lokr_w1, lokr_w2
F = make_state("lokr", seed=2, rank=1, decompose_both=True)  # lokr_w1_a·lokr_w1_b and lokr_w2_a·lokr_w2_b
M = make_state("lokr", seed=3, rank=2)  # whole w2 on q/v_proj, factored w2 on down_proj


def factor(g, i):  # noqa: ANN001, ANN201
    return g[f"lokr_w{i}"].double() if f"lokr_w{i}" in g else g[f"lokr_w{i}_a"].double() @ g[f"lokr_w{i}_b"].double()


def dense(g):  # noqa: ANN001, ANN201 - PEFT make_kron: kron(W1, W2)
    return torch.kron(factor(g, 1), factor(g, 2))


def test_the_fixtures_cover_whole_and_factored_factors() -> None:
    down = next(m for m in T.modules if m.endswith("down_proj"))
    assert set(T.params[down]) == {"lokr_w1", "lokr_w2"}
    assert set(F.params[down]) == {"lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"}
    assert set(M.params[down]) == {"lokr_w1", "lokr_w2_a", "lokr_w2_b"}


@pytest.mark.parametrize("state", [T, F, M], ids=["whole", "factored", "mixed"])
def test_round_trip_and_unmerged_logits(state, tmp_path: Path) -> None:  # noqa: ANN001
    checks.round_trip(state, tmp_path, dense)


@pytest.mark.parametrize("weights", [[1.0, 0.7, -0.7], [0.5, -1.5, 0.25]])
def test_merge_is_an_exact_lora_with_the_dense_logits(weights: list[float], tmp_path: Path) -> None:
    checks.merge_matches_dense([T, F, M], weights, tmp_path, dense)


def test_exact_lora_rank_is_the_product_of_factor_ranks() -> None:
    q = next(m for m in T.modules if m.endswith("q_proj"))
    assert LOKR.lora_factors(T.params[q])[0].shape == (16, 16)  # whole 4×4 ⊗ 4×4: 4·4
    assert LOKR.lora_factors(F.params[q])[0].shape == (16, 1)  # rank 1 ⊗ rank 1


def test_t_zero_returns_the_task_lokr_exactly() -> None:
    checks.identity_returns_task(T, F, M)


@pytest.mark.parametrize("k", [1, 5])
def test_compression_is_the_optimal_truncation(k: int) -> None:
    checks.compression_is_optimal([T, F, M], k, dense)


@pytest.mark.parametrize("state", [T, F], ids=["whole", "factored"])
def test_merge_space_round_trip(state, tmp_path: Path) -> None:  # noqa: ANN001
    checks.space_round_trip(state, tmp_path, dense)


def test_bad_inputs_are_refused_with_messages() -> None:
    cfg, weights = LOKR.to_peft(F)
    key = next(k for k in weights if k.endswith("lokr_w2_b"))
    module = key.rpartition(".")[0]
    with pytest.raises(AdapterFormatError, match="either lokr_w2 or both lokr_w2_a and lokr_w2_b"):
        LOKR.from_peft(cfg, {k: v for k, v in weights.items() if k != key}, source="x")
    with pytest.raises(AdapterFormatError, match="CP/Tucker LoKr form .* not supported"):
        LOKR.from_peft(cfg, {**weights, module + ".lokr_t2": torch.zeros(1, 1, 3, 3)}, source="x")
    with pytest.raises(AdapterFormatError, match="must share their inner dimension"):
        LOKR.from_peft(cfg, {**weights, key: torch.zeros(2, 6)}, source="x")
    params = {m: dict(g) for m, g in F.params.items()}
    params[module] = {**params[module], "lokr_w2_b": torch.zeros(1, 5)}
    with pytest.raises(IncompatibleAdaptersError, match=module.replace(".", r"\.") + ": lokr updates must have one"):
        LOKR.merge([(T, 1.0), (F.replace(params=params), 1.0)])
