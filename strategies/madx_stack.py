"""MAD-X-style stacking (Pfeiffer et al. 2020, https://arxiv.org/abs/2005.00052): no weight merge.

The task adapter is trained on top of the frozen source-language adapter; at inference the target-language
adapter takes that adapter's place and both are active together:

    y = f(x; W + ΔW_ref_target, adapter_task)

The result is a :class:`~adamergex.strategy.Composition` that :func:`adamergex.loading.attach` applies; the task
adapter's heads are used. For LoRA, parallel activation adds the two updates, so it equals
``structure_adaptive`` with weights (1, 1) on (task, ref_target); for (IA)³ the vectors multiply. ``ref_source`` is
accepted and ignored (it is what the target-language adapter replaces).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.errors import IncompatibleAdaptersError
from adamergex.strategy import Composition, StrategyConfig, register_strategy

__all__ = ["MadxStackConfig", "madx_stack"]


@dataclass(frozen=True)
class MadxStackConfig(StrategyConfig):
    """``madx_stack`` has no hyperparameters."""


@register_strategy(
    "madx_stack",
    config=MadxStackConfig,
    roles=("task", "ref_target"),
    optional_roles=("ref_source",),
    paper="https://arxiv.org/abs/2005.00052",
    output="stack",
)
def madx_stack(adapters: Mapping[str, AdapterState], cfg: MadxStackConfig) -> Composition:
    """Target-language adapter and task adapter active together at inference (MAD-X adapter swap)."""
    task, lang = adapters["task"], adapters["ref_target"]
    if lang.kind != task.kind:
        raise IncompatibleAdaptersError(
            f"madx_stack needs one adapter type; task is {task.kind!r}, ref_target is {lang.kind!r}"
        )
    # The language adapter's own heads (e.g. an LM head) are dropped: the task adapter's heads are used.
    lang_only = lang.replace(saved_modules={}, config={**lang.config, "modules_to_save": None})
    return Composition(strategy="madx_stack", adapters={"ref_target": lang_only, "task": task}, head_from="task")
