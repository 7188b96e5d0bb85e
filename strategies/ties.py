"""TIES-merging (Yadav et al. 2023, https://arxiv.org/abs/2306.01708) of the AdaMergeX task vectors.

The two task vectors ``τ_task = w·task`` and ``τ_lang = t·(ref_target − ref_source)`` are taken in the adapter
type's merge space (LoRA: dense ``ΔW = s·B·A``, not the factors; (IA)³: ``log l``), then, per tensor:

    target = from_space(λ · disjoint_mean(trim_k(τ_task), trim_k(τ_lang); γ = sgn Σ trim_k(τᵢ)))

``trim_k`` keeps the top ``⌊density·n⌋`` magnitudes of each tensor (per module, as PEFT and mergekit do);
``γ`` is the elected sign, by total (the paper) or by count (``majority_sign="frequency"``); the disjoint mean
averages, per entry, the trimmed values whose sign is ``γ``. A LoRA result is an exact dense-rank LoRA
(``min(out, in)``), which ``--rank k`` compresses optimally. The defaults (``density = 1``) only elect signs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.strategy import param, register_strategy

from ._ops import SparseMergeConfig, sparse_merge

__all__ = ["TiesConfig", "ties"]


@dataclass(frozen=True)
class TiesConfig(SparseMergeConfig):
    """Hyperparameters of :func:`ties` (``t``, ``task_weight``, ``density``, ``lambda_`` in the base)."""

    majority_sign: str = param("total", choices=("total", "frequency"), tune=False,
                               help="sign election: 'total' sgn(Σ τᵢ) (paper) or 'frequency' sgn(Σ sgn τᵢ)")


@register_strategy(
    "ties",
    config=TiesConfig,
    roles=("task", "ref_source", "ref_target"),
    paper="https://arxiv.org/abs/2306.01708",
    identity={"t": 0.0, "density": 1.0, "lambda_": 1.0},
)
def ties(adapters: Mapping[str, AdapterState], cfg: TiesConfig) -> AdapterState:
    """TIES (trim, elect sign, disjoint mean) of τ_task and t·(ref_target − ref_source) in the type's merge space."""
    return sparse_merge(adapters, cfg, prune="magnitude", sign=cfg.majority_sign)  # type: ignore[arg-type]
