"""What LoHa and LoKr share: PEFT's LyCORIS format, and merging through an exact LoRA.

Both types add ``ΔW = s·F(factors)`` with ``s = α/r`` (``r`` and ``α`` from ``r``/``rank_pattern`` and
``alpha``/``alpha_pattern`` of the config, as PEFT's ``LycorisTuner`` resolves them). A weighted sum of such
updates is not of the same form, but each one is exactly a LoRA ``s·B·A`` of small rank (the subclass gives
``B``, ``A``; :meth:`LycorisAdapter.lora_factors`), so a merge converts every term to that LoRA and merges
with LoRA's exact algebra: **the merged output is a LoRA** (kind ``lora``, a PEFT ``LORA`` config with the same
target modules and the task's ``modules_to_save``), compressible with LoRA's ``compress``. A merge that
reduces to the task adapter alone at weight 1 (``t = 0``, identical references) returns the task adapter
itself, unchanged. Subclasses declare their tensor names and implement the factor and dense forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch

from ..adapter_state import AdapterState
from ..errors import AdapterFormatError, ConfigError, IncompatibleAdaptersError
from ..registry import ADAPTERS
from ._common import collect_terms, identity_factors, space_delta, with_task_parts
from ._lowrank import Method
from .base import AdapterType, Term
from .lora import LoraAdapter, _pattern_value

__all__ = ["LycorisAdapter"]

# LoRA config keys that say where an adapter sits; they carry over to the merged LoRA.
_PLACEMENT = ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern", "modules_to_save",
              "task_type", "base_model_name_or_path", "revision", "inference_mode")


class LycorisAdapter(AdapterType):
    """Base of :class:`.loha.LohaAdapter` and :class:`.lokr.LokrAdapter` (see module docstring)."""

    structure = "additive"
    positive_options = ("r",)
    parallel_merge = True  # PEFT (lycoris_utils): result + Σₐ ΔWₐ·x over active adapters; merge gives that LoRA
    merged_kind: ClassVar[str] = "lora"
    """Kind of a merge's output (unless it is the task adapter itself)."""
    tensor_names: ClassVar[tuple[str, ...]]
    """PEFT tensor names (``<module>.<name>`` keys) this type reads."""
    unsupported: ClassVar[dict[str, str]]
    """Tensor names that are refused, with why."""
    signed: ClassVar[tuple[str, ...]]
    """Tensors that carry the sign in :meth:`arithmetic_merge` (one factor of every product)."""

    # -- subclass hooks -------------------------------------------------------------------------------------
    def check_group(self, module: str, group: dict[str, torch.Tensor], source: str) -> None:
        """Raise :class:`AdapterFormatError` unless ``group`` is a complete, consistent set of factors."""
        raise NotImplementedError

    def shape(self, group: dict[str, torch.Tensor]) -> tuple[int, int]:
        """``(out, in)`` of the module's update."""
        raise NotImplementedError

    def lora_factors(self, group: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 ``(B (out, R), A (R, in))`` with ``B·A = F(factors)`` exactly (scaling not applied)."""
        raise NotImplementedError

    def dense(self, group: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float64 ``F(factors)`` as the ``(out, in)`` matrix PEFT builds (scaling not applied)."""
        raise NotImplementedError

    # -- PEFT format -----------------------------------------------------------------------------------------
    def from_peft(self, config: dict[str, Any], weights: Any, *, source: str) -> AdapterState:
        params: dict[str, dict[str, torch.Tensor]] = {}
        saved: dict[str, torch.Tensor] = {}
        for key, tensor in weights.items():
            module, _, name = key.rpartition(".")
            if name in self.unsupported:
                raise AdapterFormatError(f"{source}: module {module}: {self.unsupported[name]}; got {key}")
            if name in self.tensor_names:
                params.setdefault(module, {})[name] = tensor
            else:
                saved[key] = tensor
        if not params:
            raise AdapterFormatError(
                f"{source}: no {self.name} tensors (keys ending in {', '.join(self.tensor_names)}) found")
        scaling = {}
        for module, group in params.items():
            for name, t in group.items():
                if t.ndim != 2:
                    raise AdapterFormatError(
                        f"{source}: module {module}: {self.name} is supported on linear layers only (2-D factors); "
                        f"{name} has shape {tuple(t.shape)}")
            self.check_group(module, group, source)
            r = float(_pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8)))
            alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("alpha", 8)))
            scaling[module] = alpha / r
        return AdapterState(kind=self.name, base_model=str(config.get("base_model_name_or_path") or ""),
                            params=params, config=dict(config), scaling=scaling, saved_modules=saved)

    def to_peft(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        weights = {f"{m}.{n}": t for m, g in state.params.items() for n, t in g.items()}
        weights.update(state.saved_modules)
        return dict(state.config), weights

    # -- the exact LoRA ------------------------------------------------------------------------------------------
    def to_lora(self, state: AdapterState) -> AdapterState:
        """The same adapter as an exact LoRA: per module ``s·B·A`` with :meth:`lora_factors` (any dtype kept)."""
        from peft import LoraConfig

        from ..io import peft_config_dict

        placement = {k: state.config[k] for k in _PLACEMENT if state.config.get(k) is not None}
        config = peft_config_dict(LoraConfig(r=1, lora_alpha=1, **placement))
        params = {}
        for module, group in state.params.items():
            b, a = self.lora_factors(group)
            dtype = next(iter(group.values())).dtype
            params[module] = {"lora_A": a.to(dtype), "lora_B": b.to(dtype)}
        return state.replace(kind="lora", params=params, config=config)

    # -- algebra ------------------------------------------------------------------------------------------------
    def check_compatible(self, states: Any) -> None:
        super().check_compatible(states)
        (first_name, first), *rest = states.items()
        for name, s in rest:
            for module, g in s.params.items():
                if self.shape(g) != self.shape(first.params[module]):
                    raise IncompatibleAdaptersError(
                        f"module {module}: {self.name} updates must have one shape; {name} has ΔW "
                        f"{self.shape(g)}, {first_name} has {self.shape(first.params[module])}")

    def merge(self, terms: Sequence[Term], *, space: Literal["delta"] = "delta", **options: Any) -> AdapterState:
        """``ΔW = Σ wᵢ·sᵢ·F(factorsᵢ)`` exactly, as a LoRA of rank ``Σ Rᵢ`` (or the task adapter itself)."""
        if space != "delta":
            raise ConfigError(f"{self.name} merge space must be 'delta' (factor-space merging is LoRA's ablation "
                              f"only), got {space!r}")
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        kept = collect_terms(terms)
        provenance = {"space": "delta", "output": self.merged_kind, "weights": [w for _, w in terms],
                      "effective_terms": len(kept)}
        if len(kept) == 1 and kept[0][1] == 1.0:
            return with_task_parts(kept[0][0].replace(), task, provenance)
        task_lora = self.to_lora(task)
        lora = ADAPTERS.get("lora")
        merged = lora.merge([(self.to_lora(s), w) for s, w in kept] or [(task_lora, 0.0)])
        return with_task_parts(merged.replace(config=task_lora.config), task_lora, provenance)

    def arithmetic_merge(self, terms: Sequence[Term], **options: Any) -> AdapterState:
        """Raw-parameter arithmetic in the manner of Zhang et al. 2023 (who define it for LoRA): every tensor is
        ``Σ |wᵢ|·xᵢ`` except the :attr:`signed` ones, ``Σ wᵢ·xᵢ`` (negation flips one factor of each product).
        Needs equal shapes and scalings; the result is of this type."""
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        kept = collect_terms(terms) or [(task, 0.0)]
        first = kept[0][0]
        for i, (s, _) in enumerate(kept):
            for module, g in s.params.items():
                ref = first.params[module]
                if {n: t.shape for n, t in g.items()} != {n: t.shape for n, t in ref.items()} or \
                        s.scaling[module] != first.scaling[module]:
                    raise IncompatibleAdaptersError(
                        f"raw-parameter arithmetic needs equal factor shapes and scalings; module {module} differs "
                        f"between input {i} ({ {n: tuple(t.shape) for n, t in g.items()} }, s={s.scaling[module]}) "
                        f"and input 0 ({ {n: tuple(t.shape) for n, t in ref.items()} }, s={first.scaling[module]})")
        params = {m: {n: sum((s.params[m][n].double() * (w if n in self.signed else abs(w)) for s, w in kept),
                             torch.zeros_like(t, dtype=torch.float64)).to(t.dtype) for n, t in g.items()}
                  for m, g in first.params.items()}
        provenance = {"space": "arithmetic", "weights": [w for _, w in terms], "effective_terms": len(kept)}
        return with_task_parts(first.replace(params=params), task, provenance)

    # -- merge space and compression ----------------------------------------------------------------------------
    def to_space(self, state: AdapterState) -> dict[str, dict[str, torch.Tensor]]:
        """``{"delta": s·F(factors) (out, in)}`` per module, float64."""
        return {m: {"delta": state.scaling[m] * self.dense(g)} for m, g in state.params.items()}

    def from_space(self, space: Mapping[str, Mapping[str, torch.Tensor]], like: AdapterState) -> AdapterState:
        """An exact LoRA with ``B·A = ΔW`` (:func:`._common.identity_factors`, rank ``min(out, in)``, scaling 1),
        carrying ``like``'s base model, placement config and saved modules."""
        like_lora = self.to_lora(like)
        params = {}
        for module, g in like.params.items():
            b, a = identity_factors(space_delta(space, module, "delta", self.shape(g), self.name))
            dtype = next(iter(g.values())).dtype
            params[module] = {"lora_A": a.to(dtype), "lora_B": b.to(dtype)}
        out = like_lora.replace(params=params, scaling={m: 1.0 for m in params})
        return with_task_parts(out, like_lora, like.metadata.get("merge", {}))

    def compress(
        self, state: AdapterState, rank: int, *, method: Method = "gram"
    ) -> tuple[AdapterState, dict[str, Any]]:
        """LoRA's optimal rank-``rank`` compression of the exact LoRA form (:meth:`to_lora`); the result is a
        LoRA. Accepts a LoRA state too (a merge output)."""
        lora: LoraAdapter = ADAPTERS.get("lora")
        return lora.compress(self.to_lora(state) if state.kind == self.name else state, rank, method=method)
