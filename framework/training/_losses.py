"""Language-model losses without full-vocabulary float32 logits.

Part of :mod:`adamergex.training`; import :func:`linear_cross_entropy` from there. The fused linear +
cross-entropy forms the gradients chunk by chunk in the forward pass, so logits exist in the compute dtype one chunk
at a time; :func:`_head_cross_entropy` does the same through any head module with activation checkpointing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._encoding import IGNORE_INDEX

__all__ = ["linear_cross_entropy"]


def _ce_chunk(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of one chunk ``(c, V)`` and its gradient w.r.t. the logits, in the logits' dtype."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    lse = torch.logsumexp(x, dim=-1)  # (c,)
    picked = x.gather(1, safe[:, None]).squeeze(1)
    loss = ((lse - picked) * valid).sum()
    grad = torch.exp(x - lse[:, None])
    grad = grad.scatter_add(1, safe[:, None], -torch.ones_like(grad[:, :1]))
    grad = grad * valid[:, None]
    return loss, grad.to(logits.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    """``Σ CE(hidden @ weightᵀ + bias, labels)`` computed chunk by chunk; gradients are formed in the forward
    pass (one logits matmul and one gradient matmul per chunk, nothing recomputed), so no ``(N, V)`` tensor
    ever exists."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                labels: torch.Tensor, chunk_size: int, chunk_fn: Callable[..., Any]) -> torch.Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        acc = torch.promote_types(weight.dtype, torch.float32)  # accumulate in at least float32
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]  # (c, H)
            logits = F.linear(h, weight, bias)  # (c, V), compute dtype (autocast applies)
            loss, g = chunk_fn(logits, labels[start : start + chunk_size])
            total += loss
            if grad_h is not None:
                grad_h[start : start + chunk_size] = g @ weight.to(g.dtype)
            if grad_w is not None:
                grad_w += (g.t() @ h.to(g.dtype)).to(acc)
            if grad_b is not None:
                grad_b += g.to(acc).sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        return (
            (grad_h * grad_out).to(dh) if grad_h is not None else None,
            (grad_w * grad_out).to(dw) if grad_w is not None else None,
            (grad_b * grad_out).to(db) if grad_b is not None else None,
            None, None, None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor, *,
    chunk_size: int = 2048, chunk_fn: Callable[..., Any] = _ce_chunk,
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden (N, H) @ weight (V, H)ᵀ`` against ``labels (N,)`` (``-100`` ignored),
    never materialising the ``(N, V)`` logits. ``chunk_fn`` may be a compiled :func:`_ce_chunk`."""
    return _LinearCrossEntropy.apply(  # type: ignore[no-untyped-call, no-any-return]
        hidden, weight, bias, labels, chunk_size, chunk_fn)


def _head_cross_entropy(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Summed cross-entropy through an arbitrary head module, chunked with activation checkpointing so only one
    chunk's logits are alive at a time."""
    from torch.utils.checkpoint import checkpoint

    def part(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, ignore_index=IGNORE_INDEX, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[s : s + chunk_size], labels[s : s + chunk_size]
        total = total + (checkpoint(part, h, y, use_reentrant=False) if torch.is_grad_enabled() else part(h, y))
    return total


def _shift_left(labels: torch.Tensor) -> torch.Tensor:
    """Labels for next-token prediction at each position: ``labels[:, t+1]``, ``-100`` at the end."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
