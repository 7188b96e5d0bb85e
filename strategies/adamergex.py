"""AdaMergeX (Zhao et al. 2024, https://arxiv.org/abs/2402.18913): adaptive adapter merging across languages.

The gap between two languages is read off reference-task adapters (causal LM on Wikipedia text) trained in the
source and the target language, assumed equal for every task, and carried onto the source-language task adapter
with the operations of the adapter's own structure:

    target = task ⊕ t·(ref_target ⊖ ref_source)

LoRA (additive): ``ΔW = ΔW_task + t·(ΔW_ref_target − ΔW_ref_source)``, merged exactly as dense updates ``B·A``
(stored as a concatenated LoRA of rank ``r_task + r_target + r_source``), or, with ``lora_space="factors"``, on
``A`` and ``B`` separately as the published code does. (IA)³ (multiplicative): ``l_task ⊙ (t·(ρ − 1) + 1)`` with
``ρ = l_ref_target ⊘ l_ref_source`` (``ia3_form="published"``), or ``l_task ⊙ ρ^t`` (``ia3_form="log"``).
``t`` may differ per layer group (``--param t@0-7=0.4``; :mod:`adamergex.groups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adamergex.adapter_state import AdapterState
from adamergex.groups import merge_by_group
from adamergex.registry import ADAPTERS
from adamergex.strategy import StrategyConfig, param, register_strategy

__all__ = ["AdaMergeXConfig", "adamergex"]


@dataclass(frozen=True)
class AdaMergeXConfig(StrategyConfig):
    """Hyperparameters of :func:`adamergex`."""

    t: float = param(1.0, low=0.0, tune_high=2.0, groups=True,
                     help="scale t of the language divergence (t=0: task adapter alone); per group with t@GROUP")
    ia3_form: str = param(
        "published", choices=("published", "log"),
        help="(IA)³ scaling: 'published' l_task⊙(t(ρ−1)+1) or 'log' l_task⊙ρ^t", tune=False,
    )
    lora_space: str = param(
        "delta", choices=("delta", "factors"),
        help="LoRA merge space: exact 'delta' (B·A) or the published code's 'factors' (A, B separately)", tune=False,
    )
    epsilon: float = param(
        0.0, low=0.0, tune=False,
        help="(IA)³ divisor floor; 0 raises on a (near-)zero divisor instead of clamping",
    )


@register_strategy(
    "adamergex",
    config=AdaMergeXConfig,
    roles=("task", "ref_source", "ref_target"),
    paper="https://arxiv.org/abs/2402.18913",
    identity={"t": 0.0},
)
def adamergex(adapters: Mapping[str, AdapterState], cfg: AdaMergeXConfig) -> AdapterState:
    """``task ⊕ t·(ref_target ⊖ ref_source)`` with the adapter type's own ⊕, ⊖ and scaling."""
    typ = ADAPTERS.get(adapters["task"].kind)
    typ.check_compatible(adapters)
    options: dict[str, Any] = {"epsilon": cfg.epsilon or None}
    if typ.structure == "additive":
        options["space"] = cfg.lora_space
    elif typ.structure == "multiplicative":
        options["form"] = cfg.ia3_form
    return merge_by_group(adapters, {"t": cfg.t}, lambda a, v: typ.transfer(
        a["task"], a["ref_source"], a["ref_target"], v["t"], **options))
