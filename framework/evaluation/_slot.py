"""An adapter slot: one PEFT wrapper around a model, built once, into which adapter states are written in place.

A tuning study scores one merge output per trial. :func:`adamergex.loading.attach` wraps the model anew for each
(PEFT injects modules, initialises their weights, and ``detach`` tears them down again); :class:`AdapterSlot`
wraps it once and, per trial, copies the merged tensors into the parameters of that wrapper.

**Why the result is the model ``attach`` builds, bit for bit.** A state's *layout* is the PEFT config ``attach``
would build from it (adapter type, target modules, ``r``/``lora_alpha`` and their per-module patterns, saved
modules...) together with the key, shape and dtype of every tensor it would load. Two states of one layout
differ only in tensor values; the wrapper built for the first one, with the second one's values copied into its
parameters (``Tensor.copy_``, as ``load_state_dict`` does for ``attach``), is the module tree, scaling and
values ``attach`` would build for the second. Each layout gets its own PEFT adapter in the one wrapper (built and
loaded the first time by PEFT's own ``set_peft_model_state_dict``, with missing/unexpected keys refused as in
``attach``); the active one is switched by ``set_adapter``, and an adapter that is not active is skipped by
PEFT's layers, so what runs is exactly the single-adapter model.

**What stays fixed within a study.** (IA)³ merges keep the vectors' shapes: one layout. A LoRA merge that
concatenates factors has rank ``Σ rᵢ`` over the inputs that survive like-term collection and scaling 1, fixed by
the strategy and inputs; ``t = 0`` or identical references give back the task adapter at its own rank and
scaling, a second layout. Per-layer-group ``t`` with some groups at 0 mixes the two per module (more layouts);
past ``max_layouts`` the wrapper is rebuilt, which is correct and only slower. Stacking compositions are not
written here (:class:`~adamergex.evaluation.PreparedEvaluation` attaches them per trial).

**The model between uses is the bare model.** Inside :meth:`AdapterSlot.carrying` the PEFT layers sit in the
model; on leaving (normally or by an exception) they are taken out again, the base layers put back where they
were (what PEFT's own ``unload`` does), ``peft_config`` removed, and every parameter's ``requires_grad`` and
every module's train/eval mode restored. A slot is not thread-safe, and a model must not be restructured (moved,
resized) while a slot holds it; call :meth:`AdapterSlot.close` to drop the wrapper.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..adapter_state import AdapterState
from ..errors import ConfigError
from ..loading import _load_weights, _peft_config, check_base_model, peft_model
from ..registry import ADAPTERS

if TYPE_CHECKING:
    import torch

__all__ = ["AdapterSlot", "layout_key"]


def layout_key(config: Any, weights: Mapping[str, torch.Tensor]) -> str:
    """The layout of a state as JSON: its PEFT config (``to_dict()``) and each tensor's key, shape and dtype."""
    def plain(value: Any) -> Any:
        return sorted(value) if isinstance(value, (set, frozenset)) else str(value)

    tensors = [[k, list(t.shape), str(t.dtype)] for k, t in sorted(weights.items())]
    return json.dumps([config.to_dict(), tensors], sort_keys=True, default=plain)


@dataclass
class _Layout:
    """One PEFT adapter of the wrapper: its name and, per PEFT key, the live parameter its tensor goes into."""

    name: str
    targets: dict[str, torch.Tensor] | None
    """``None`` where the parameters could not be located (then PEFT's loader writes every time)."""
    written: dict[str, torch.Tensor] = field(default_factory=dict)
    """The tensor last copied into each target: states are immutable, so the same tensor (the task adapter's
    head, kept by every merge) is not copied again."""


