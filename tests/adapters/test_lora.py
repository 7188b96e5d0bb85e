"""LoRA algebra against dense float64 computations of the formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adamergex.errors import AdapterFormatError, ConfigError, IncompatibleAdaptersError
from adamergex.registry import ADAPTERS
from tests._adapters import make_state

LORA = ADAPTERS.get("lora")
A = make_state("lora", seed=1, rank=4, head=True)
B = make_state("lora", seed=2, rank=2)
C = make_state("lora", seed=3, rank=3, rslora=True)


def dense(state, module):  # noqa: ANN001, ANN201 - test helper
    return LORA.delta(state, module, torch.float64)


def test_scaling_read_from_config_including_rslora() -> None:
    m = A.modules[0]
    assert A.scaling[m] == pytest.approx(8 / 4)
    assert C.scaling[m] == pytest.approx(6 / math.sqrt(3))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=3, max_size=3))
def test_delta_merge_equals_dense_float64(weights: list[float]) -> None:
    merged = LORA.merge(list(zip((A, B, C), weights)))
    for m in A.modules:
        expected = sum(w * dense(s, m) for s, w in zip((A, B, C), weights))
        got = dense(merged, m)
        scale = max(1.0, float(expected.abs().max()))
        assert torch.allclose(got, expected, atol=1e-5 * scale, rtol=0), m


def test_delta_merge_is_exact_concatenation_of_ranks() -> None:
    merged = LORA.merge([(A, 1.0), (B, 0.5), (C, -0.5)])
    m = A.modules[0]
    assert merged.params[m]["lora_A"].shape[0] == 4 + 2 + 3
    assert merged.scaling[m] == 1.0


def test_factor_space_merge_is_the_published_formula_and_differs_from_delta() -> None:
    other = make_state("lora", seed=9, rank=4)
    merged = LORA.merge([(A, 1.0), (other, 0.5)], space="factors")
    m = A.modules[0]
    a = A.params[m]["lora_A"].double() + 0.5 * other.params[m]["lora_A"].double()
    b = A.params[m]["lora_B"].double() + 0.5 * other.params[m]["lora_B"].double()
    assert torch.allclose(dense(merged, m), A.scaling[m] * b @ a, atol=1e-5)
    exact = dense(A, m) + 0.5 * dense(other, m)
    assert not torch.allclose(dense(merged, m), exact, atol=1e-3)  # the cross terms


def test_factor_space_merge_refuses_unequal_ranks() -> None:
    with pytest.raises(IncompatibleAdaptersError, match="equal ranks"):
        LORA.merge([(A, 1.0), (B, 1.0)], space="factors")


def test_arithmetic_merge_flips_only_b_for_negative_weights() -> None:
    other = make_state("lora", seed=9, rank=4)
    merged = LORA.arithmetic_merge([(A, 1.0), (other, -0.5)])
    m = A.modules[0]
    a = A.params[m]["lora_A"].double() + 0.5 * other.params[m]["lora_A"].double()
    b = A.params[m]["lora_B"].double() - 0.5 * other.params[m]["lora_B"].double()
    assert torch.allclose(merged.params[m]["lora_A"].double(), a, atol=1e-6)
    assert torch.allclose(merged.params[m]["lora_B"].double(), b, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_compression_error_is_the_optimal_truncation_error(k: int) -> None:
    merged = LORA.merge([(A, 1.0), (B, 0.7), (C, -0.7)])
    compressed, report = LORA.compress(merged, k)
    for m in merged.modules:
        full = dense(merged, m)
        s = torch.linalg.svdvals(full)
        optimal = float(s[k:].square().sum().sqrt())
        assert report["per_module"][m]["error"] == pytest.approx(optimal, rel=1e-6, abs=1e-9)
        err = float(torch.linalg.matrix_norm(full - dense(compressed, m)))
        assert err == pytest.approx(optimal, rel=1e-5, abs=1e-6)
        assert compressed.params[m]["lora_A"].shape[0] == min(k, 9)
    assert report["max_relative_error"] >= report["relative_error"] * 0.999 or report["relative_error"] == 0


def test_compression_to_full_rank_is_lossless() -> None:
    merged = LORA.merge([(A, 1.0), (B, 1.0)])
    compressed, report = LORA.compress(merged, 64)
    assert report["max_relative_error"] < 1e-6
    for m in merged.modules:
        assert torch.allclose(dense(compressed, m), dense(merged, m), atol=1e-5)


def test_compression_rejects_bad_rank() -> None:
    with pytest.raises(ConfigError, match="rank must be a positive integer, got 0"):
        LORA.compress(A, 0)


def test_embedding_lora_merges_exactly() -> None:
    e1 = make_state("lora", seed=4, rank=2, targets=["embed_tokens", "q_proj"])
    e2 = make_state("lora", seed=5, rank=3, targets=["embed_tokens", "q_proj"])
    merged = LORA.merge([(e1, 1.0), (e2, -0.25)])
    emb = next(m for m in e1.modules if m.endswith("embed_tokens"))
    assert "lora_embedding_A" in merged.params[emb]
    assert torch.allclose(dense(merged, emb), dense(e1, emb) - 0.25 * dense(e2, emb), atol=1e-5)


def test_dora_and_biases_are_refused() -> None:
    cfg, weights = LORA.to_peft(A)
    with pytest.raises(AdapterFormatError, match="use_dora must be false"):
        LORA.from_peft({**cfg, "use_dora": True}, weights, source="x")
    biased = A.replace(config={**A.config, "bias": "all"})
    with pytest.raises(ConfigError, match="bias='none'"):
        LORA.merge([(biased, 1.0), (B, 1.0)])


def test_unpaired_factor_is_a_format_error_naming_the_module() -> None:
    cfg, weights = LORA.to_peft(A)
    key = next(k for k in weights if k.endswith("lora_B.weight"))
    del weights[key]
    with pytest.raises(AdapterFormatError, match="must have both lora_A and lora_B"):
        LORA.from_peft(cfg, weights, source="adapter_x")


def test_gram_and_householder_qr_routes_agree_and_handle_rank_deficiency() -> None:
    twice = LORA.merge([(A, 1.0), (make_state("lora", seed=1, rank=4), 0.0), (B, 1.0)])
    deficient = LORA._concat([(A, 1.0), (A.replace(metadata={"copy": True}), 1.0)], A)  # rank 8 blocks, rank-4 ΔW
    for state in (twice, deficient):
        gram, rep_g = LORA.compress(state, 3, method="gram")
        house, rep_h = LORA.compress(state, 3, method="householder")
        for m in state.modules:
            assert torch.allclose(dense(gram, m), dense(house, m), atol=1e-6)
            assert rep_g["per_module"][m]["error"] == pytest.approx(rep_h["per_module"][m]["error"], rel=1e-6)
