"""Each strategy's formula against a dense float64 computation (LoRA) or the element-wise formula ((IA)³)."""

from __future__ import annotations

import pytest
import torch

from adamergex.loading import attach
from adamergex.registry import ADAPTERS, STRATEGIES
from adamergex.strategy import Composition
from tests._adapters import base_model

T = 0.7


def dense(state, m):  # noqa: ANN001, ANN201
    return ADAPTERS.get("lora").delta(state, m, torch.float64)


def vec(state, m):  # noqa: ANN001, ANN201
    return state.params[m]["l"].double()


def test_adamergex_lora_is_exact_delta_arithmetic(trio: dict) -> None:
    if trio["task"].kind != "lora":
        pytest.skip("lora only")
    out = STRATEGIES.get("adamergex")(trio, {"t": T})
    for m in trio["task"].modules:
        expected = dense(trio["task"], m) + T * (dense(trio["ref_target"], m) - dense(trio["ref_source"], m))
        assert torch.allclose(dense(out, m), expected, atol=1e-5)


def test_adamergex_ia3_published_and_log_forms(trio: dict) -> None:
    if trio["task"].kind != "ia3":
        pytest.skip("ia3 only")
    pub = STRATEGIES.get("adamergex")(trio, {"t": T})
    log = STRATEGIES.get("adamergex")(trio, {"t": T, "ia3_form": "log"})
    sa = STRATEGIES.get("structure_adaptive")(trio, {"ref_target_weight": T, "ref_source_weight": -T})
    for m in trio["task"].modules:
        rho = vec(trio["ref_target"], m) / vec(trio["ref_source"], m)
        assert torch.allclose(vec(pub, m), vec(trio["task"], m) * (T * (rho - 1) + 1), rtol=1e-6)
        assert torch.allclose(vec(log, m), vec(trio["task"], m) * rho**T, rtol=1e-6)
        assert torch.allclose(vec(log, m), vec(sa, m), rtol=1e-6)


def test_structure_adaptive_task_plus_target_ablation(trio: dict) -> None:
    out = STRATEGIES.get("structure_adaptive")({"task": trio["task"], "ref_target": trio["ref_target"]})
    kind = trio["task"].kind
    for m in trio["task"].modules:
        if kind == "lora":
            expected = dense(trio["task"], m) + dense(trio["ref_target"], m)
            assert torch.allclose(dense(out, m), expected, atol=1e-5)
        elif kind == "ia3":
            assert torch.allclose(vec(out, m), vec(trio["task"], m) * vec(trio["ref_target"], m), rtol=1e-6)
        else:  # dora, loha, lokr: updates add (dense forms in tests/adapters), a DoRA magnitude multiplies
            typ = ADAPTERS.get(kind)
            task, target = typ.to_space(trio["task"])[m], typ.to_space(trio["ref_target"])[m]
            assert torch.allclose(dense(out, m), task["delta"] + target["delta"], atol=1e-5)
            if kind == "dora":
                expected = (task["log_magnitude"] + target["log_magnitude"]).exp()
                assert torch.allclose(out.params[m]["magnitude"].double(), expected, rtol=1e-6)


SIGNED = {"lora": {"lora_B"}, "dora": {"lora_B", "magnitude"}, "loha": {"hada_w1_a"}, "lokr": {"lokr_w1", "lokr_w1_a"}}
"""Tensors whose raw-parameter combination takes the signed weight (a DoRA magnitude is summed as is)."""


def test_task_arithmetic_formula_and_normalisation(trio: dict) -> None:
    kind = trio["task"].kind
    same_rank = trio  # factor-space arithmetic needs equal ranks; the fixture's are equal
    out = STRATEGIES.get("task_arithmetic")(same_rank, {"t": T, "normalize": True})
    z = 1 + 2 * T
    w = {"task": 1 / z, "ref_target": T / z, "ref_source": -T / z}
    for m in trio["task"].modules:
        if kind in SIGNED:  # raw factors: Σ wᵢ·x for the factor that carries the sign, Σ |wᵢ|·x for the others
            for n in trio["task"].params[m]:
                expected = sum((w[r] if n in SIGNED[kind] else abs(w[r])) * same_rank[r].params[m][n].double() for r in w)
                assert torch.allclose(out.params[m][n].double(), expected, atol=1e-6), n
        else:
            expected = 1 + sum(w[r] * (vec(same_rank[r], m) - 1) for r in w)
            assert torch.allclose(vec(out, m), expected, rtol=1e-6)


def test_madx_stack_activates_language_and_task_adapters_together(trio: dict) -> None:
    out = STRATEGIES.get("madx_stack")(trio)
    comp = STRATEGIES.get("madx_stack")(trio, {"form": "composition"})
    x = torch.randint(0, 61, (2, 5))
    with torch.no_grad():
        stacked = attach(base_model(), comp)(input_ids=x).logits
        if trio["task"].kind == "lora":  # parallel LoRAs add: equals the (task, ref_target) = (1, 1) merge
            merged = STRATEGIES.get("structure_adaptive")({"task": trio["task"], "ref_target": trio["ref_target"]})
            assert torch.allclose(stacked, attach(base_model(), merged)(input_ids=x).logits, atol=1e-5)
        if not isinstance(out, Composition):  # the one adapter written is the composition, exactly
            assert torch.allclose(stacked, attach(base_model(), out)(input_ids=x).logits, atol=1e-5)
        task_only = attach(base_model(), trio["task"])(input_ids=x).logits
    assert not torch.allclose(stacked, task_only, atol=1e-4)


def test_head_used_is_the_task_adapters(trio: dict) -> None:
    """The task adapter's lm_head copy drives the output, never the base model's or a reference's."""
    out = STRATEGIES.get("adamergex")(trio, {"t": 0.5})
    model = attach(base_model(), out)
    head_key = "base_model.model.lm_head.weight"
    used = model.base_model.model.lm_head.modules_to_save["default"].weight
    assert torch.equal(used, trio["task"].saved_modules[head_key])


def test_task_arithmetic_refuses_unequal_lora_ranks() -> None:
    from adamergex.errors import IncompatibleAdaptersError
    from tests._adapters import make_state

    adapters = {"task": make_state("lora", seed=1, rank=4), "ref_source": make_state("lora", seed=2, rank=2),
                "ref_target": make_state("lora", seed=3, rank=2)}
    with pytest.raises(IncompatibleAdaptersError, match="equal ranks; module .* has rank 2 in input 1 and 4"):
        STRATEGIES.get("task_arithmetic")(adapters)
