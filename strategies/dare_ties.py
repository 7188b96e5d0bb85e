"""DARE-TIES (mergekit's ``dare_ties``; https://arxiv.org/abs/2311.03099 with https://arxiv.org/abs/2306.01708).

TIES with DARE's drop-and-rescale as its trimming step, on the AdaMergeX task vectors ``τ_task = w·task`` and
``τ_lang = t·(ref_target − ref_source)`` in the adapter type's merge space (LoRA ``ΔW``; (IA)³ ``log l``):

    target = from_space(λ · disjoint_mean(dare_p(τ_task), dare_p(τ_lang); γ = sgn Σ dare_p(τᵢ)))

with ``p = 1 − density``, masks seeded per (term, module, component) from ``seed``. Same steps as ``ties`` and
``dare`` (``strategies/_ops.py``); only the pruning differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.strategy import param, register_strategy

from ._ops import SparseMergeConfig, sparse_merge

__all__ = ["DareTiesConfig", "dare_ties"]


@dataclass(frozen=True)
class DareTiesConfig(SparseMergeConfig):
    """Hyperparameters of :func:`dare_ties` (``t``, ``task_weight``, ``density``, ``lambda_`` in the base)."""

    majority_sign: str = param("total", choices=("total", "frequency"), tune=False,
                               help="sign election: 'total' sgn(Σ τᵢ) (paper) or 'frequency' sgn(Σ sgn τᵢ)")
    seed: int = param(0, low=0, tune=False, help="seed of the drop masks (recorded in the merge provenance)")


@register_strategy(
    "dare_ties",
    config=DareTiesConfig,
    roles=("task", "ref_source", "ref_target"),
    paper="https://arxiv.org/abs/2311.03099",
    identity={"t": 0.0, "density": 1.0, "lambda_": 1.0},
)
def dare_ties(adapters: Mapping[str, AdapterState], cfg: DareTiesConfig) -> AdapterState:
    """TIES with DARE's seeded drop-and-rescale as the trim, on τ_task and t·(ref_target − ref_source)."""
    return sparse_merge(adapters, cfg, prune="random", sign=cfg.majority_sign, seed=cfg.seed)  # type: ignore[arg-type]
