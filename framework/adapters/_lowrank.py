"""Exact low-rank arithmetic on factored updates ``ΔW = B·A`` without forming ``ΔW``.

For ``B`` ``(out, R)`` and ``A`` ``(R, in)`` with thin QR factorisations ``B = Q_B R_B`` and ``Aᵀ = Q_A R_A``,

    ΔW = Q_B · (R_B R_Aᵀ) · Q_Aᵀ,   R_B R_Aᵀ = U Σ Vᵀ   ⇒   ΔW = (Q_B U) Σ (Q_A V)ᵀ

is an exact SVD of ``ΔW`` at cost ``O((out + in)·R²)`` instead of ``O(out·in·min(out, in))``. Keeping the top
``k`` singular triplets gives the optimal rank-``k`` approximation (Eckart–Young) with Frobenius error
``sqrt(Σ_{i>k} σᵢ²)``.

Two ways to get the QR factors are offered:

* ``"gram"`` (default): the R factors come from the ``R×R`` Gram matrices, ``BᵀB = R_BᵀR_B`` (as CholeskyQR
  does), through a symmetric eigendecomposition ``BᵀB = P Λ Pᵀ``, ``R_B = Λ^½ Pᵀ``, which also handles
  rank-deficient factors (eigenvalues below ``R·ε·λ_max`` are treated as zero). ``Q`` is never formed: the
  results are ``B_k = B·(P Λ^-½ U_k Σ_k^½)`` and ``A_k = (Σ_k^½ V_kᵀ Λ_A^-½ P_Aᵀ)·A``, two thin matrix products.
  Everything runs in float64, so singular values down to ``~1e-8·σ_max`` are resolved.
* ``"householder"``: ``torch.linalg.qr`` (Householder) on the factors. Slower on CPUs (LAPACK's batched QR of
  tall-skinny matrices threads poorly), kept as the reference.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["Method", "truncate_factored"]

Method = Literal["gram", "householder"]


def _gram_factor(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P, sqrt λ, 1/sqrt λ)`` of a PSD ``R×R`` Gram matrix, with null directions zeroed."""
    lam, p = torch.linalg.eigh(gram)
    cutoff = lam.amax(-1, keepdim=True).clamp_min(0) * gram.shape[-1] * torch.finfo(gram.dtype).eps
    keep = lam > cutoff
    root = torch.where(keep, lam.clamp_min(0).sqrt(), torch.zeros_like(lam))
    inv_root = torch.where(keep, 1.0 / root.where(keep, torch.ones_like(root)), torch.zeros_like(lam))
    return p, root, inv_root


def truncate_factored(
    B: torch.Tensor, A: torch.Tensor, k: int, *, method: Method = "gram"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimal rank-``k`` factors of ``B @ A`` and the truncation error, without forming the product.

    Args:
        B: ``(out, R)`` (or batched ``(n, out, R)``), A: ``(R, in)`` (or ``(n, R, in)``); any float dtype (work
            is done in float64).
        k: Target rank; ``k ≥ R`` keeps every component (error 0).

    Returns:
        ``(B_k (…, out, k'), A_k (…, k', in), error, norm)`` in float64 with ``k' = min(k, R)``,
        ``error = ‖BA − B_k A_k‖_F`` (the optimal one) and ``norm = ‖BA‖_F``.
    """
    B = B.to(torch.float64)
    A = A.to(torch.float64)
    k = min(k, B.shape[-1])
    if method == "householder":
        q_b, r_b = torch.linalg.qr(B)
        q_a, r_a = torch.linalg.qr(A.transpose(-1, -2))
        u, s, vh = torch.linalg.svd(r_b @ r_a.transpose(-1, -2))
        root = s[..., :k].sqrt()
        b_k = q_b @ (u[..., :, :k] * root.unsqueeze(-2))
        a_k = (root.unsqueeze(-1) * vh[..., :k, :]) @ q_a.transpose(-1, -2)
    elif method == "gram":
        p_b, s_b, inv_b = _gram_factor(B.transpose(-1, -2) @ B)  # BᵀB = P_B diag(s_b²) P_Bᵀ
        p_a, s_a, inv_a = _gram_factor(A @ A.transpose(-1, -2))  # AAᵀ = P_A diag(s_a²) P_Aᵀ
        core = (s_b.unsqueeze(-1) * p_b.transpose(-1, -2)) @ (p_a * s_a.unsqueeze(-2))  # R_B R_Aᵀ, (R, R)
        u, s, vh = torch.linalg.svd(core)
        root = s[..., :k].sqrt()
        m_b = (p_b * inv_b.unsqueeze(-2)) @ (u[..., :, :k] * root.unsqueeze(-2))  # (R, k)
        m_a = (root.unsqueeze(-1) * vh[..., :k, :]) @ (inv_a.unsqueeze(-1) * p_a.transpose(-1, -2))  # (k, R)
        b_k, a_k = B @ m_b, m_a @ A
    else:
        raise ValueError(f"method must be 'gram' or 'householder', got {method!r}")
    sq = s.square()
    return b_k, a_k, sq[..., k:].sum(-1).sqrt(), sq.sum(-1).sqrt()
