"""(IA)³ (Liu et al. 2022, https://arxiv.org/abs/2205.05638): multiplicative, merged in log space.

An (IA)³ module rescales activations element-wise by a learned vector ``l`` (identity at ``l = 1``). Its algebra
is the multiplicative group: ``a ⊕ b = l_a ⊙ l_b``, ``⊖a = 1 ⊘ l_a``, and the weighted merge is the weighted
geometric combination

    l = Π lᵢ^wᵢ.

For AdaMergeX (:meth:`IA3Adapter.transfer`) the language divergence is the ratio ``ρ = l_ref_target ⊘ l_ref_source``
and two scalings are offered, selected by ``form``:

* ``"published"``: ``l_task ⊙ (t·(ρ − 1) + 1)``, the scaling of the published AdaMergeX code (linear around the
  identity; the default of the ``adamergex`` strategy);
* ``"log"``: ``l_task ⊙ ρ^t``, the log-space form, equal to :meth:`merge` with weights ``(1, t, −t)``.

A divisor that is zero or within ``ZERO_TOLERANCE`` of zero raises :class:`NumericalError` naming the module,
unless an explicit ``epsilon`` is passed, in which case divisors are pushed away from zero to ``±epsilon``.
Non-integer powers of negative entries are undefined and raise as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..adapter_state import AdapterState
from ..errors import AdapterFormatError, ConfigError, IncompatibleAdaptersError, NumericalError
from ._common import collect_terms, with_task_parts
from .base import AdapterType, Term, register_adapter_type

__all__ = ["ZERO_TOLERANCE", "IA3Adapter"]

ZERO_TOLERANCE = 1e-6
"""|l| below this counts as a zero divisor (an (IA)³ vector starts at 1; this is far outside training range)."""
_SUFFIX = ".ia3_l"
Form = Literal["published", "log"]


def _safe_divisor(x: torch.Tensor, module: str, what: str, epsilon: float | None) -> torch.Tensor:
    small = x.abs() < (ZERO_TOLERANCE if epsilon is None else epsilon)
    if bool(small.any()):
        if epsilon is None:
            raise NumericalError(
                f"module {module}: {what} must be away from zero to divide by it (|l| >= {ZERO_TOLERANCE}), got "
                f"{int(small.sum())} entr(y/ies) with |l| < {ZERO_TOLERANCE} (min |l| = {float(x.abs().min()):.3g}); "
                "pass an explicit epsilon (--param epsilon=...) to clamp divisors"
            )
        x = torch.where(small, torch.where(x < 0, -epsilon, epsilon).to(x.dtype), x)
    return x


@register_adapter_type
class IA3Adapter(AdapterType):
    """The ``ia3`` adapter type (see module docstring)."""

    name = "ia3"
    peft_type = "IA3"
    structure = "multiplicative"
    parallel_merge = True  # PEFT: ia3_scaling = Πₐ lₐ over active adapters = one (IA)³ of l₁ ⊙ l₂

    # -- PEFT format -----------------------------------------------------------------------------------------
    def from_peft(self, config: dict[str, Any], weights: Any, *, source: str) -> AdapterState:
        params: dict[str, dict[str, torch.Tensor]] = {}
        saved: dict[str, torch.Tensor] = {}
        for key, tensor in weights.items():
            if key.endswith(_SUFFIX):
                params[key[: -len(_SUFFIX)]] = {"l": tensor}
            else:
                saved[key] = tensor
        if not params:
            raise AdapterFormatError(f"{source}: no (IA)³ vectors (keys ending in {_SUFFIX}) found")
        return AdapterState(
            kind=self.name,
            base_model=str(config.get("base_model_name_or_path") or ""),
            params=params,
            config=dict(config),
            saved_modules=saved,
        )

    def to_peft(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        weights = {m + _SUFFIX: g["l"] for m, g in state.params.items()}
        weights.update(state.saved_modules)
        return dict(state.config), weights

    def peft_config(self, **options: Any) -> Any:
        from peft import IA3Config

        return IA3Config(**options)

    def check_compatible(self, states: Any) -> None:
        super().check_compatible(states)
        items = list(states.items())
        ff0 = sorted(items[0][1].config.get("feedforward_modules") or [])
        for name, s in items[1:]:
            if sorted(s.config.get("feedforward_modules") or []) != ff0:
                raise IncompatibleAdaptersError(
                    f"(IA)³ adapters must share feedforward_modules; {items[0][0]} has {ff0}, {name} has "
                    f"{sorted(s.config.get('feedforward_modules') or [])}"
                )
            for module, g in s.params.items():
                if g["l"].shape != items[0][1].params[module]["l"].shape:
                    raise IncompatibleAdaptersError(
                        f"module {module}: (IA)³ vector shape {tuple(g['l'].shape)} in {name} differs from "
                        f"{tuple(items[0][1].params[module]['l'].shape)} in {items[0][0]}"
                    )

    # -- merge space ------------------------------------------------------------------------------------------
    def to_space(self, state: AdapterState) -> dict[str, dict[str, torch.Tensor]]:
        """``{"log": log l}`` per module, float64 (the multiplicative group made additive).

        Raises:
            NumericalError: an entry ``l ≤ ZERO_TOLERANCE`` (its logarithm is undefined or unbounded).
        """
        out = {}
        for module, g in state.params.items():
            x = g["l"].to(torch.float64)
            bad = x < ZERO_TOLERANCE
            if bool(bad.any()):
                raise NumericalError(
                    f"module {module}: (IA)³ log space needs entries l >= {ZERO_TOLERANCE}, got {int(bad.sum())} "
                    f"entr(y/ies) below (min l = {float(x.min()):.3g}); use a strategy on raw vectors instead"
                )
            out[module] = {"log": x.log()}
        return out

    def from_space(self, space: Any, like: AdapterState) -> AdapterState:
        """``l = exp(log l)`` per module, in ``like``'s dtype."""
        self.check_space(space, like, ("log",))
        params = {}
        for module, g in like.params.items():
            log = space[module]["log"]
            if log.shape != g["l"].shape:
                raise ConfigError(f"module {module}: log l must have shape {tuple(g['l'].shape)}, "
                                  f"got {tuple(log.shape)}")
            params[module] = {"l": log.to(torch.float64).exp().to(g["l"].dtype)}
        return like.replace(params=params)

    # -- algebra ------------------------------------------------------------------------------------------------
    def merge(self, terms: Sequence[Term], *, epsilon: float | None = None, **options: Any) -> AdapterState:
        """``l = Π lᵢ^wᵢ`` element-wise (computed in float64; like terms collected first)."""
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        kept = collect_terms(terms)
        provenance = {"space": "log", "weights": [w for _, w in terms], "effective_terms": len(kept)}
        if len(kept) == 1 and kept[0][1] == 1.0:
            return with_task_parts(kept[0][0].replace(), task, provenance)
        params = {}
        for module, g0 in task.params.items():
            out = torch.ones_like(g0["l"], dtype=torch.float64)
            for state, w in kept:
                x = state.params[module]["l"].to(torch.float64)
                if w < 0:
                    x = _safe_divisor(x, module, f"vector of input with weight {w}", epsilon)
                if w != int(w) and bool((x < 0).any()):
                    raise NumericalError(
                        f"module {module}: a non-integer power (weight {w}) needs positive (IA)³ entries, got "
                        f"{int((x < 0).sum())} negative; use form='published' or integer weights"
                    )
                out = out * x.pow(w)
            params[module] = {"l": out.to(g0["l"].dtype)}
        return with_task_parts(task.replace(params=params), task, provenance)

    def transfer(
        self,
        task: AdapterState,
        ref_source: AdapterState,
        ref_target: AdapterState,
        t: float,
        *,
        form: Form = "published",
        epsilon: float | None = None,
        **options: Any,
    ) -> AdapterState:
        """``l_task ⊙ (t·(ρ−1)+1)`` (``form="published"``) or ``l_task ⊙ ρ^t`` (``form="log"``), with
        ``ρ = l_ref_target ⊘ l_ref_source``."""
        if form == "log":
            return self.merge([(task, 1.0), (ref_target, t), (ref_source, -t)], epsilon=epsilon)
        if form != "published":
            raise ConfigError(f"(IA)³ transfer form must be 'published' or 'log', got {form!r}")
        self.check_compatible({"task": task, "ref_source": ref_source, "ref_target": ref_target})
        provenance = {"space": "published", "t": t}
        if t == 0 or collect_terms([(ref_target, 1.0), (ref_source, -1.0)]) == []:
            return with_task_parts(task.replace(), task, provenance)
        params = {}
        for module, g in task.params.items():
            src = _safe_divisor(ref_source.params[module]["l"].to(torch.float64), module, "l_ref_source", epsilon)
            rho = ref_target.params[module]["l"].to(torch.float64) / src
            out = g["l"].to(torch.float64) * (t * (rho - 1.0) + 1.0)
            params[module] = {"l": out.to(g["l"].dtype)}
        return with_task_parts(task.replace(params=params), task, provenance)

    def scale(self, a: AdapterState, t: float, *, form: Form = "log", **options: Any) -> AdapterState:
        """``l^t`` (``form="log"``) or ``t·(l − 1) + 1`` (``form="published"``)."""
        if form == "log":
            return self.merge([(a, t)], **options)
        if form != "published":
            raise ConfigError(f"(IA)³ scale form must be 'published' or 'log', got {form!r}")
        params = {m: {"l": (t * (g["l"].double() - 1.0) + 1.0).to(g["l"].dtype)} for m, g in a.params.items()}
        return a.replace(params=params)

    def arithmetic_merge(self, terms: Sequence[Term], **options: Any) -> AdapterState:
        """Zhang et al. 2023 on raw vectors around the identity: ``l = 1 + Σ wᵢ·(lᵢ − 1)``."""
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        kept = collect_terms(terms)
        params = {}
        for module, g0 in task.params.items():
            out = torch.ones_like(g0["l"], dtype=torch.float64)
            for state, w in kept:
                out = out + w * (state.params[module]["l"].to(torch.float64) - 1.0)
            params[module] = {"l": out.to(g0["l"].dtype)}
        provenance = {"space": "arithmetic", "weights": [w for _, w in terms], "effective_terms": len(kept)}
        return with_task_parts(task.replace(params=params), task, provenance)

