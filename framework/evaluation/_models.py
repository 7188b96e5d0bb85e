"""Loading the model an adapter is evaluated on: the right Auto class for the adapter and task, in eval mode,
refusing modules that would be scored at their random initialisation. Free of Lightning."""

from __future__ import annotations

from typing import Any, Literal

from ..adapter_state import AdapterState
from ..errors import ConfigError
from ..models import load_pretrained
from ..strategy import Composition
from ..task import Task
from ._harness import MODEL_TYPES, ModelType

__all__ = ["load_model"]


def _model_type_for(adapter: AdapterState | Composition | None, model_type: str, name: str = "",
                    trust_remote_code: bool = False) -> ModelType:
    """``auto``: the adapter's PEFT ``task_type`` (``SEQ_CLS`` → ``seq_cls``); without an adapter, the
    checkpoint's own architecture (a saved ``*ForSequenceClassification`` is scored as one); else ``causal_lm``."""
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"model_type must be one of {list(MODEL_TYPES)}, got {model_type!r}")
    if model_type in ("causal_lm", "seq_cls"):
        return "causal_lm" if model_type == "causal_lm" else "seq_cls"
    state = adapter.adapters[adapter.head_from] if isinstance(adapter, Composition) else adapter
    if state is None and name:
        from transformers import AutoConfig

        try:
            architectures = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code).architectures
        except (OSError, ValueError):
            architectures = None  # load_pretrained reports an unloadable model with its own message
        if any(str(a).endswith("ForSequenceClassification") for a in architectures or ()):
            return "seq_cls"
    task_type = str((state.config.get("task_type") if state is not None else None) or "").upper()
    return "seq_cls" if task_type == "SEQ_CLS" else "causal_lm"


def _modules_brought(adapter: AdapterState | Composition | None) -> set[str]:
    """Module paths (in the base model) whose weights the adapter saves whole, e.g. ``classifier``."""
    if adapter is None:
        return set()
    state = adapter.adapters[adapter.head_from] if isinstance(adapter, Composition) else adapter
    return {key.removeprefix("base_model.model.").rsplit(".", 1)[0] for key in state.saved_modules}


def load_model(
    name_or_path: str,
    *,
    task: Task,
    adapter: AdapterState | Composition | None = None,
    model_type: ModelType = "auto",
    tokenizer: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` to evaluate ``adapter`` on ``task``, from a local path or Hub id, in eval mode.

    Loads through :func:`adamergex.models.load_pretrained` (safetensors only, remote code only with
    ``trust_remote_code``). ``model_type``: ``causal_lm``, ``seq_cls`` (with the task's ``num_labels``) or
    ``auto`` (``seq_cls`` when the adapter's PEFT ``task_type`` is ``SEQ_CLS``). ``dtype``: ``auto`` (bfloat16 on a
    GPU that supports it, else float32), ``float32``, ``bfloat16`` or ``float16``. ``device``: default ``cuda``
    when available, else ``cpu``.

    Raises:
        ConfigError: the checkpoint lacks modules (a classifier head, a pooler) that the adapter does not bring,
            so they would be evaluated at their random initialisation; or a bad option.
    """
    import torch
    from transformers import AutoTokenizer


    kind = _model_type_for(adapter, model_type, name_or_path, trust_remote_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        torch_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    elif dtype in dtypes:
        torch_dtype = dtypes[dtype]
    else:
        raise ConfigError(f"dtype must be one of {['auto', *dtypes]}, got {dtype!r}")
    objective: Literal["sequence_classification", "causal_lm"] = (
        "sequence_classification" if kind == "seq_cls" else "causal_lm"
    )
    loaded, tok, new_modules = load_pretrained(
        name_or_path, task=task, objective=objective, trust_remote_code=trust_remote_code, dtype=torch_dtype
    )
    brought = _modules_brought(adapter)
    random = [m for m in new_modules if not any(m == b or m.startswith(b + ".") for b in brought)]
    if random:
        raise ConfigError(
            f"{name_or_path} has no weights for {random}, so they would be evaluated at random initialisation; "
            f"use an adapter that saves them (it saves {sorted(brought) or 'none'}) or a checkpoint that has them"
        )
    if tokenizer:
        tok = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=trust_remote_code)
    model: Any = loaded
    model.to(device)
    model.eval()
    return model, tok
