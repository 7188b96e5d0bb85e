"""Checks shared by the LoHa and LoKr tests; each test file passes its own dense float64 formula ``dense(group)``
(written from PEFT's forward, independent of the adapter type's code) and scaling ``α/r`` from the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from adamergex.io import load_adapter, save_adapter
from adamergex.registry import ADAPTERS
from tests._adapters import assert_same_files, base_weight, peft_logits, reference_logits, relative_error

X = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(0))
Dense = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def update(state: Any, m: str, dense: Dense) -> torch.Tensor:
    """``s·F`` with ``s = alpha / r`` read from the config (no rank/alpha patterns in these tests)."""
    return state.config["alpha"] / state.config["r"] * dense(state.params[m])


def round_trip(state: Any, tmp_path: Path, dense: Dense) -> None:
    save_adapter(state, tmp_path / "a")
    loaded = load_adapter(tmp_path / "a")
    assert loaded.kind == state.kind
    save_adapter(loaded, tmp_path / "b")
    assert_same_files(tmp_path / "a", tmp_path / "b")
    weights = {m: base_weight(m) + update(state, m, dense) for m in state.modules}
    assert relative_error(peft_logits(state, tmp_path / "c", X), reference_logits(weights, state.saved_modules, X)) < 1e-5


def merge_matches_dense(states: list[Any], weights: list[float], tmp_path: Path, dense: Dense) -> None:
    typ = ADAPTERS.get(states[0].kind)
    merged = typ.merge(list(zip(states, weights)))
    assert merged.kind == "lora" and merged.config["peft_type"] == "LORA"
    assert merged.saved_modules.keys() == states[0].saved_modules.keys()
    expected = {m: base_weight(m) + sum(w * update(s, m, dense) for s, w in zip(states, weights)) for m in states[0].modules}
    ref = reference_logits(expected, states[0].saved_modules, X)
    assert relative_error(peft_logits(merged, tmp_path / "merged", X), ref) < 1e-5
    assert relative_error(peft_logits(states[0], tmp_path / "task", X), ref) > 1e-3  # the merge is not a no-op
    lora = ADAPTERS.get("lora")
    for m in states[0].modules:  # and the stored rank is the sum of the exact product ranks
        expected_delta = sum(w * update(s, m, dense) for s, w in zip(states, weights))
        assert torch.allclose(lora.delta(merged, m), expected_delta, atol=1e-5)


def identity_returns_task(task: Any, src: Any, tgt: Any) -> None:
    typ = ADAPTERS.get(task.kind)
    for out in (typ.transfer(task, src, tgt, 0.0), typ.merge([(task, 1.0)]), typ.transfer(task, src, src, 1.0)):
        assert out.kind == task.kind
        assert all(torch.equal(out.params[m][n], task.params[m][n]) for m in task.params for n in task.params[m])
        assert out.scaling == task.scaling and out.saved_modules.keys() == task.saved_modules.keys()


def compression_is_optimal(states: list[Any], k: int, dense: Dense) -> None:
    typ = ADAPTERS.get(states[0].kind)
    lora = ADAPTERS.get("lora")
    merged = typ.merge([(s, w) for s, w in zip(states, (1.0, 0.6, -0.6))])
    for source in (merged, states[0]):  # a merge output, and a state of the type itself (t = 0 with --rank)
        compressed, report = typ.compress(source, k)
        assert compressed.kind == "lora"
        for m in states[0].modules:
            full = lora.delta(merged, m) if source is merged else update(source, m, dense)
            optimal = float(torch.linalg.svdvals(full)[k:].square().sum().sqrt())
            assert report["per_module"][m]["error"] == pytest.approx(optimal, rel=1e-6, abs=1e-9)
            assert float(torch.linalg.matrix_norm(full - lora.delta(compressed, m))) == pytest.approx(
                optimal, rel=1e-5, abs=1e-6)
            assert compressed.params[m]["lora_A"].shape[0] <= k


def space_round_trip(state: Any, tmp_path: Path, dense: Dense) -> None:
    typ = ADAPTERS.get(state.kind)
    lora = ADAPTERS.get("lora")
    space = typ.to_space(state)
    for m in state.modules:
        assert set(space[m]) == {"delta"} and space[m]["delta"].dtype == torch.float64
        assert torch.allclose(space[m]["delta"], update(state, m, dense), atol=1e-12)
    back = typ.from_space(space, state)
    assert back.kind == "lora" and back.saved_modules.keys() == state.saved_modules.keys()
    for m in state.modules:
        assert torch.allclose(lora.delta(back, m), space[m]["delta"], atol=1e-6)
        assert back.params[m]["lora_A"].shape[0] == min(space[m]["delta"].shape)
    assert relative_error(peft_logits(back, tmp_path / "b", X), peft_logits(state, tmp_path / "s", X)) < 1e-5
