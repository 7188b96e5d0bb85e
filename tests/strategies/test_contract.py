"""One contract suite over every registered strategy × adapter type (a new strategy is tested on registration)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, IncompatibleAdaptersError, NumericalError
from adamergex.loading import attach
from adamergex.merging import load_merge_output, merge, save_merge_output
from adamergex.registry import ADAPTERS, STRATEGIES
from adamergex.strategy import Composition
from tests._adapters import base_model, make_state

NAMES = STRATEGIES.names()
STRATEGY_DIR = Path(__file__).resolve().parents[2] / "strategies"


def roles_for(name: str, trio: dict) -> dict:  # noqa: ANN001
    strat = STRATEGIES.get(name)
    return {r: s for r, s in trio.items() if r in strat.roles or r in strat.optional_roles}


def same_tensors(a, b) -> bool:  # noqa: ANN001
    return a.params.keys() == b.params.keys() and all(
        a.params[m].keys() == b.params[m].keys() and all(torch.equal(a.params[m][n], b.params[m][n]) for n in a.params[m])
        for m in a.params
    ) and a.scaling == b.scaling


def test_every_strategy_file_is_registered() -> None:
    files = sorted(p.stem for p in STRATEGY_DIR.glob("*.py") if not p.stem.startswith("_"))
    assert files == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_identity_parameters_return_the_task_adapter_exactly(name: str, trio: dict) -> None:
    strat = STRATEGIES.get(name)
    if strat.identity is None:
        pytest.skip(f"{name} declares no identity parameters")
    out = strat(roles_for(name, trio), dict(strat.identity))
    assert same_tensors(out, trio["task"])
    assert out.saved_modules.keys() == trio["task"].saved_modules.keys()


@pytest.mark.parametrize("name", NAMES)
def test_identical_reference_adapters_return_the_task_adapter(name: str, trio: dict) -> None:
    strat = STRATEGIES.get(name)
    if strat.output != "merge" or not {"ref_source", "ref_target"} <= set(strat.roles + strat.optional_roles):
        pytest.skip(f"{name} does not take both reference roles into a merge")
    adapters = roles_for(name, {**trio, "ref_target": trio["ref_source"].replace(metadata={"language": "fr"})})
    out = strat(adapters)
    assert same_tensors(out, trio["task"])


@pytest.mark.parametrize("name", NAMES)
def test_keys_dtype_heads_survive_and_runs_repeat(name: str, trio: dict) -> None:
    strat = STRATEGIES.get(name)
    adapters = roles_for(name, trio)
    a, b = strat(adapters), strat(adapters)
    # what the strategy returns is what it declares for this type (``output_for``: "by_type" strategies too)
    assert isinstance(a, Composition) == (strat.output_for(trio["task"].kind) == "stack")
    if isinstance(a, Composition):
        assert a.head_from == "task" and a.adapters["task"] is trio["task"]
        assert not a.adapters["ref_target"].saved_modules
        return
    assert set(a.params) == set(trio["task"].params)
    # LoHa/LoKr merges are exact LoRAs (their type's ``merged_kind``); other types merge into their own kind
    merged_kind = getattr(ADAPTERS.get(trio["task"].kind), "merged_kind", trio["task"].kind)
    assert a.dtype == trio["task"].dtype and a.kind in (trio["task"].kind, merged_kind)
    assert set(a.saved_modules) == set(trio["task"].saved_modules)
    for k, v in a.saved_modules.items():
        assert torch.equal(v, trio["task"].saved_modules[k])
    assert same_tensors(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_saved_output_loads_with_peft_and_gives_the_in_memory_logits(name: str, trio: dict, tmp_path: Path) -> None:
    from peft import PeftModel

    result = merge(name, roles_for(name, trio))
    x = torch.randint(0, 61, (2, 7))
    with torch.no_grad():
        in_memory = attach(base_model(), result.output)(input_ids=x).logits
    save_merge_output(result, tmp_path / "out")
    loaded = load_merge_output(tmp_path / "out")
    with torch.no_grad():
        reloaded = attach(base_model(), loaded)(input_ids=x).logits
        assert torch.allclose(in_memory, reloaded, atol=1e-6)
        if not isinstance(result.output, Composition):
            peft_logits = PeftModel.from_pretrained(base_model(), str(tmp_path / "out"))(input_ids=x).logits
            assert torch.allclose(in_memory, peft_logits, atol=1e-6)
            assert loaded.metadata["merge"]["strategy"] == name
            assert loaded.metadata["merge"]["inputs"]["task"]["sha256"] == trio["task"].fingerprint()


@pytest.mark.parametrize("name", NAMES)
def test_nan_inputs_are_refused(name: str, trio: dict) -> None:
    task = trio["task"]
    module = task.modules[0]
    params = {m: dict(g) for m, g in task.params.items()}
    tensor_name = next(iter(params[module]))
    bad = params[module][tensor_name].clone()
    bad.view(-1)[0] = float("nan")
    params[module][tensor_name] = bad
    with pytest.raises(NumericalError, match=f"task adapter: tensor {module}:{tensor_name} must be finite"):
        STRATEGIES.get(name)(roles_for(name, {**trio, "task": task.replace(params=params)}))


@pytest.mark.parametrize("name", NAMES)
def test_other_base_model_is_refused(name: str, trio: dict) -> None:
    other = make_state(trio["ref_target"].kind, seed=7, rank=3, base="other-llama")
    with pytest.raises(IncompatibleAdaptersError, match="'tiny-llama'.*'other-llama'"):
        STRATEGIES.get(name)(roles_for(name, {**trio, "ref_target": other}))


def test_unknown_strategy_and_parameter_messages(trio: dict) -> None:
    with pytest.raises(KeyError, match="unknown strategy 'tie'; available: adamergex, "):
        merge("tie", trio)
    with pytest.raises(ConfigError, match="strategy 'adamergex' has no parameter 'tt'; available: epsilon, ia3_form"):
        merge("adamergex", trio, {"tt": 1})
    with pytest.raises(ConfigError, match=r"AdaMergeXConfig.t must be in \[0.0, inf\], got -1.0"):
        merge("adamergex", trio, {"t": "-1"})
    with pytest.raises(ConfigError, match="ia3_form must be one of"):
        merge("adamergex", trio, {"ia3_form": "linear"})
    with pytest.raises(ConfigError, match="t must be a float, got 'abc'"):
        merge("adamergex", trio, {"t": "abc"})


def test_missing_role_is_refused(trio: dict) -> None:
    with pytest.raises(ConfigError, match=r"missing \['ref_source'\]"):
        STRATEGIES.get("adamergex")({"task": trio["task"], "ref_target": trio["ref_target"]})


def test_mixed_types_and_modules_are_refused() -> None:
    lora = make_state("lora", seed=1)
    ia3 = make_state("ia3", seed=2)
    with pytest.raises(IncompatibleAdaptersError, match="one type"):
        STRATEGIES.get("adamergex")({"task": lora, "ref_source": ia3, "ref_target": ia3})
    fewer = make_state("lora", seed=3, targets=["q_proj"])
    with pytest.raises(IncompatibleAdaptersError, match="same modules"):
        STRATEGIES.get("adamergex")({"task": lora, "ref_source": fewer, "ref_target": lora})
