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
) -> AdapterState:
    """A trained-looking adapter: LoRA with random A and B, or (IA)³ vectors around 1 (all positive)."""
    from peft import IA3Config, LoraConfig, get_peft_model

    model = base_model(base)
    targets = targets or TARGETS
    save = ["lm_head"] if head else None
    if kind == "lora":
        cfg: Any = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, modules_to_save=save,
                              use_rslora=rslora, init_lora_weights=False)
    elif kind == "ia3":
        cfg = IA3Config(target_modules=targets, feedforward_modules=["down_proj"], modules_to_save=save)
    else:
        raise ValueError(kind)
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "ia3_l" in name:
                p.copy_(1.0 + 0.3 * torch.rand(p.shape, generator=g) - 0.15)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return state_from_peft_model(peft_model, metadata={"language": language, "task": task})
