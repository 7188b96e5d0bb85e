"""LoHa (Hyeon-Woo et al. 2022, https://arxiv.org/abs/2108.06098; PEFT ``LOHA``): additive, merged exactly.

A LoHa module adds the Hadamard product of two low-rank products (PEFT ``tuners/loha/layer.py``, ``HadaWeight``)

    ΔW = s·(W1a·W1b) ⊙ (W2a·W2b),   W1a (out, r₁), W1b (r₁, in), W2a (out, r₂), W2b (r₂, in),   s = α/r.

Since ``(U₁V₁ᵀ) ⊙ (U₂V₂ᵀ) = (U₁ •ᵣ U₂)(V₁ •ᵣ V₂)ᵀ`` with the row-wise Khatri–Rao (face-splitting) product
``(U₁ •ᵣ U₂)[i, (p, q)] = U₁[i, p]·U₂[i, q]``, every LoHa is exactly a LoRA of rank ``r₁·r₂``:

    B = W1a •ᵣ W2a (out, r₁r₂),   A = (W1bᵀ •ᵣ W2bᵀ)ᵀ (r₁r₂, in),   ΔW = s·B·A.

**Merged output: an exact LoRA** of rank ``Σᵢ r₁ᵢ·r₂ᵢ`` (see :mod:`._lycoris`), compressible to rank ``k``;
a merge that is the task adapter alone returns that LoHa unchanged. Linear layers only: the CP/Tucker form
(``hada_t1``/``hada_t2``, ``use_effective_conv2d`` on convolutions) and 4-D conv factors are refused.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import AdapterFormatError
from .base import register_adapter_type
from ._lycoris import LycorisAdapter

__all__ = ["LohaAdapter"]

_NAMES = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


@register_adapter_type
class LohaAdapter(LycorisAdapter):
    """The ``loha`` adapter type (see module docstring)."""

    name = "loha"
    peft_type = "LOHA"
    tensor_names = _NAMES
    unsupported = {n: "the CP/Tucker LoHa form (hada_t1, hada_t2: use_effective_conv2d on a convolution) is not "
                      "supported; use linear layers or use_effective_conv2d=false" for n in ("hada_t1", "hada_t2")}
    signed = ("hada_w1_a",)

    def peft_config(self, **options: Any) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(**options)

    def check_group(self, module: str, group: dict[str, torch.Tensor], source: str) -> None:
        missing = [n for n in _NAMES if n not in group]
        if missing:
            raise AdapterFormatError(f"{source}: module {module} must have all of {', '.join(_NAMES)}; "
                                     f"missing {', '.join(missing)}")
        w1a, w1b, w2a, w2b = (group[n] for n in _NAMES)
        if w1a.shape[1] != w1b.shape[0] or w2a.shape[1] != w2b.shape[0] or w1a.shape[0] != w2a.shape[0] \
                or w1b.shape[1] != w2b.shape[1]:
            raise AdapterFormatError(
                f"{source}: module {module}: LoHa factors must be W1a (out, r1), W1b (r1, in), W2a (out, r2), "
                f"W2b (r2, in); got {tuple(w1a.shape)}, {tuple(w1b.shape)}, {tuple(w2a.shape)}, {tuple(w2b.shape)}")

    def shape(self, group: dict[str, torch.Tensor]) -> tuple[int, int]:
        return int(group["hada_w1_a"].shape[0]), int(group["hada_w1_b"].shape[1])

    def lora_factors(self, group: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``B = W1a •ᵣ W2a``, ``A = (W1bᵀ •ᵣ W2bᵀ)ᵀ`` in float64."""
        w1a, w1b, w2a, w2b = (group[n].to(torch.float64) for n in _NAMES)
        out, in_ = w1a.shape[0], w1b.shape[1]
        b = (w1a[:, :, None] * w2a[:, None, :]).reshape(out, -1)
        a = (w1b[:, None, :] * w2b[None, :, :]).reshape(-1, in_)
        return b, a

    def dense(self, group: dict[str, torch.Tensor]) -> torch.Tensor:
        w1a, w1b, w2a, w2b = (group[n].to(torch.float64) for n in _NAMES)
        return (w1a @ w1b) * (w2a @ w2b)

