"""The model side of adapter training: its objective, loading it by name, and wrapping it for PEFT.

Part of :mod:`adamergex.training`; import the public names from there. In the Lightning style guide's terms the
*model* is a Hugging Face model wrapped in a ``PeftModel`` by :func:`prepare_model`, and the *system* that trains it
is :class:`~adamergex.training.AdapterTrainingModule`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._encoding import OBJECTIVES, Objective
from ._batching import is_masked_lm, is_sequence_classifier
from ._heads import _unwrap, head_modules
from .adapter_state import AdapterState
from .errors import ConfigError
from .registry import ADAPTERS
from .task import Task

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["load_for_training", "objective_of", "prepare_model"]


def objective_of(model: nn.Module) -> Objective:
    """The training objective of a Hugging Face model (or ``PeftModel``), read from its class."""
    base = _unwrap(model)
    name = type(base).__name__
    if getattr(getattr(base, "config", None), "is_encoder_decoder", False):
        return "seq2seq_lm"
    if is_sequence_classifier(base):
        return "sequence_classification"
    if is_masked_lm(base):
        return "masked_lm"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal_lm"
    raise ConfigError(f"cannot tell how to train a {name}; pass objective= one of {', '.join(OBJECTIVES)}")


def _default_task_type(objective: Objective) -> str | None:
    return {"causal_lm": "CAUSAL_LM", "seq2seq_lm": "SEQ_2_SEQ_LM",
            "sequence_classification": "SEQ_CLS"}.get(objective)


def prepare_model(
    model: PreTrainedModel,
    *,
    adapter: str = "lora",
    adapter_options: Mapping[str, Any] | None = None,
    objective: Objective | None = None,
    stack_on: Sequence[AdapterState] = (),
    adapter_name: str = "default",
) -> PeftModel:
    """Wrap ``model`` in a ``PeftModel`` with a new trainable adapter; everything else frozen.

    ``adapter_options`` are the PEFT config's own (``r``, ``lora_alpha``, ``target_modules``...; PEFT's
    per-architecture target defaults apply when absent). Sequence classifiers add their head modules
    (:func:`head_modules`) to ``modules_to_save``. ``stack_on`` adapters are attached first, frozen, and stay
    active under the new one (MAD-X); their saved heads are dropped. Trainable tensors are float32 even when the
    base weights are half precision.

    Raises:
        UnknownNameError: unknown adapter type (listing the registered ones).
        ConfigError: a stacked adapter of another type, or nothing left to train.
    """
    from .loading import attach, peft_model
    from .strategy import Composition

    objective = objective or objective_of(model)
    typ = ADAPTERS.get(adapter)
    options = dict(adapter_options or {})
    if objective == "sequence_classification":
        saved = list(options.get("modules_to_save") or [])
        options["modules_to_save"] = saved + [m for m in head_modules(model) if m not in saved]
    if "task_type" not in options and _default_task_type(objective) is not None:
        options["task_type"] = _default_task_type(objective)
    config = typ.peft_config(**options)
    if not stack_on:
        wrapped = peft_model(model, config, adapter_name)
    else:
        for i, st in enumerate(stack_on):
            if st.kind != adapter:
                raise ConfigError(f"stack_on adapters must be {adapter!r} adapters like the one trained; "
                                  f"stack_on[{i}] is {st.kind!r}")
        # Their heads are dropped: the task adapter owns the head (PEFT would otherwise add the classifier to
        # every adapter's modules_to_save and fail on the missing tensors).
        frozen = {f"stack_{i}": st.replace(saved_modules={}, config={**st.config, "modules_to_save": None})
                  for i, st in enumerate(stack_on)}
        wrapped = attach(model, Composition(strategy="madx_stack", adapters=frozen, head_from="stack_0"))
        wrapped.add_adapter(adapter_name, config)
        wrapped.base_model.set_adapter([*frozen, adapter_name])  # type: ignore[operator]  # marks all of them trainable; undone below
    trainable = 0
    for name, p in wrapped.named_parameters():
        p.requires_grad_(adapter_name in name.split("."))
        if p.requires_grad:
            trainable += p.numel()
            if p.dtype != torch.float32:
                p.data = p.data.float()
    if trainable == 0:
        raise ConfigError(f"adapter {adapter!r} with options {options} adapts no module of {type(model).__name__}; "
                          "set target_modules")
    return wrapped


# -- loading by name --------------------------------------------------------------------------------------------------
def _objective_for_config(config: Any, task_kind: str) -> Objective:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq_lm"
    architectures = list(getattr(config, "architectures", None) or [])
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal_lm"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked_lm" if task_kind == "language_modeling" else "sequence_classification"
    return "causal_lm"


def load_for_training(
    name: str,
    *,
    task: Task,
    objective: Objective | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[str]]:
    """Load model and tokenizer ``name`` (Hub id or directory) with the Auto class the task needs.

    Safetensors only; ``trust_remote_code`` is off unless asked. Returns ``(model, tokenizer, new_modules)``,
    where ``new_modules`` are the modules the checkpoint lacked (initialised at random by this load).
    """
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification, AutoTokenizer)

    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(name, **common)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {name!r}: {exc}") from None
    objective = objective or _objective_for_config(config, task.kind)
    cls = {"causal_lm": AutoModelForCausalLM, "masked_lm": AutoModelForMaskedLM,
           "sequence_classification": AutoModelForSequenceClassification, "seq2seq_lm": AutoModelForSeq2SeqLM}[objective]
    kwargs: dict[str, Any] = {**common, "use_safetensors": True, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if objective == "sequence_classification":
        if task.num_labels < 2:
            raise ConfigError(f"task {task.name!r} declares num_labels={task.num_labels}; a classifier needs >= 2")
        kwargs["num_labels"] = task.num_labels
    try:
        model, info = cls.from_pretrained(name, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {name!r} as {cls.__name__}: {exc}") from None
    new_modules = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    return model, tokenizer, new_modules
