"""Structure-adaptive weighted merge (the second idea of AdaMergeX, https://arxiv.org/abs/2402.18913).

Any set of adapters of one type is combined in the space its structure calls for:

    LoRA (additive):          ΔW = Σᵢ wᵢ·ΔWᵢ        (exact, on dense updates B·A)
    (IA)³ (multiplicative):   l  = Π lᵢ^wᵢ          (log space)

AdaMergeX in its log-space form is the instance with weights ``(task, ref_target, ref_source) = (1, t, −t)``.
Given only the roles ``task`` and ``ref_target`` it is the "task + target-language adapter" ablation, without the
source-reference subtraction. The reference weights may differ per layer group
(``--param ref_target_weight@0-7=0.5``; :mod:`adamergex.groups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.groups import merge_by_group
from adamergex.registry import ADAPTERS
from adamergex.strategy import StrategyConfig, param, register_strategy

__all__ = ["StructureAdaptiveConfig", "structure_adaptive"]


@dataclass(frozen=True)
class StructureAdaptiveConfig(StrategyConfig):
    """Per-role weights of :func:`structure_adaptive` (weights of absent roles are ignored)."""

    task_weight: float = param(1.0, low=-10.0, high=10.0, tune=False, help="weight of the task adapter")
    ref_target_weight: float = param(
        1.0, low=-10.0, high=10.0, tune_low=0.0, tune_high=2.0, groups=True,
        help="weight of the target-language reference adapter; per group with ref_target_weight@GROUP",
    )
    ref_source_weight: float = param(
        -1.0, low=-10.0, high=10.0, tune_low=-2.0, tune_high=0.0, groups=True,
        help="weight of the source-language reference adapter; per group with ref_source_weight@GROUP",
    )
    epsilon: float = param(0.0, low=0.0, tune=False, help="(IA)³ divisor floor; 0 raises on (near-)zero divisors")


@register_strategy(
    "structure_adaptive",
    config=StructureAdaptiveConfig,
    roles=("task",),
    optional_roles=("ref_target", "ref_source"),
    paper="https://arxiv.org/abs/2402.18913",
    identity={"ref_target_weight": 0.0, "ref_source_weight": 0.0},
)
def structure_adaptive(adapters: Mapping[str, AdapterState], cfg: StructureAdaptiveConfig) -> AdapterState:
    """Type-aware weighted merge: Σ wᵢ·ΔWᵢ for additive types, Π lᵢ^wᵢ for multiplicative ones."""
    typ = ADAPTERS.get(adapters["task"].kind)
    typ.check_compatible(adapters)
    grouped = {"ref_target_weight": cfg.ref_target_weight, "ref_source_weight": cfg.ref_source_weight}

    def run(a: Mapping[str, AdapterState], v: dict[str, float]) -> AdapterState:
        weights = {"task": cfg.task_weight, "ref_target": v["ref_target_weight"], "ref_source": v["ref_source_weight"]}
        terms = [(a[role], weights[role]) for role in ("task", "ref_target", "ref_source") if role in a]
        return typ.merge(terms, epsilon=cfg.epsilon or None)

    return merge_by_group(adapters, grouped, run)
