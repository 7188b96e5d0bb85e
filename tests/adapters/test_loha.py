"""LoHa: PEFT round trip, and merges (an exact LoRA) against dense float64 Hadamard products on logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import AdapterFormatError, ConfigError, IncompatibleAdaptersError
from adamergex.registry import ADAPTERS
from tests._adapters import make_state
from tests.adapters import _lycoris_checks as checks

LOHA = ADAPTERS.get("loha")
T = make_state("loha", seed=1, rank=4, head=True)
S = make_state("loha", seed=2, rank=2)
G = make_state("loha", seed=3, rank=3)


def dense(g):  # noqa: ANN001, ANN201 - PEFT HadaWeight: (W1a·W1b) ⊙ (W2a·W2b)
    return (g["hada_w1_a"].double() @ g["hada_w1_b"].double()) * (g["hada_w2_a"].double() @ g["hada_w2_b"].double())


def test_round_trip_and_unmerged_logits(tmp_path: Path) -> None:
    checks.round_trip(T, tmp_path, dense)


@pytest.mark.parametrize("weights", [[1.0, 0.7, -0.7], [0.5, -1.5, 0.25]])
def test_merge_is_an_exact_lora_with_the_dense_logits(weights: list[float], tmp_path: Path) -> None:
    checks.merge_matches_dense([T, G, S], weights, tmp_path, dense)
    merged = LOHA.merge(list(zip((T, G, S), weights)))
    assert merged.params[T.modules[0]]["lora_A"].shape[0] == 4 * 4 + 3 * 3 + 2 * 2  # Σ r1·r2


def test_t_zero_returns_the_task_loha_exactly() -> None:
    checks.identity_returns_task(T, S, G)


@pytest.mark.parametrize("k", [1, 5])
def test_compression_is_the_optimal_truncation(k: int) -> None:
    checks.compression_is_optimal([T, G, S], k, dense)


def test_merge_space_round_trip(tmp_path: Path) -> None:
    checks.space_round_trip(T, tmp_path, dense)


def test_arithmetic_merge_flips_one_factor() -> None:
    same = make_state("loha", seed=5, rank=4)
    out = LOHA.arithmetic_merge([(T, 1.0), (same, -0.5)])
    m = T.modules[0]
    for n in ("hada_w1_a", "hada_w1_b"):
        sign = -0.5 if n == "hada_w1_a" else 0.5
        assert torch.allclose(out.params[m][n].double(), T.params[m][n].double() + sign * same.params[m][n].double())


def test_bad_inputs_are_refused_with_messages() -> None:
    cfg, weights = LOHA.to_peft(T)
    key = next(k for k in weights if k.endswith("hada_w2_b"))
    module = key.rpartition(".")[0]
    with pytest.raises(AdapterFormatError, match="must have all of .* missing hada_w2_b"):
        LOHA.from_peft(cfg, {k: v for k, v in weights.items() if k != key}, source="x")
    with pytest.raises(AdapterFormatError, match="CP/Tucker LoHa form .* not supported"):
        LOHA.from_peft(cfg, {**weights, module + ".hada_t1": torch.zeros(4, 4, 3, 3)}, source="x")
    with pytest.raises(AdapterFormatError, match="linear layers only"):
        LOHA.from_peft(cfg, {**weights, key: weights[key][..., None, None]}, source="x")
    with pytest.raises(AdapterFormatError, match=r"W1a \(out, r1\)"):
        LOHA.from_peft(cfg, {**weights, key: weights[key][:-1]}, source="x")
    params = {m: dict(g) for m, g in G.params.items()}
    params[module] = {n: t[:, :-1] if n.endswith("_b") else t for n, t in params[module].items()}
    with pytest.raises(IncompatibleAdaptersError, match=module.replace(".", r"\.") + ": loha updates must have one"):
        LOHA.merge([(T, 1.0), (G.replace(params=params), 1.0)])
    with pytest.raises(ConfigError, match="loha merge space must be 'delta'"):
        LOHA.merge([(T, 1.0), (G, 1.0)], space="factors")


@pytest.mark.parametrize("t", [0.0, 0.5])
def test_merge_with_rank_compresses_through_lora(t: float) -> None:
    from adamergex.merging import merge

    result = merge("adamergex", {"task": T, "ref_source": S, "ref_target": G}, {"t": t}, rank=3)
    assert result.output.kind == "lora" and result.compression is not None
    assert all(g["lora_A"].shape[0] == 3 for g in result.output.params.values())
