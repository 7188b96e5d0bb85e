"""The adapter-type contract: PEFT format in and out, and the type's merge algebra.

One module per adapter type (``lora.py``, ``ia3.py``...) subclasses :class:`AdapterType` and registers an
instance in ``ADAPTERS`` under its lowercase name. The type owns *how* adapters combine; strategies only say
*what* to combine with which weights. That split is what makes merging structure-adaptive:

=================  ==========================================  ========================================
structure          ``merge([(a₁, w₁), ...])``                   ``transfer(task, src, tgt, t)``
=================  ==========================================  ========================================
``additive``       ``ΔW = Σ wᵢ·ΔWᵢ``                            ``ΔW_task + t·(ΔW_tgt − ΔW_src)``
``multiplicative`` ``l = Π lᵢ^wᵢ`` (log space)                 ``l_task ⊙ f_t(l_tgt ⊘ l_src)``
``stack_only``     refused (compose at inference instead)       refused
=================  ==========================================  ========================================

Binary forms follow from the n-ary one: ``combine(a, b)`` is ``a ⊕ b``, ``invert(a)`` is ``⊖a`` and
``scale(a, t)`` is ``t·a``, each in the type's own algebra.

**Merge space.** A merging type also maps a state to a point of a vector space in which its merge is linear
(:meth:`AdapterType.to_space`, float64, per module and component) and back (:meth:`AdapterType.from_space`):
LoRA ``{"delta": ΔW (out, in)}``, (IA)³ ``{"log": log l}``. Strategies that work entry by entry (TIES trimming and
sign election, DARE dropping) run there, so they are type-aware without knowing the type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ..adapter_state import AdapterState
from ..errors import ConfigError, IncompatibleAdaptersError
from ..registry import ADAPTERS

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig

__all__ = ["AdapterType", "Structure", "Term", "register_adapter_type"]

Structure = Literal["additive", "multiplicative", "stack_only"]
Term = tuple[AdapterState, float]
A = TypeVar("A", bound="type[AdapterType]")


class AdapterType:
    """Base class of adapter types. Subclasses set the class variables and implement the PEFT hooks; merging
    types also implement :meth:`merge` (and, where the published method differs, :meth:`transfer`)."""

    name: ClassVar[str]
    """Registry name (``lora``, ``ia3``)."""
    peft_type: ClassVar[str]
    """PEFT's ``peft_type`` value this type reads and writes (``LORA``, ``IA3``)."""
    structure: ClassVar[Structure]
    """How adapters of this type combine (see module docstring)."""
    parallel_merge: ClassVar[bool] = False
    """Whether two adapters of this type active at once in PEFT compute exactly what the single adapter
    ``merge([(a, 1), (b, 1)])`` computes (LoRA, LoHa/LoKr: PEFT adds their updates; (IA)³: PEFT multiplies their
    vectors). ``madx_stack`` then writes that one adapter instead of a composition. ``False`` (the default, and
    DoRA's) keeps the composition: an adapter type must show, in a test against PEFT's forward, that it holds."""

    # -- PEFT format -----------------------------------------------------------------------------------------
    def from_peft(
        self, config: dict[str, Any], weights: Mapping[str, torch.Tensor], *, source: str
    ) -> AdapterState:
        """Build a state from a PEFT config dict and its adapter-name-free state dict; ``source`` names the
        file or model for error messages."""
        raise NotImplementedError

    def to_peft(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The PEFT config dict and state dict (keys as PEFT saves them) that represent ``state``."""
        raise NotImplementedError

    def peft_config(self, **options: Any) -> PeftConfig:
        """A PEFT config object for training a new adapter of this type (options are PEFT's own)."""
        raise NotImplementedError

    positive_options: ClassVar[tuple[str, ...]] = ()
    """Options that must be positive integers (``r`` of the low-rank types): PEFT's config classes accept
    ``r=0`` and fail only when the layers are built, after the model has loaded."""

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` naming the option unless ``options`` would build this type's PEFT config:
        cheap (no model), so a command calls it before it loads anything.

        An unknown option lists the closest valid names; a :attr:`positive_options` entry (and its
        ``rank_pattern`` values) must be a positive integer; anything else PEFT's config refuses
        (``TypeError``/``ValueError`` from its ``__post_init__``) comes back with PEFT's reason.

        Raises:
            ConfigError: as above, one line naming the option.
        """
        import dataclasses
        import difflib

        options = dict(options)
        try:
            known = {f.name for f in dataclasses.fields(type(self.peft_config()))}
        except (TypeError, ValueError):  # a config class that needs arguments: let PEFT's own check speak
            known = set()
        unknown = sorted(set(options) - known) if known else []
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "see PEFT's " + type(self.peft_config()).__name__
            raise ConfigError(f"adapter option {name!r} is not one that {self.name!r} adapters take; {hint}")
        for name in self.positive_options:
            values = [(name, options[name])] if name in options else []
            pattern = options.get("rank_pattern") if name == "r" else None
            values += [(f"rank_pattern[{k!r}]", v) for k, v in dict(pattern or {}).items()]
            for label, value in values:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"adapter option {label} must be a positive integer, got {value!r}")
        try:
            self.peft_config(**options)
        except (TypeError, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError(f"{self.name} adapter options {sorted(options)} are refused by PEFT: {reason}") from None

    def claims(self, config: Mapping[str, Any]) -> bool:
        """Whether this type reads the PEFT config ``config`` (an ``adapter_config.json`` dict). Default: its
        ``peft_type`` is :attr:`peft_type`; types sharing a ``peft_type`` (``lora``/``dora``) narrow it."""
        return str(config.get("peft_type", "")).upper() == self.peft_type

    # -- algebra ------------------------------------------------------------------------------------------------
    def merge(self, terms: Sequence[Term], **options: Any) -> AdapterState:
        """The weighted combination ``⊕ᵢ wᵢ·aᵢ`` in this type's algebra. The first term's non-merged parts
        (saved modules, base model, config) are kept: by convention it is the task adapter."""
        raise ConfigError(
            f"adapter type {self.name!r} is stack-only: it has no merge algebra; use a stacking strategy "
            "such as 'madx_stack'"
        )

    def transfer(
        self, task: AdapterState, ref_source: AdapterState, ref_target: AdapterState, t: float, **options: Any
    ) -> AdapterState:
        """AdaMergeX: ``task ⊕ t·(ref_target ⊖ ref_source)``. Default: :meth:`merge` with weights (1, t, −t)."""
        return self.merge([(task, 1.0), (ref_target, t), (ref_source, -t)], **options)

    def arithmetic_merge(self, terms: Sequence[Term], **options: Any) -> AdapterState:
        """Zhang et al. (2023) arithmetic on raw parameters, ignoring structure (the AriMerging baseline)."""
        raise ConfigError(f"adapter type {self.name!r} defines no raw-parameter arithmetic")

    def combine(self, a: AdapterState, b: AdapterState, **options: Any) -> AdapterState:
        """``a ⊕ b``."""
        return self.merge([(a, 1.0), (b, 1.0)], **options)

    def invert(self, a: AdapterState, **options: Any) -> AdapterState:
        """``⊖a``: the element that cancels ``a``."""
        return self.merge([(a, -1.0)], **options)

    def scale(self, a: AdapterState, t: float, **options: Any) -> AdapterState:
        """``t·a``."""
        return self.merge([(a, t)], **options)

    # -- merge space ---------------------------------------------------------------------------------------------
    def to_space(self, state: AdapterState) -> dict[str, dict[str, torch.Tensor]]:
        """The adapter as a point of this type's merge space, per module and component, in float64, such that
        the type's merge is linear there: additive types ``{"delta": ΔW (out, in)}``; (IA)³ ``{"log": log l}``;
        DoRA ``{"delta": ΔV, "log_magnitude": log m}``.

        Raises:
            ConfigError: the type has no merge space (stack-only types).
        """
        raise ConfigError(
            f"adapter type {self.name!r} has no merge space (to_space/from_space): entry-wise strategies such as "
            "ties and dare cannot merge it; use a stacking strategy such as 'madx_stack'"
        )

    def from_space(self, space: Mapping[str, Mapping[str, torch.Tensor]], like: AdapterState) -> AdapterState:
        """A state whose :meth:`to_space` equals ``space`` (exactly, up to float rounding), carrying ``like``'s
        base model, config and saved modules (the task adapter's), in ``like``'s dtype.

        Raises:
            ConfigError: the type has no merge space, or ``space`` does not have ``like``'s modules/components.
        """
        raise ConfigError(
            f"adapter type {self.name!r} has no merge space (to_space/from_space): entry-wise strategies such as "
            "ties and dare cannot merge it; use a stacking strategy such as 'madx_stack'"
        )

    def check_space(self, space: Mapping[str, Mapping[str, torch.Tensor]], like: AdapterState,
                    components: tuple[str, ...]) -> None:
        """Raise :class:`ConfigError` unless ``space`` has exactly ``like``'s modules, each with ``components``."""
        if set(space) != set(like.params):
            missing = sorted(set(like.params) - set(space))[:3]
            extra = sorted(set(space) - set(like.params))[:3]
            raise ConfigError(f"a {self.name} merge-space point must have the modules of `like`; "
                              f"missing {missing}, unexpected {extra}")
        for module, group in space.items():
            if tuple(sorted(group)) != tuple(sorted(components)):
                raise ConfigError(f"module {module}: a {self.name} merge-space point has components "
                                  f"{sorted(components)}, got {sorted(group)}")

    # -- shared checks ------------------------------------------------------------------------------------------
    def check_compatible(self, states: Mapping[str, AdapterState]) -> None:
        """Raise :class:`IncompatibleAdaptersError` unless all states share type, base model and modules.

        ``states`` maps a role or file name to a state; the names appear in the message.
        """
        items = list(states.items())
        if not items:
            raise ConfigError("at least one adapter is needed")
        first_name, first = items[0]
        for name, s in items[1:]:
            if s.kind != first.kind:
                raise IncompatibleAdaptersError(
                    f"adapters must have one type; {first_name} is {first.kind!r}, {name} is {s.kind!r}"
                )
            if s.base_model != first.base_model:
                raise IncompatibleAdaptersError(
                    f"adapters must share a base model; {first_name} was trained on {first.base_model!r}, "
                    f"{name} on {s.base_model!r}"
                )
            if set(s.params) != set(first.params):
                only_first = sorted(set(first.params) - set(s.params))[:3]
                only_other = sorted(set(s.params) - set(first.params))[:3]
                raise IncompatibleAdaptersError(
                    f"adapters must adapt the same modules; only in {first_name}: {only_first}, "
                    f"only in {name}: {only_other}"
                )
        for s_name, s in items:
            if s.kind != self.name:
                raise IncompatibleAdaptersError(f"{s_name} is a {s.kind!r} adapter, not {self.name!r}")


def register_adapter_type(cls: A) -> A:
    """Class decorator: register an instance of ``cls`` in ``ADAPTERS`` under ``cls.name``, the one place the
    type's name is written. The registry refuses duplicates and badly formed names."""
    ADAPTERS.add(cls.name, cls())
    return cls