class AdapterSlot:
    """A PEFT wrapper of ``model`` built at the first use and reused: :meth:`carrying` writes a state in place.

    Args:
        model: The bare base model (not a ``PeftModel``); it is the bare model again after every use.
        check_base_model: Refuse a state trained on another base model (as :func:`~adamergex.loading.attach`).
        max_layouts: PEFT adapters (one per layout) kept in the wrapper before it is rebuilt.
    """

    def __init__(self, model: Any, *, check_base_model: bool = True, max_layouts: int = 8) -> None:
        if max_layouts < 1:
            raise ConfigError(f"max_layouts must be at least 1, got {max_layouts}")
        self.model = model
        self.check_base_model = check_base_model
        self.max_layouts = max_layouts
        self.wraps = 0
        """How often a PEFT wrapper was built (1 for a study whose outputs share one PEFT type)."""
        self._peft: Any = None
        self._peft_type: Any = None
        self._layouts: dict[str, _Layout] = {}
        self._installed: list[tuple[Any, str, Any, Any]] = []  # (parent, child name, PEFT module, base module)
        self._config_attr: Any = None
        self._active: str | None = None
        self._inside = False
        self._modules: list[Any] | None = None

    @property
    def layouts(self) -> int:
        """Layouts (PEFT adapters) the wrapper holds now."""
        return len(self._layouts)

    @contextlib.contextmanager
    def carrying(self, state: AdapterState) -> Iterator[Any]:
        """``model`` carrying ``state`` inside the block (the PEFT layers installed in it; its train/eval mode is
        left as it was, and the scoring primitives switch to eval themselves); the bare model after it.

        Raises:
            ConfigError: ``model`` already carries PEFT adapters, or the slot is in use.
            IncompatibleAdaptersError: the adapter was trained on another base model.
            AdapterFormatError: tensors do not fit the model (missing or unexpected keys).
        """
        if self._inside:
            raise ConfigError("an adapter slot holds one adapter at a time; leave the current carrying() block first")
        if self.check_base_model:
            check_base_model(self.model, state, what="adapter")
        if hasattr(self.model, "peft_config"):
            raise ConfigError(
                "the model already carries PEFT adapters; pass the bare base model together with adapter=...")
        config = _peft_config(state, keep_heads=True)
        _, weights = ADAPTERS.get(state.kind).to_peft(state)
        key = layout_key(config, weights)
        modes = [m.training for m in self._bare_modules()]
        grad = [(p, p.requires_grad) for p in self.model.parameters()]  # PEFT's wrapping and set_adapter change them
        self._inside = True
        self._install()
        try:
            layout = self._layouts.get(key) or self._add_layout(key, config, state)
            self._write(layout, state, weights)
            if self._active != layout.name:
                self._peft.set_adapter(layout.name)
                self._active = layout.name
            # As attach() leaves them (PEFT freezes an adapter loaded for inference): every parameter frozen.
            # Not cosmetic: torch picks another linear kernel for a weight with requires_grad=True even under
            # inference_mode (on a sliced, non-contiguous input: logits_to_keep), which moved log-likelihoods by
            # ~1e-7 against evaluate(). The bare model's flags are given back below.
            for param in self.model.parameters():
                param.requires_grad_(False)
            # The model itself, its PEFT layers in place: what PeftModel.forward/generate run after their hooks
            # for adapter_names (unused here), without those hooks' cost on every batch.
            yield self.model
        finally:
            self._uninstall()
            for module, mode in zip(self._bare_modules(), modes):
                module.training = mode
            for param, flag in grad:
                param.requires_grad_(flag)
            self._inside = False

    def close(self) -> None:
        """Drop the wrapper (the model is bare already; the slot's adapter tensors are freed)."""
        if self._inside:
            raise ConfigError("close() inside a carrying() block; leave the block first")
        self._drop()

    def _drop(self) -> None:
        self._peft, self._peft_type, self._layouts, self._installed = None, None, {}, []
        self._active, self._config_attr = None, None

    # -- layouts -------------------------------------------------------------------------------------------------
    def _add_layout(self, key: str, config: Any, state: AdapterState) -> _Layout:
        if self._peft is not None and (len(self._layouts) >= self.max_layouts
                                       or str(self._peft_type) != str(config.peft_type)):
            self._uninstall()  # another PEFT type cannot join the wrapper, and too many layouts cost memory
            self._drop()
        name = f"slot{len(self._layouts)}"
        if self._peft is None:
            self._peft = peft_model(self.model, config, name)
            self._peft_type = config.peft_type
            self.wraps += 1
        else:
            self._peft.add_adapter(name, config)
        self._active = None  # add_adapter leaves the active adapter alone; set it for this layout
        _load_weights(self._peft, state, name, keep_heads=True)  # PEFT's loader: every key checked
        self._refresh_installed()
        layout = _Layout(name, self._targets(name, state))
        self._layouts[key] = layout
        return layout

    def _targets(self, name: str, state: AdapterState) -> dict[str, torch.Tensor] | None:
        """Per PEFT key, the live parameter (or buffer) PEFT loaded it into, found through PEFT's own saving
        map (``get_peft_model_state_dict`` is ``set_peft_model_state_dict``'s inverse) and checked to hold the
        value just loaded; ``None`` if any key cannot be located that way."""
        import torch
        from peft import get_peft_model_state_dict

        _, weights = ADAPTERS.get(state.kind).to_peft(state)
        saved = get_peft_model_state_dict(self._peft, adapter_name=name, save_embedding_layers=False)
        live = {(t.data_ptr(), tuple(t.shape)): t
                for t in [*self._peft.parameters(), *self._peft.buffers()]}
        targets = {}
        for key, tensor in weights.items():
            view = saved.get(key)
            param = live.get((view.data_ptr(), tuple(view.shape))) if view is not None else None
            if param is None or param.dtype != view.dtype or not torch.equal(param, tensor.to(param.dtype)):
                return None
            targets[key] = param
        return targets

    def _write(self, layout: _Layout, state: AdapterState, weights: Mapping[str, torch.Tensor]) -> None:
        import torch

        if layout.targets is None:
            _load_weights(self._peft, state, layout.name, keep_heads=True)
            return
        with torch.no_grad():
            for key, tensor in weights.items():
                if layout.written.get(key) is not tensor:
                    layout.targets[key].copy_(tensor)  # casts to the parameter's dtype, as load_state_dict does
                    layout.written[key] = tensor

    def _bare_modules(self) -> list[Any]:
        """The bare model's modules (cached: between uses the model is bare, and its structure does not change)."""
        if self._modules is None:
            self._modules = list(self.model.modules())
        return self._modules

    # -- putting the PEFT layers in and out ----------------------------------------------------------------------
    def _refresh_installed(self) -> None:
        """Record the outermost PEFT modules of the model (tuner layers, ``modules_to_save`` wrappers)."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        self._installed = []
        inside: tuple[str, ...] = ()
        for name, module in self.model.named_modules():
            if inside and name.startswith(inside):
                continue
            if isinstance(module, BaseTunerLayer):
                base = module.get_base_layer()
            elif isinstance(module, AuxiliaryTrainingWrapper):
                base = module.original_module
            else:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            self._installed.append((parent, child, module, base))
            inside = (*inside, name + ".")
        self._config_attr = getattr(self.model, "peft_config", None)

    def _install(self) -> None:
        for parent, child, module, _ in self._installed:
            setattr(parent, child, module)
        if self._config_attr is not None:
            self.model.peft_config = self._config_attr

    def _uninstall(self) -> None:
        for parent, child, _, base in self._installed:
            setattr(parent, child, base)
        if "peft_config" in vars(self.model):
            del self.model.peft_config
