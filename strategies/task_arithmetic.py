"""Arithmetic merging (AriMerging; Zhang et al. 2023, https://arxiv.org/abs/2306.14870).

"Composing Parameter-Efficient Modules with Arithmetic Operations": adapters are combined on their raw
parameters whatever their structure, with weights ``(task, ref_target, ref_source) = (w, t, −t)``:

    LoRA:   A = Σ |wᵢ|·Aᵢ,  B = Σ wᵢ·Bᵢ          (factors merged separately; negation flips B only)
    (IA)³:  l = 1 + Σ wᵢ·(lᵢ − 1)               (vectors added around the identity)

With ``normalize`` the weights are divided by ``Σ |wᵢ|`` so that their magnitudes sum to 1, the paper's convex
``λ·θ₁ + (1 − λ)·θ₂`` option. This is the baseline AdaMergeX compares against; it is not ΔW arithmetic for LoRA.
Identical inputs are collected first (``x·w₁ + x·w₂ = x·(w₁ + w₂)``). ``t`` may differ per layer group
(``--param t@0-7=0.4``; :mod:`adamergex.groups`), normalisation then being per group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.groups import merge_by_group
from adamergex.registry import ADAPTERS
from adamergex.strategy import StrategyConfig, param, register_strategy

__all__ = ["TaskArithmeticConfig", "task_arithmetic"]


@dataclass(frozen=True)
class TaskArithmeticConfig(StrategyConfig):
    """Hyperparameters of :func:`task_arithmetic`."""

    t: float = param(1.0, low=0.0, tune_high=2.0, groups=True,
                     help="weight t of ref_target (and −t of ref_source); per group with t@GROUP")
    task_weight: float = param(1.0, low=0.0, high=10.0, tune=False, help="weight of the task adapter")
    normalize: bool = param(False, tune=False, help="divide weights by Σ|wᵢ| (the paper's convex combination)")


@register_strategy(
    "task_arithmetic",
    config=TaskArithmeticConfig,
    roles=("task", "ref_source", "ref_target"),
    paper="https://arxiv.org/abs/2306.14870",
    identity={"t": 0.0},
)
def task_arithmetic(adapters: Mapping[str, AdapterState], cfg: TaskArithmeticConfig) -> AdapterState:
    """Raw-parameter arithmetic ``w·task + t·ref_target − t·ref_source`` (structure ignored)."""
    typ = ADAPTERS.get(adapters["task"].kind)
    typ.check_compatible(adapters)

    def run(a: Mapping[str, AdapterState], v: dict[str, float]) -> AdapterState:
        weights = [cfg.task_weight, v["t"], -v["t"]]
        if cfg.normalize:
            total = sum(abs(w) for w in weights)
            weights = [w / total for w in weights] if total > 0 else weights
        return typ.arithmetic_merge(list(zip((a["task"], a["ref_target"], a["ref_source"]), weights)))

    return merge_by_group(adapters, {"t": cfg.t}, run)
