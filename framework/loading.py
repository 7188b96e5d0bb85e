"""Put adapter states and compositions onto live models, placing heads explicitly.

:func:`attach` is the one way the framework turns an :class:`AdapterState` (trained, loaded or merged) or a
:class:`~adamergex.strategy.Composition` (stacking strategies) into a runnable ``PeftModel``. It

* refuses an adapter trained on another base model than the one given (both names in the message), unless
  ``check_base_model=False``;
* builds the PEFT model from the state's own config and loads every tensor, failing on any missing or
  unexpected key, so a head (PEFT ``modules_to_save``) is never silently left at the base model's random
  initialisation;
* for a composition, loads every adapter under its own name and activates them together; only the adapter named
  by ``head_from`` keeps its saved modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .adapter_state import AdapterState
from .errors import AdapterFormatError, ConfigError, IncompatibleAdaptersError
from .registry import ADAPTERS

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from .strategy import Composition

__all__ = ["attach", "attached", "base_model_name", "check_base_model", "detach"]


def base_model_name(model: Any) -> str:
    """The ``name_or_path`` a transformers model was loaded from (``""`` if unknown)."""
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "_name_or_path", "") or getattr(model, "name_or_path", "") or "")


def check_base_model(model: Any, state: AdapterState, *, what: str = "adapter") -> None:
    """Raise :class:`IncompatibleAdaptersError` if ``state`` names another base model than ``model``."""
    name = base_model_name(model)
    if state.base_model and name and state.base_model != name:
        raise IncompatibleAdaptersError(
            f"{what} was trained on base model {state.base_model!r} but the model given is {name!r}; "
            "load the matching base model, or pass --no-base-model-check (check_base_model=False in Python) if they "
            "are the same weights"
        )


_check_base = check_base_model  # ``attach`` has a parameter of the same name


def _peft_config(state: AdapterState, *, keep_heads: bool) -> Any:
    from peft import get_peft_config

    typ = ADAPTERS.get(state.kind)
    config, _ = typ.to_peft(state)
    config = dict(config)
    config["inference_mode"] = True
    config["base_model_name_or_path"] = state.base_model or None
    if not keep_heads:
        config["modules_to_save"] = None
    config.pop("peft_version", None)
    return get_peft_config(config)


def _load_weights(model: PeftModel, state: AdapterState, adapter_name: str, *, keep_heads: bool) -> None:
    from peft import set_peft_model_state_dict

    typ = ADAPTERS.get(state.kind)
    _, weights = typ.to_peft(state)
    if not keep_heads:
        weights = {k: v for k, v in weights.items() if k not in state.saved_modules}
    try:
        result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    except RuntimeError as exc:  # torch's size-mismatch error: the adapter is for another architecture or head
        raise AdapterFormatError(f"adapter {adapter_name!r} does not fit the model: {exc}") from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise AdapterFormatError(
            f"adapter {adapter_name!r} holds tensors the model has no place for: {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} (is it for another architecture?)"
        )
    missing = [k for k in getattr(result, "missing_keys", []) or [] if adapter_name in k]
    if missing:
        raise AdapterFormatError(f"adapter {adapter_name!r} lacks tensors the model expects: {missing[:5]}")


def peft_model(model: Any, config: Any, adapter_name: str) -> PeftModel:
    """``PeftModel(model, config, adapter_name)`` without transformers' deprecation notice for the
    ``is_gradient_checkpointing`` attribute that PEFT's constructor reads (one place for every wrap)."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel(model, config, adapter_name)


def attach(
    model: PreTrainedModel,
    adapter: AdapterState | Composition,
    *,
    adapter_name: str = "default",
    check_base_model: bool = True,
) -> PeftModel:
    """Wrap ``model`` in a ``PeftModel`` carrying ``adapter`` (a state or a composition), in eval mode.

    Raises:
        IncompatibleAdaptersError: the adapter was trained on another base model.
        AdapterFormatError: tensors do not fit the model (missing or unexpected keys).
    """
    from .strategy import Composition

    if isinstance(adapter, Composition):
        names = list(adapter.adapters)
        first = names[0]
        for name in names:
            if check_base_model:
                _check_base(model, adapter.adapters[name], what=f"composition adapter {name!r}")
        head = adapter.head_from
        wrapped = peft_model(model, _peft_config(adapter.adapters[first], keep_heads=first == head), first)
        _load_weights(wrapped, adapter.adapters[first], first, keep_heads=first == head)
        for name in names[1:]:
            keep = name == head
            wrapped.add_adapter(name, _peft_config(adapter.adapters[name], keep_heads=keep))
            _load_weights(wrapped, adapter.adapters[name], name, keep_heads=keep)
        # Activate all adapters together (MAD-X style stacking); PEFT sums (LoRA) or multiplies ((IA)³) them.
        tuner: Any = wrapped.base_model
        tuner.set_adapter(names)
        _activate_heads(wrapped, head)
        wrapped.eval()
        return wrapped

    if check_base_model:
        _check_base(model, adapter, what="adapter")
    wrapped = peft_model(model, _peft_config(adapter, keep_heads=True), adapter_name)
    _load_weights(wrapped, adapter, adapter_name, keep_heads=True)
    wrapped.eval()
    return wrapped


def _activate_heads(peft_model: PeftModel, head: str) -> None:
    """Make every ``modules_to_save`` wrapper use the ``head`` adapter's copy (PEFT can activate one only)."""
    from peft.utils.other import ModulesToSaveWrapper

    for module in peft_model.modules():
        if isinstance(module, ModulesToSaveWrapper) and head in module.modules_to_save:
            wrapper: Any = module
            wrapper.set_adapter(head)


def detach(peft_model: Any) -> None:
    """Remove what ``attach`` injected, restoring the base model as it was (heads included).

    PEFT's ``unload`` keeps the *trained* copy of a ``modules_to_save`` head; the original module goes back first.
    """
    from peft.utils.other import ModulesToSaveWrapper

    model = peft_model.get_base_model()
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.original_module)
    peft_model.unload()


@contextlib.contextmanager
def attached(
    model: Any, adapter: AdapterState | Composition | None, *, check_base_model: bool = True
) -> Iterator[Any]:
    """``model`` carrying ``adapter`` inside the block (``model`` itself when ``adapter`` is ``None``); the bare
    model again after it, heads included, whether the block succeeded or not.

    Raises:
        ConfigError: ``model`` already carries PEFT adapters.
        IncompatibleAdaptersError: the adapter was trained on another base model (see ``attach``).
    """
    if adapter is None:
        yield model
        return
    if hasattr(model, "peft_config"):
        raise ConfigError("the model already carries PEFT adapters; pass the bare base model together with adapter=...")
    peft_model = attach(model, adapter, check_base_model=check_base_model)
    try:
        yield peft_model
    finally:
        detach(peft_model)
