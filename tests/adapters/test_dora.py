"""DoRA: PEFT round trip, dispatch, and the merge algebra against dense float64 DoRA layers on logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adamergex.errors import AdapterFormatError, IncompatibleAdaptersError, NumericalError
from adamergex.io import load_adapter, save_adapter
from adamergex.registry import ADAPTERS
from tests._adapters import assert_same_files, base_weight, make_state, peft_logits, reference_logits, relative_error

DORA = ADAPTERS.get("dora")
T = make_state("dora", seed=1, rank=4, head=True)
S = make_state("dora", seed=2, rank=2)
G = make_state("dora", seed=3, rank=3)
X = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(0))


def direction(state, m):  # noqa: ANN001, ANN201 - ΔV = (α/r)·B·A from the raw factors and config
    g = state.params[m]
    r = g["lora_A"].shape[0]
    return state.config["lora_alpha"] / r * g["lora_B"].double() @ g["lora_A"].double()


def dora_weight(m, delta, magnitude):  # noqa: ANN001, ANN201 - W' = diag(m ⊘ ‖W + ΔV‖_row)(W + ΔV)
    v = base_weight(m) + delta
    return (magnitude / torch.linalg.vector_norm(v, dim=1)).unsqueeze(1) * v


def mag(state, m):  # noqa: ANN001, ANN201
    return state.params[m]["magnitude"].double()


def test_load_save_load_is_bit_identical_and_dispatches_by_use_dora(tmp_path: Path) -> None:
    save_adapter(T, tmp_path / "a")
    loaded = load_adapter(tmp_path / "a")
    assert loaded.kind == "dora"
    save_adapter(loaded, tmp_path / "b")
    assert_same_files(tmp_path / "a", tmp_path / "b")
    save_adapter(make_state("lora", seed=1), tmp_path / "lora")
    assert load_adapter(tmp_path / "lora").kind == "lora"


def test_unmerged_adapter_gives_the_dense_dora_logits(tmp_path: Path) -> None:
    weights = {m: dora_weight(m, direction(T, m), mag(T, m)) for m in T.modules}
    assert relative_error(peft_logits(T, tmp_path / "t", X), reference_logits(weights, T.saved_modules, X)) < 1e-5


@pytest.mark.parametrize("weights", [(1.0, 0.7, -0.7), (0.5, 1.3, 0.25)])
def test_merge_gives_the_logits_of_the_dense_formula(weights: tuple[float, ...], tmp_path: Path) -> None:
    merged = DORA.merge(list(zip((T, G, S), weights)))
    assert merged.kind == "dora"
    expected = {}
    for m in T.modules:
        delta = sum(w * direction(s, m) for s, w in zip((T, G, S), weights))
        magnitude = mag(T, m) ** weights[0] * mag(G, m) ** weights[1] * mag(S, m) ** weights[2]
        expected[m] = dora_weight(m, delta, magnitude)
    ref = reference_logits(expected, T.saved_modules, X)
    got = peft_logits(merged, tmp_path / "merged", X)
    assert relative_error(got, ref) < 1e-5
    assert relative_error(peft_logits(T, tmp_path / "task", X), ref) > 1e-3  # the merge is not a no-op


@settings(max_examples=20, deadline=None)
@given(st.floats(0.0, 2.0, allow_nan=False, width=32))
def test_transfer_is_direction_sum_and_magnitude_ratio_power(t: float) -> None:
    out = DORA.transfer(T, S, G, t)
    for m in T.modules:
        assert torch.allclose(DORA.delta(out, m), direction(T, m) + t * (direction(G, m) - direction(S, m)), atol=1e-5)
        assert torch.allclose(mag(out, m), mag(T, m) * (mag(G, m) / mag(S, m)) ** t, rtol=1e-6)


def test_t_zero_and_weight_one_return_the_task_adapter_exactly() -> None:
    for out in (DORA.transfer(T, S, G, 0.0), DORA.merge([(T, 1.0)]), DORA.transfer(T, S, S, 1.0)):
        assert all(torch.equal(out.params[m][n], T.params[m][n]) for m in T.params for n in T.params[m])
        assert out.scaling == T.scaling


@pytest.mark.parametrize("k", [1, 3])
def test_compression_truncates_the_direction_optimally_and_keeps_magnitudes(k: int) -> None:
    merged = DORA.merge([(T, 1.0), (G, 0.5), (S, -0.5)])
    compressed, report = DORA.compress(merged, k)
    for m in T.modules:
        full = DORA.delta(merged, m)
        optimal = float(torch.linalg.svdvals(full)[k:].square().sum().sqrt())
        assert report["per_module"][m]["error"] == pytest.approx(optimal, rel=1e-6, abs=1e-9)
        assert float(torch.linalg.matrix_norm(full - DORA.delta(compressed, m))) == pytest.approx(optimal, rel=1e-5)
        assert torch.equal(compressed.params[m]["magnitude"], merged.params[m]["magnitude"])
        assert compressed.params[m]["lora_A"].shape[0] == k


def test_merge_space_round_trip(tmp_path: Path) -> None:
    space = DORA.to_space(T)
    for m in T.modules:
        assert torch.allclose(space[m]["delta"], direction(T, m), atol=1e-6)
        assert torch.allclose(space[m]["log_magnitude"], mag(T, m).log(), atol=1e-7)
    back = DORA.from_space(space, T)
    again = DORA.to_space(back)
    for m in T.modules:
        assert torch.allclose(again[m]["delta"], space[m]["delta"], atol=1e-6)
        assert torch.allclose(again[m]["log_magnitude"], space[m]["log_magnitude"], atol=1e-6)
    assert back.saved_modules.keys() == T.saved_modules.keys() and back.base_model == T.base_model
    assert relative_error(peft_logits(back, tmp_path / "b", X), peft_logits(T, tmp_path / "t", X)) < 1e-5


def _with_magnitude(state, module, value):  # noqa: ANN001, ANN201
    params = {m: dict(g) for m, g in state.params.items()}
    bad = params[module]["magnitude"].clone()
    bad.view(-1)[0] = value
    params[module]["magnitude"] = bad
    return state.replace(params=params)


def test_zero_magnitude_divisor_names_the_module_unless_epsilon() -> None:
    module = S.modules[1]
    zero = _with_magnitude(S, module, 0.0)
    with pytest.raises(NumericalError, match=module.replace(".", r"\.") + ".*must be >= 1e-06"):
        DORA.transfer(T, zero, G, 1.0)
    assert torch.isfinite(mag(DORA.transfer(T, zero, G, 1.0, epsilon=1e-3), module)).all()
    with pytest.raises(NumericalError, match="non-integer power.*positive DoRA magnitudes"):
        DORA.merge([(T, 1.0), (_with_magnitude(G, module, -1.0), 0.5)])
    with pytest.raises(NumericalError, match="must be positive to take their log"):
        DORA.to_space(_with_magnitude(G, module, -1.0))


def test_bad_inputs_are_refused_with_messages() -> None:
    cfg, weights = DORA.to_peft(T)
    with pytest.raises(AdapterFormatError, match="use_dora must be false.*'dora' adapter type"):
        ADAPTERS.get("lora").from_peft(cfg, weights, source="x")
    key = next(k for k in weights if k.endswith("lora_magnitude_vector"))
    with pytest.raises(AdapterFormatError, match="must have a DoRA magnitude"):
        DORA.from_peft(cfg, {k: v for k, v in weights.items() if k != key}, source="x")
    with pytest.raises(AdapterFormatError, match="a 'lora' adapter must hold no DoRA magnitude"):
        ADAPTERS.get("lora").from_peft({**cfg, "use_dora": False}, weights, source="x")
    with pytest.raises(AdapterFormatError, match="DoRA is supported on linear layers only"):
        make_state("dora", seed=4, targets=["embed_tokens"])
    module = T.modules[0]
    params = {m: dict(g) for m, g in G.params.items()}
    params[module] = {n: t[..., :-1] if n == "lora_A" else t for n, t in params[module].items()}
    with pytest.raises(IncompatibleAdaptersError, match=module.replace(".", r"\.") + ": DoRA shapes must match"):
        DORA.merge([(T, 1.0), (G.replace(params=params), 1.0)])
