"""MAD-X-style stacking (Pfeiffer et al. 2020, https://arxiv.org/abs/2005.00052): task and language adapter together.

The task adapter is trained on top of the frozen source-language adapter; at inference the target-language
adapter takes that adapter's place and both are active together:

    y = f(x; W, adapter_ref_target ∘ adapter_task)

Where both adapters active at once are themselves one adapter of the type, that adapter is written, exactly
(``form="auto"``, the adapter type's ``parallel_merge``): LoRA, LoHa and LoKr ``ΔW = ΔW_task + ΔW_ref_target``
(the type's ``merge([(task, 1), (ref_target, 1)])``: LoRA's concatenated factors, rank r_task + r_ref_target;
LoHa/LoKr as an exact LoRA), (IA)³ ``l = l_task ⊙ l_ref_target``. The output is a plain PEFT adapter and
``metadata["merge"]["form"]`` is ``"single_adapter"``. Elsewhere, and with ``form="composition"``, the result is
a :class:`~adamergex.strategy.Composition` (``composition.json`` and one PEFT adapter per member) that
:func:`adamergex.loading.attach` activates together; its ``reason`` says why. DoRA is composed: PEFT's second
DoRA rescales the first's output, so the pair is one DoRA only with magnitudes computed from the base weight,
which adapter states do not carry (see ``adapters/dora.py``). Either way the task adapter's heads are used and the
language adapter's dropped. ``ref_source`` is accepted and ignored (it is what the target-language adapter
replaces).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from adamergex.adapter_state import AdapterState
from adamergex.errors import IncompatibleAdaptersError
from adamergex.registry import ADAPTERS
from adamergex.strategy import Composition, StrategyConfig, param, register_strategy

__all__ = ["MadxStackConfig", "madx_stack"]


@dataclass(frozen=True)
class MadxStackConfig(StrategyConfig):
    """How the pair is written (nothing is tuned)."""

    form: str = param(
        "auto", choices=("auto", "composition"), tune=False,
        help="auto: one exact PEFT adapter where the type has one (LoRA, LoHa, LoKr, (IA)³), else a composition; "
        "composition: always the two adapters side by side",
    )


def _output_for(kind: str, cfg: MadxStackConfig) -> Literal["merge", "stack"]:
    exact = cfg.form == "auto" and getattr(ADAPTERS.get(kind), "parallel_merge", False)
    return "merge" if exact else "stack"


@register_strategy(
    "madx_stack",
    config=MadxStackConfig,
    roles=("task", "ref_target"),
    optional_roles=("ref_source",),
    paper="https://arxiv.org/abs/2005.00052",
    output="by_type",
    output_for=_output_for,
)
def madx_stack(adapters: Mapping[str, AdapterState], cfg: MadxStackConfig) -> AdapterState | Composition:
    """Target-language and task adapter active together (MAD-X adapter swap): one exact adapter where the type
    has one (LoRA, LoHa, LoKr: ΔW_task + ΔW_lang; (IA)³: l_task ⊙ l_lang), else a composition (DoRA)."""
    task, lang = adapters["task"], adapters["ref_target"]
    if lang.kind != task.kind:
        raise IncompatibleAdaptersError(
            f"madx_stack needs one adapter type; task is {task.kind!r}, ref_target is {lang.kind!r}"
        )
    # The language adapter's own heads (e.g. an LM head) are dropped: the task adapter's heads are used.
    lang_only = lang.replace(saved_modules={}, config={**lang.config, "modules_to_save": None})
    if _output_for(task.kind, cfg) == "merge":
        typ = ADAPTERS.get(task.kind)
        out = typ.merge([(task, 1.0), (lang_only, 1.0)])
        out.metadata["merge"] = {
            **out.metadata.get("merge", {}), "form": "single_adapter",
            "exact": f"equals the {task.kind} adapters task and ref_target active together in PEFT",
        }
        return out
    reason = ("form='composition' was asked for" if cfg.form == "composition" else
              f"two {task.kind} adapters active together are no single {task.kind} adapter computable from the "
              "adapters alone")
    return Composition(strategy="madx_stack", adapters={"ref_target": lang_only, "task": task}, head_from="task",
                       params={"form": "composition"}, reason=reason)
