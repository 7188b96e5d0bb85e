"""``madx_stack``: one exact PEFT adapter where two active adapters are one (checked against PEFT's own forward),
a composition where they are not (DoRA, whose PEFT forward is checked against its closed form)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.io import save_adapter
from adamergex.loading import attach
from adamergex.merging import load_merge_output, merge, save_merge_output
from adamergex.registry import ADAPTERS, STRATEGIES
from adamergex.strategy import Composition
from tests._adapters import base_model, base_weight, make_state, reference_logits

EXACT = ["lora", "ia3", "loha", "lokr"]


def two_active_in_peft(task_dir: Path, lang_dir: Path, x: torch.Tensor) -> torch.Tensor:
    """Float64 logits of the base model with both saved adapters loaded and active, by plain PEFT calls."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model().double(), str(task_dir), adapter_name="task")
    model.load_adapter(str(lang_dir), adapter_name="lang")
    model.base_model.set_adapter(["task", "lang"])
    assert model.active_adapters == ["task", "lang"]
    with torch.no_grad():
        return model(input_ids=x).logits


@pytest.mark.parametrize("kind", EXACT)
def test_exact_types_give_one_peft_adapter_equal_to_both_active(kind: str, tmp_path: Path) -> None:
    from peft import PeftModel

    task, lang = make_state(kind, seed=1, rank=4), make_state(kind, seed=3, rank=2, language="fr")
    assert STRATEGIES.get("madx_stack").output_for(kind) == "merge"
    result = merge("madx_stack", {"task": task, "ref_target": lang})
    assert not isinstance(result.output, Composition)
    save_merge_output(result, tmp_path / "out")
    assert not (tmp_path / "out" / "composition.json").exists()
    x = torch.randint(0, 61, (3, 9))
    expected = two_active_in_peft(save_adapter(task, tmp_path / "t"), save_adapter(lang, tmp_path / "l"), x)
    with torch.no_grad():
        single = PeftModel.from_pretrained(base_model().double(), str(tmp_path / "out"))(input_ids=x).logits
    # LoRA's concatenated factors are the sum bit for bit; the others are rounded once to float32 (l₁⊙l₂, ΔW)
    tol = 1e-10 if kind == "lora" else 1e-6
    assert (single - expected).abs().max() <= tol
    assert (expected - attach(base_model().double(), task)(input_ids=x).logits).abs().max() > 1e-3  # lang counts
    record = load_merge_output(tmp_path / "out").metadata["merge"]
    assert record["strategy"] == "madx_stack" and record["form"] == "single_adapter"
    if kind == "lora":  # the concatenated sum: rank r_task + r_lang
        assert {g["lora_A"].shape[0] for g in result.output.params.values()} == {6}


def test_task_heads_are_kept_and_language_heads_dropped(tmp_path: Path) -> None:
    task = make_state("lora", seed=1, head=True)
    lang = make_state("lora", seed=3, head=True, language="fr")
    out = merge("madx_stack", {"task": task, "ref_target": lang})
    for key, tensor in task.saved_modules.items():
        assert torch.equal(out.output.saved_modules[key], tensor)
    assert out.output.metadata["merge"]["dropped_saved_modules"] == sorted(lang.saved_modules)
    x = torch.randint(0, 61, (2, 5))
    comp = STRATEGIES.get("madx_stack")({"task": task, "ref_target": lang}, {"form": "composition"})
    with torch.no_grad():  # the composition (heads from the task) and the single adapter agree
        a = attach(base_model(), comp)(input_ids=x).logits
        b = attach(base_model(), out.output)(input_ids=x).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_dora_is_composed_and_its_peft_forward_is_not_one_merge(tmp_path: Path) -> None:
    """PEFT's second DoRA rescales the running output: W' = diag(r₂)·(diag(r₁)·(W + ΔV₁) + ΔV₂), rₐ = mₐ ⊘ ‖W + ΔVₐ‖,
    which needs the base weight W; the type's merge (1, 1) is another adapter."""
    task, lang = make_state("dora", seed=1), make_state("dora", seed=3, language="fr")
    assert STRATEGIES.get("madx_stack").output_for("dora") == "stack"
    result = merge("madx_stack", {"task": task, "ref_target": lang})
    comp = result.output
    assert isinstance(comp, Composition) and list(comp.adapters) == ["ref_target", "task"]
    assert "dora" in comp.reason
    save_merge_output(result, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "composition.json").read_text())["reason"] == comp.reason
    assert load_merge_output(tmp_path / "out").reason == comp.reason

    dora = ADAPTERS.get("dora")
    weights = {}
    for module in task.params:
        w = base_weight(module)
        first, second = comp.adapters["ref_target"], comp.adapters["task"]  # PEFT applies them in this order
        r = [s.params[module]["magnitude"].double() / torch.linalg.vector_norm(w + dora.delta(s, module), dim=1)
             for s in (first, second)]
        weights[module] = r[1][:, None] * (r[0][:, None] * (w + dora.delta(first, module)) + dora.delta(second, module))
    x = torch.randint(0, 61, (2, 7))
    with torch.no_grad():
        stacked = attach(base_model().double(), comp)(input_ids=x).logits
        naive = attach(base_model().double(), dora.merge([(task, 1.0), (lang, 1.0)]))(input_ids=x).logits
    assert (stacked - reference_logits(weights, {}, x)).abs().max() < 1e-6
    assert (stacked - naive).abs().max() > 1e-3


def test_form_composition_and_rank(tmp_path: Path) -> None:
    task, lang = make_state("lora", seed=1, rank=4), make_state("lora", seed=3, rank=4, language="fr")
    comp = merge("madx_stack", {"task": task, "ref_target": lang}, {"form": "composition"}).output
    assert isinstance(comp, Composition) and comp.reason == "form='composition' was asked for"
    # the single LoRA is compressible like any merge; a composition is not
    small = merge("madx_stack", {"task": task, "ref_target": lang}, rank=2).output
    assert {g["lora_A"].shape[0] for g in small.params.values()} == {2}
    with pytest.raises(ConfigError, match="rank applies to merged LoRA adapters; strategy 'madx_stack' returns a "
                                          "composition for lora"):
        merge("madx_stack", {"task": task, "ref_target": lang}, {"form": "composition"}, rank=2)
    with pytest.raises(ConfigError, match="form must be one of"):
        merge("madx_stack", {"task": task, "ref_target": lang}, {"form": "sum"})


def test_by_type_output_needs_its_resolver() -> None:
    from adamergex.strategy import StrategyConfig, register_strategy

    with pytest.raises(ConfigError, match="output='by_type' needs output_for"):
        register_strategy("by_type_without_resolver", config=StrategyConfig, roles=("task",), output="by_type")
    with pytest.raises(ConfigError, match="output must be 'merge', 'stack' or 'by_type'"):
        register_strategy("bad_output", config=StrategyConfig, roles=("task",), output="both")  # type: ignore[arg-type]
