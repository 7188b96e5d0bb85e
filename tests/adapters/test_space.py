"""to_space / from_space: the merge-space API of lora (incl. embedding modules) and ia3, and its refusal."""

from __future__ import annotations

import pytest
import torch

from adamergex.adapters.base import AdapterType
from adamergex.errors import ConfigError, NumericalError
from adamergex.loading import attach
from adamergex.registry import ADAPTERS
from tests._adapters import base_model, make_state


def test_lora_space_is_dense_delta_and_from_space_is_an_exact_lora() -> None:
    typ = ADAPTERS.get("lora")
    state = make_state("lora", seed=1, targets=["embed_tokens", "q_proj", "down_proj"], head=True)
    space = typ.to_space(state)
    for m, g in state.params.items():
        a = g.get("lora_A", g.get("lora_embedding_A"))
        b = g.get("lora_B", g.get("lora_embedding_B"))
        assert space[m]["delta"].dtype == torch.float64
        assert torch.equal(space[m]["delta"], state.scaling[m] * b.double() @ a.double())
    back = typ.from_space(space, like=state)
    emb = next(m for m in state.params if "embed_tokens" in m)
    assert set(back.params[emb]) == {"lora_embedding_A", "lora_embedding_B"}
    assert back.dtype == state.dtype and back.saved_modules.keys() == state.saved_modules.keys()
    for m in state.params:
        assert torch.allclose(typ.to_space(back)[m]["delta"], space[m]["delta"], atol=1e-6)
        assert back.params[m][next(iter(back.params[m]))].shape[0] == min(space[m]["delta"].shape)
    x = torch.randint(0, 61, (2, 5))
    with torch.no_grad():
        assert torch.allclose(attach(base_model(), back)(input_ids=x).logits,
                              attach(base_model(), state)(input_ids=x).logits, atol=1e-5)


def test_lora_from_space_checks_modules_and_shapes() -> None:
    typ = ADAPTERS.get("lora")
    state = make_state("lora", seed=1)
    space = typ.to_space(state)
    m = state.modules[0]
    with pytest.raises(ConfigError, match="missing"):
        typ.from_space({k: v for k, v in space.items() if k != m}, like=state)
    with pytest.raises(ConfigError, match=f"module {m}: ΔW must have shape"):
        typ.from_space({**space, m: {"delta": space[m]["delta"].T[:3]}}, like=state)


def test_ia3_space_is_log_and_exp_inverts_it() -> None:
    typ = ADAPTERS.get("ia3")
    state = make_state("ia3", seed=2)
    space = typ.to_space(state)
    for m, g in state.params.items():
        assert torch.equal(space[m]["log"], g["l"].double().log())
    back = typ.from_space(space, like=state)
    for m, g in state.params.items():
        assert torch.allclose(back.params[m]["l"], g["l"], rtol=1e-6) and back.params[m]["l"].dtype == g["l"].dtype
    m = state.modules[0]
    params = {k: dict(v) for k, v in state.params.items()}
    params[m]["l"] = -params[m]["l"]
    with pytest.raises(NumericalError, match=f"module {m}: \\(IA\\)³ log space needs entries l >= "):
        typ.to_space(state.replace(params=params))


def test_types_without_a_merge_space_refuse_clearly() -> None:
    class Stacked(AdapterType):
        name = "stacked"
        structure = "stack_only"

    with pytest.raises(ConfigError, match="adapter type 'stacked' has no merge space"):
        Stacked().to_space(make_state("lora", seed=1))
    with pytest.raises(ConfigError, match="adapter type 'stacked' has no merge space"):
        Stacked().from_space({}, like=make_state("lora", seed=1))
