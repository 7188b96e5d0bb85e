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
    extra PEFT config options (e.g. LoKr ``decompose_both``)."""
    from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, get_peft_model

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
        raise ValueError(kind)
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
    return state_from_peft_model(peft_model, metadata={"language": language, "task": task})
