"""DARE (Yu et al. 2023, https://arxiv.org/abs/2311.03099) of the AdaMergeX task vectors, then their sum.

The two task vectors ``τ_task = w·task`` and ``τ_lang = t·(ref_target − ref_source)`` are taken in the adapter
type's merge space (LoRA: dense ``ΔW = s·B·A``, not the factors; (IA)³: ``log l``); each entry of each is dropped
with probability ``p = 1 − density`` and the survivors rescaled by ``1/(1 − p)``:

    target = from_space(λ · (dare_p(τ_task) + dare_p(τ_lang)))

The drop masks are drawn from ``seed`` per (term, module, component), so a run repeats exactly and is recorded in
the merge provenance. ``τ_lang`` is dropped as one vector, not each reference adapter separately. At
``density = 1`` (the default) it is AdaMergeX in exact ΔW (LoRA) or log (IA)³ form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.strategy import param, register_strategy

from ._ops import SparseMergeConfig, sparse_merge

__all__ = ["DareConfig", "dare"]


@dataclass(frozen=True)
class DareConfig(SparseMergeConfig):
    """Hyperparameters of :func:`dare` (``t``, ``task_weight``, ``density``, ``lambda_`` in the base)."""

    seed: int = param(0, low=0, tune=False, help="seed of the drop masks (recorded in the merge provenance)")


@register_strategy(
    "dare",
    config=DareConfig,
    roles=("task", "ref_source", "ref_target"),
    paper="https://arxiv.org/abs/2311.03099",
    identity={"t": 0.0, "density": 1.0, "lambda_": 1.0},
)
def dare(adapters: Mapping[str, AdapterState], cfg: DareConfig) -> AdapterState:
    """DARE drop-and-rescale of τ_task and t·(ref_target − ref_source), then their sum, in the type's merge space."""
    return sparse_merge(adapters, cfg, prune="random", sign=None, seed=cfg.seed)
