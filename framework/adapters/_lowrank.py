"""Exact low-rank arithmetic on factored updates ``ΔW = B·A`` without forming ``ΔW``.

For ``B`` ``(out, R)`` and ``A`` ``(R, in)`` with thin QR factorisations ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A``,

    ΔW = Q_B · (R_B R_Aᵀ) · Q_Aᵀ,   R_B R_Aᵀ = U Σ Vᵀ   ⇒   ΔW = (Q_B U) Σ (Q_A V)ᵀ

is an exact SVD of ``ΔW`` at cost ``O((out + in)·R²)`` instead of ``O(out·in·min(out, in))``. Keeping the top
``k`` singular triplets gives the optimal rank-``k`` approximation (Eckart–Young) with Frobenius error
``sqrt(Σ_{i>k} σᵢ²)``. Matrices of one shape are processed as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LowRankSVD", "factored_svd", "truncate"]


@dataclass
class LowRankSVD:
    """A batch of thin SVDs ``ΔW = U diag(S) Vᵀ`` of factored updates."""

    U: torch.Tensor  # (n, out, R)
    S: torch.Tensor  # (n, R), descending
    V: torch.Tensor  # (n, in, R)


def factored_svd(B: torch.Tensor, A: torch.Tensor) -> LowRankSVD:
    """Exact thin SVD of ``B @ A`` for batched factors ``B`` ``(n, out, R)`` and ``A`` ``(n, R, in)``."""
    q_b, r_b = torch.linalg.qr(B)  # (n, out, R), (n, R, R)
    q_a, r_a = torch.linalg.qr(A.transpose(-1, -2))  # (n, in, R), (n, R, R)
    core = r_b @ r_a.transpose(-1, -2)  # (n, R, R)
    u, s, vh = torch.linalg.svd(core)
    return LowRankSVD(U=q_b @ u, S=s, V=q_a @ vh.transpose(-1, -2))


def truncate(svd: LowRankSVD, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` factors of a :class:`LowRankSVD` split symmetrically, and the truncation errors.

    Returns ``(B_k (n, out, k), A_k (n, k, in), error (n,), norm (n,))`` with ``B_k A_k`` the optimal rank-``k``
    approximation, ``error = ‖ΔW − B_k A_k‖_F`` and ``norm = ‖ΔW‖_F``.
    """
    k = min(k, svd.S.shape[-1])
    root = svd.S[..., :k].clamp_min(0).sqrt()  # (n, k)
    b_k = svd.U[..., :k] * root.unsqueeze(-2)
    a_k = (svd.V[..., :k] * root.unsqueeze(-2)).transpose(-1, -2)
    sq = svd.S.square()
    error = sq[..., k:].sum(-1).sqrt()
    norm = sq.sum(-1).sqrt()
    return b_k, a_k, error, norm
