"""LoKr (Edalati et al. 2022, https://arxiv.org/abs/2212.10650; PEFT ``LOKR``): additive, merged exactly.

A LoKr module adds a Kronecker product (PEFT ``tuners/lokr/layer.py``, ``make_kron``)

    ΔW = s·kron(W1, W2),   W1 (a, c), W2 (b, d),   out = a·b, in = c·d,   s = α/r,

where either factor is stored whole (``lokr_w1``, ``lokr_w2``) or as a low-rank product (``lokr_w1_a·lokr_w1_b``,
``lokr_w2_a·lokr_w2_b``). Writing each factor as a product ``W1 = P₁Q₁`` (the stored pair, or ``I·W1`` /
``W1·I`` for a whole one, whichever is smaller) and ``W2 = P₂Q₂``, the mixed-product rule gives an exact LoRA

    B = kron(P₁, P₂) (out, R),   A = kron(Q₁, Q₂) (R, in),   R = rank(P₁)·rank(P₂),   ΔW = s·B·A.

**Merged output: an exact LoRA** of rank ``Σᵢ Rᵢ`` (see :mod:`._lycoris`), compressible to rank ``k``; a merge
that is the task adapter alone returns that LoKr unchanged. Linear layers only: the CP/Tucker form
(``lokr_t2``, ``use_effective_conv2d`` on convolutions) and conv factors are refused.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import AdapterFormatError
from .base import register_adapter_type
from ._lycoris import LycorisAdapter

__all__ = ["LokrAdapter"]


def _pair(group: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, Q)`` in float64 with ``P·Q = W_i`` exactly and inner dimension ``min`` of the stored ranks."""
    whole = group.get(f"lokr_w{i}")
    if whole is None:
        return group[f"lokr_w{i}_a"].to(torch.float64), group[f"lokr_w{i}_b"].to(torch.float64)
    w = whole.to(torch.float64)
    if w.shape[0] <= w.shape[1]:
        return torch.eye(w.shape[0], dtype=torch.float64), w
    return w, torch.eye(w.shape[1], dtype=torch.float64)


@register_adapter_type
class LokrAdapter(LycorisAdapter):
    """The ``lokr`` adapter type (see module docstring)."""

    name = "lokr"
    peft_type = "LOKR"
    tensor_names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
    unsupported = {"lokr_t2": "the CP/Tucker LoKr form (lokr_t2: use_effective_conv2d on a convolution) is not "
                              "supported; use linear layers or use_effective_conv2d=false"}
    signed = ("lokr_w1", "lokr_w1_a")

    def peft_config(self, **options: Any) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(**options)

    def check_group(self, module: str, group: dict[str, torch.Tensor], source: str) -> None:
        for i in (1, 2):
            whole, pair = f"lokr_w{i}" in group, f"lokr_w{i}_a" in group and f"lokr_w{i}_b" in group
            loose = [n for n in (f"lokr_w{i}_a", f"lokr_w{i}_b") if n in group]
            if whole == pair or (whole and loose) or (not whole and len(loose) != 2):
                raise AdapterFormatError(
                    f"{source}: module {module} must have either lokr_w{i} or both lokr_w{i}_a and lokr_w{i}_b; "
                    f"got {sorted(n for n in group if n.startswith(f'lokr_w{i}'))}")
            if pair and group[f"lokr_w{i}_a"].shape[1] != group[f"lokr_w{i}_b"].shape[0]:
                raise AdapterFormatError(
                    f"{source}: module {module}: lokr_w{i}_a {tuple(group[f'lokr_w{i}_a'].shape)} and lokr_w{i}_b "
                    f"{tuple(group[f'lokr_w{i}_b'].shape)} must share their inner dimension")

    def shape(self, group: dict[str, torch.Tensor]) -> tuple[int, int]:
        (p1, q1), (p2, q2) = (self._dims(group, 1), self._dims(group, 2))
        return p1 * p2, q1 * q2

    @staticmethod
    def _dims(group: dict[str, torch.Tensor], i: int) -> tuple[int, int]:
        whole = group.get(f"lokr_w{i}")
        if whole is not None:
            return int(whole.shape[0]), int(whole.shape[1])
        return int(group[f"lokr_w{i}_a"].shape[0]), int(group[f"lokr_w{i}_b"].shape[1])

    def lora_factors(self, group: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``B = kron(P₁, P₂)``, ``A = kron(Q₁, Q₂)`` in float64."""
        (p1, q1), (p2, q2) = _pair(group, 1), _pair(group, 2)
        return torch.kron(p1, p2), torch.kron(q1, q2)

    def dense(self, group: dict[str, torch.Tensor]) -> torch.Tensor:
        (p1, q1), (p2, q2) = _pair(group, 1), _pair(group, 2)
        return torch.kron(p1 @ q1, p2 @ q2)

