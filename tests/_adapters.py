"""Adapters with random, non-trivial weights on a tiny Llama built in code (no downloads)."""

from __future__ import annotations

from typing import Any

import torch

from adamergex.adapter_state import AdapterState
from adamergex.io import state_from_peft_model
from adamergex.tiny import tiny_llama

BASE = "tiny-llama"
VOCAB = 61
TARGETS = ["q_proj", "v_proj", "down_proj"]


def base_model(name: str = BASE, seed: int = 0) -> Any:
    return tiny_llama(VOCAB, hidden_size=16, layers=2, heads=2, intermediate_size=24, seed=seed, name_or_path=name)


def make_state(
    kind: str,
    *,
    seed: int,
    rank: int = 4,
    language: str = "en",
    task: str = "toy",
    head: bool = False,
    base: str = BASE,
    rslora: bool = False,
    targets: list[str] | None = None,
    **options: Any,
) -> AdapterState:
    """A trained-looking adapter: LoRA/DoRA/LoHa/LoKr with random factors, DoRA magnitudes positive (their
    initial row norms times a factor in [0.7, 1.3]), or (IA)³ vectors around 1 (all positive). ``options`` are
    extra PEFT config options (e.g. LoKr ``decompose_both``).

    Any other registered type (a plug-in) is built from its own ``peft_config`` with PEFT's defaults and every
    adapter tensor perturbed: a positive tensor (a scaling or magnitude) by a factor in [0.85, 1.15], any other
    replaced by N(0, 0.3²) values, so that the contract suites run on it without a line here."""
    from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, get_peft_model

    from adamergex.registry import ADAPTERS

    model = base_model(base)
    targets = targets or TARGETS
    save = ["lm_head"] if head else None
    if kind in ("lora", "dora"):
        cfg: Any = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, modules_to_save=save,
                              use_rslora=rslora, init_lora_weights=False, use_dora=kind == "dora", **options)
    elif kind == "ia3":
        cfg = IA3Config(target_modules=targets, feedforward_modules=["down_proj"], modules_to_save=save, **options)
    elif kind in ("loha", "lokr"):
        config_class = LoHaConfig if kind == "loha" else LoKrConfig
        cfg = config_class(r=rank, alpha=2 * rank, target_modules=targets, modules_to_save=save, init_weights=False,
                           **options)
    else:
        cfg = ADAPTERS.get(kind).peft_config(target_modules=targets, modules_to_save=save, **options)
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(0.7 + 0.6 * torch.rand(p.shape, generator=g))
            elif "lora_" in name or "hada_" in name or "lokr_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "ia3_l" in name:
                p.copy_(1.0 + 0.3 * torch.rand(p.shape, generator=g) - 0.15)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.requires_grad and kind not in KNOWN:  # a plug-in's adapter tensors
                if bool((p > 0).all()):
                    p.mul_(0.85 + 0.3 * torch.rand(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    state = state_from_peft_model(peft_model, metadata={"language": language, "task": task})
    # A plug-in may read another type's PEFT format (a LoRA variant): the state is of the kind asked for.
    return state if state.kind == kind else state.replace(kind=kind)


KNOWN = ("lora", "dora", "ia3", "loha", "lokr")
"""Types with hand-picked options above; the others take PEFT's defaults."""


def random_lora(model: Any, seed: int, *, r: int = 2, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> AdapterState:
    """A LoRA adapter on ``model`` (a tiny Llama) with every factor drawn from N(0, 1) by ``seed``."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=list(targets), init_lora_weights=False))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return state_from_peft_model(peft_model)


PREFIX = "base_model.model."


def reference_logits(weights: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Float64 logits of the base model with the given full weights ``W'`` (PEFT module path → ``(out, in)``) and
    saved-module tensors (PEFT key → tensor) put in place: the dense reference of a merge formula."""
    model = base_model().double()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for module, w in weights.items():
            params[module.removeprefix(PREFIX) + ".weight"].copy_(w)
        for key, t in saved.items():
            params[key.removeprefix(PREFIX)].copy_(t.double())
        return model(input_ids=x).logits


def base_weight(module: str) -> torch.Tensor:
    """The float64 base weight ``W`` of a PEFT module path."""
    return dict(base_model().named_parameters())[module.removeprefix(PREFIX) + ".weight"].detach().double()


def peft_logits(state: AdapterState, directory: Any, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``state`` saved with ``save_adapter`` and loaded by plain ``PeftModel.from_pretrained``."""
    from peft import PeftModel

    from adamergex.io import save_adapter

    save_adapter(state, directory, overwrite=True)
    with torch.no_grad():
        return PeftModel.from_pretrained(base_model(), str(directory))(input_ids=x).logits.double()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(got - expected) / torch.linalg.vector_norm(expected))


def assert_same_files(a: Any, b: Any) -> None:
    """Two saved adapter directories hold bit-identical tensors and the same PEFT config."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    ta, tb = load_file(str(Path(a) / "adapter_model.safetensors")), load_file(str(Path(b) / "adapter_model.safetensors"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k
    ca, cb = (json.loads((Path(d) / "adapter_config.json").read_text()) for d in (a, b))
    assert ca == cb
