"""DoRA (Liu et al. 2024, https://arxiv.org/abs/2402.09353): a LoRA direction and a learned magnitude.

PEFT stores DoRA as a LoRA (``peft_type: LORA``, ``use_dora: true``) plus one magnitude vector ``m`` ``(out,)`` per
module (key ``<module>.lora_magnitude_vector``). With ``ΔV = s·B·A`` its linear layer computes (PEFT
``tuners/lora/dora.py``)

    W' = diag(m ⊘ ‖W + ΔV‖_r) · (W + ΔV),

where ``‖·‖_r`` is the L2 norm of every output row (PEFT's "column" norm of ``Wᵀ``), computed from the base
weight ``W`` and treated as a constant in training. The algebra is a product of two groups:

* the direction update ``ΔV`` is additive and merged exactly as LoRA is (:class:`.lora.LoraAdapter`:
  concatenated factors of rank ``Σ rᵢ``, compressible to rank ``k``; ``space="factors"`` is LoRA's ablation);
* the magnitude is multiplicative, merged in log space: ``m = Π mᵢ^wᵢ`` (``log m = Σ wᵢ log mᵢ``).

AdaMergeX (:meth:`DoraAdapter.transfer`) is therefore

    ΔV = ΔV_task + t·(ΔV_tgt − ΔV_src),   m = m_task ⊙ (m_tgt ⊘ m_src)^t.

The norm in the forward pass is recomputed from ``W + ΔV`` of the merged adapter. A magnitude divisor (negative
weight) that is negative or below :data:`.ia3.ZERO_TOLERANCE` raises :class:`NumericalError` naming the module
unless ``epsilon`` is given (divisors are then raised to at least ``epsilon``); a non-integer power of a
non-positive magnitude raises as well. Linear modules only: DoRA on embeddings or convolutions is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ..adapter_state import AdapterState
from ..errors import AdapterFormatError, IncompatibleAdaptersError, NumericalError
from ._common import collect_terms, identity_factors, space_delta, with_task_parts
from ._lowrank import Method
from .base import AdapterType, Term, register_adapter_type
from .ia3 import ZERO_TOLERANCE
from .lora import LoraAdapter

__all__ = ["DoraAdapter"]

_MAGNITUDE = ".lora_magnitude_vector"
_LORA = LoraAdapter()  # the direction's algebra; a private instance, so the registry's 'lora' is not needed here


def _direction(state: AdapterState) -> AdapterState:
    """The LoRA part ``ΔV = s·B·A`` of a DoRA state, as a ``lora`` state sharing its tensors."""
    params = {m: {n: t for n, t in g.items() if n != "magnitude"} for m, g in state.params.items()}
    return state.replace(kind="lora", params=params, config={**state.config, "use_dora": False})


def _with_magnitudes(direction: AdapterState, magnitudes: dict[str, torch.Tensor], like: AdapterState) -> AdapterState:
    params = {m: {**g, "magnitude": magnitudes[m]} for m, g in direction.params.items()}
    return direction.replace(kind="dora", params=params, config={**like.config, "use_dora": True})


def _magnitude(x: torch.Tensor, module: str, weight: float, epsilon: float | None) -> torch.Tensor:
    """``x`` (float64) checked for ``x^weight``: a divisor must be ≥ the tolerance (or is raised to ``epsilon``)."""
    if weight < 0:
        small = x < (ZERO_TOLERANCE if epsilon is None else epsilon)
        if bool(small.any()):
            if epsilon is None:
                raise NumericalError(
                    f"module {module}: a DoRA magnitude divided by (weight {weight}) must be >= {ZERO_TOLERANCE}, got "
                    f"{int(small.sum())} entr(y/ies) below it (min m = {float(x.min()):.3g}); pass an explicit "
                    "epsilon (--param epsilon=...) to clamp divisors"
                )
            x = x.clamp_min(epsilon)
    elif weight != int(weight) and bool((x <= 0).any()):
        raise NumericalError(
            f"module {module}: a non-integer power (weight {weight}) needs positive DoRA magnitudes, got "
            f"{int((x <= 0).sum())} non-positive"
        )
    return x


@register_adapter_type
class DoraAdapter(AdapterType):
    """The ``dora`` adapter type (see module docstring)."""

    name = "dora"
    peft_type = "LORA"
    structure = "additive"  # the direction; the magnitude is merged in log space (module docstring)
    positive_options = ("r",)
    # Two DoRAs active at once in PEFT (eval) do not add: the second rescales the running output, so the weight is
    # diag(r₂)·(diag(r₁)·(W + ΔV₁) + ΔV₂) with rₐ = mₐ ⊘ ‖W + ΔVₐ‖_r (tests/strategies/test_madx_stack.py). That
    # is one DoRA only with ΔV = ΔV₁ + diag(1/r₁)·ΔV₂ and m computed from the base weight W, which adapter states
    # do not carry; merge([(a, 1), (b, 1)]) is another adapter. So madx_stack keeps the composition.
    parallel_merge = False

    # -- PEFT format -----------------------------------------------------------------------------------------
    def claims(self, config: Any) -> bool:
        """``LORA`` configs with ``use_dora: true``."""
        return super().claims(config) and bool(config.get("use_dora"))

    def from_peft(self, config: dict[str, Any], weights: Any, *, source: str) -> AdapterState:
        if not config.get("use_dora"):
            raise AdapterFormatError(f"{source}: the 'dora' adapter type needs use_dora=true, got "
                                     f"use_dora={config.get('use_dora')!r}; plain LoRA is the 'lora' type")
        magnitudes = {k[: -len(_MAGNITUDE)]: t for k, t in weights.items() if k.endswith(_MAGNITUDE)}
        rest = {k: t for k, t in weights.items() if not k.endswith(_MAGNITUDE)}
        direction = _LORA.from_peft({**config, "use_dora": False}, rest, source=source)
        for module, group in direction.params.items():
            if "lora_embedding_A" in group or group["lora_A"].ndim != 2:
                raise AdapterFormatError(f"{source}: module {module}: DoRA is supported on linear layers only; "
                                         "embedding and convolution DoRA are not")
            m = magnitudes.get(module)
            if m is None:
                raise AdapterFormatError(f"{source}: module {module} must have a DoRA magnitude ({module}{_MAGNITUDE})")
            if tuple(m.shape) != (group["lora_B"].shape[0],):
                raise AdapterFormatError(f"{source}: module {module}: the DoRA magnitude must have shape "
                                         f"({group['lora_B'].shape[0]},), got {tuple(m.shape)}")
        extra = sorted(set(magnitudes) - set(direction.params))
        if extra:
            raise AdapterFormatError(f"{source}: DoRA magnitudes without LoRA factors: {extra[:3]}")
        return _with_magnitudes(direction, magnitudes, direction.replace(config=dict(config)))

    def to_peft(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config, weights = _LORA.to_peft(_direction(state))
        weights.update({m + _MAGNITUDE: g["magnitude"] for m, g in state.params.items()})
        return {**config, "use_dora": True}, weights

    def peft_config(self, **options: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(**{**options, "use_dora": True})

    def check_compatible(self, states: Any) -> None:
        super().check_compatible(states)
        (first_name, first), *rest = states.items()
        for name, s in rest:
            for module, g in s.params.items():
                ref = first.params[module]
                if g["magnitude"].shape != ref["magnitude"].shape or g["lora_A"].shape[1:] != ref["lora_A"].shape[1:]:
                    raise IncompatibleAdaptersError(
                        f"module {module}: DoRA shapes must match; {name} has ΔV ({g['lora_B'].shape[0]}, "
                        f"{g['lora_A'].shape[1]}), {first_name} has ({ref['lora_B'].shape[0]}, {ref['lora_A'].shape[1]})"
                    )

    # -- algebra ------------------------------------------------------------------------------------------------
    def merge(
        self, terms: Sequence[Term], *, space: Literal["delta", "factors"] = "delta", epsilon: float | None = None,
        **options: Any,
    ) -> AdapterState:
        """``ΔV = Σ wᵢ·ΔVᵢ`` (LoRA's exact merge, or its ``space="factors"`` ablation) and ``m = Π mᵢ^wᵢ``."""
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        kept = collect_terms(terms)
        provenance = {"space": space, "magnitude_space": "log", "weights": [w for _, w in terms],
                      "effective_terms": len(kept)}
        if len(kept) == 1 and kept[0][1] == 1.0:
            return with_task_parts(kept[0][0].replace(), task, provenance)
        direction = _LORA.merge([(_direction(s), w) for s, w in kept] or [(_direction(task), 0.0)], space=space)
        magnitudes = {}
        for module, g0 in task.params.items():
            m = torch.ones_like(g0["magnitude"], dtype=torch.float64)
            for state, w in kept:
                m = m * _magnitude(state.params[module]["magnitude"].to(torch.float64), module, w, epsilon).pow(w)
            magnitudes[module] = m.to(g0["magnitude"].dtype)
        out = _with_magnitudes(direction, magnitudes, task)
        return with_task_parts(out, task, provenance)

    def transfer(
        self, task: AdapterState, ref_source: AdapterState, ref_target: AdapterState, t: float, **options: Any
    ) -> AdapterState:
        """``ΔV_task + t·(ΔV_tgt − ΔV_src)`` and ``m_task ⊙ (m_tgt ⊘ m_src)^t``: :meth:`merge` with ``(1, t, −t)``."""
        return self.merge([(task, 1.0), (ref_target, t), (ref_source, -t)], **options)

    def arithmetic_merge(self, terms: Sequence[Term], **options: Any) -> AdapterState:
        """Zhang et al. 2023 on raw parameters: LoRA's ``A = Σ |wᵢ|·Aᵢ``, ``B = Σ wᵢ·Bᵢ`` and ``m = Σ wᵢ·mᵢ``."""
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        kept = collect_terms(terms)
        direction = _LORA.arithmetic_merge([(_direction(s), w) for s, w in terms])
        magnitudes = {m: sum((s.params[m]["magnitude"].double() * w for s, w in kept),
                             torch.zeros_like(g["magnitude"], dtype=torch.float64)).to(g["magnitude"].dtype)
                      for m, g in task.params.items()}
        provenance = {"space": "arithmetic", "weights": [w for _, w in terms], "effective_terms": len(kept)}
        return with_task_parts(_with_magnitudes(direction, magnitudes, task), task, provenance)

    # -- merge space and compression ----------------------------------------------------------------------------
    def to_space(self, state: AdapterState) -> dict[str, dict[str, torch.Tensor]]:
        """``{"delta": ΔV (out, in), "log_magnitude": log m (out,)}`` per module, float64 (``m`` must be > 0)."""
        out = {}
        for module, g in state.params.items():
            m = g["magnitude"].to(torch.float64)
            if bool((m <= 0).any()):
                raise NumericalError(f"module {module}: DoRA magnitudes must be positive to take their log, got "
                                     f"{int((m <= 0).sum())} non-positive (min {float(m.min()):.3g})")
            out[module] = {"delta": _LORA.delta(state, module), "log_magnitude": m.log()}
        return out

    def from_space(self, space: Mapping[str, Mapping[str, torch.Tensor]], like: AdapterState) -> AdapterState:
        """A DoRA with factors ``B·A = ΔV`` exactly (:func:`._common.identity_factors`, rank ``min(out, in)``,
        scaling 1) and ``m = exp(log_magnitude)``, carrying ``like``'s base model, config and saved modules."""
        params, magnitudes = {}, {}
        for module, g in like.params.items():
            shape = (g["lora_B"].shape[0], g["lora_A"].shape[1])
            b, a = identity_factors(space_delta(space, module, "delta", shape, "dora"))
            params[module] = {"lora_A": a.to(g["lora_A"].dtype), "lora_B": b.to(g["lora_B"].dtype)}
            log_m = space_delta(space, module, "log_magnitude", (shape[0],), "dora")
            magnitudes[module] = log_m.exp().to(g["magnitude"].dtype)
        direction = _direction(like).replace(params=params, scaling={m: 1.0 for m in params})
        return with_task_parts(_with_magnitudes(direction, magnitudes, like), like, like.metadata.get("merge", {}))

    def compress(
        self, state: AdapterState, rank: int, *, method: Method = "gram"
    ) -> tuple[AdapterState, dict[str, Any]]:
        """The direction ``ΔV`` brought to rank ``rank`` by LoRA's exact factored SVD (its report: the optimal
        Frobenius truncation error of ``ΔV``); magnitudes are kept, so the forward pass renormalises
        ``W + ΔV_k``."""
        direction, report = _LORA.compress(_direction(state), rank, method=method)
        out = _with_magnitudes(direction, {m: g["magnitude"] for m, g in state.params.items()}, state)
        out.metadata["compression"] = direction.metadata["compression"]
        return out, report

    def delta(self, state: AdapterState, module: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The direction update ``ΔV = s·B·A`` of one module as an ``(out, in)`` matrix."""
        return _LORA.delta(state, module, dtype)

