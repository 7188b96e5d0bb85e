"""What a Hugging Face model is and how to load one safely: shared by training and evaluation, free of Lightning.

* :func:`objective_of` reads a model's training objective from its class (``*ForCausalLM`` → ``causal_lm``...);
  :func:`is_sequence_classifier` and :func:`is_masked_lm` answer the two questions scoring asks.
* :func:`load_pretrained` loads model and tokenizer by Hub id or directory with the Auto class a task needs:
  safetensors only, ``trust_remote_code`` off unless asked, and it reports the modules the checkpoint lacked
  (initialised at random by this load) so that callers can refuse or save them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .task import Task

__all__ = [
    "OBJECTIVES",
    "Objective",
    "is_masked_lm",
    "is_sequence_classifier",
    "load_pretrained",
    "objective_of",
    "unwrap",
]

Objective = Literal["causal_lm", "masked_lm", "sequence_classification", "seq2seq_lm"]
OBJECTIVES: tuple[str, ...] = ("causal_lm", "masked_lm", "sequence_classification", "seq2seq_lm")


def unwrap(model: Any) -> Any:
    """The transformers model under a ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def is_sequence_classifier(model: Any) -> bool:
    """Whether ``model`` (or the model under a ``PeftModel``) is a ``*ForSequenceClassification`` model."""
    return type(unwrap(model)).__name__.endswith("ForSequenceClassification")


def is_masked_lm(model: Any) -> bool:
    """Whether ``model`` (or the model under a ``PeftModel``) is a ``*ForMaskedLM`` model."""
    return type(unwrap(model)).__name__.endswith("ForMaskedLM")


def objective_of(model: Any) -> Objective:
    """The training objective of a Hugging Face model (or ``PeftModel``), read from its class."""
    base = unwrap(model)
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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
"""Files a saved tokenizer consists of (``tokenizer.json`` alone, or a vocabulary / SentencePiece model)."""


def _check_tokenizer_files(name: str) -> None:
    """A local model directory must hold a tokenizer: say which files are missing before the weights load."""
    import os

    if not os.path.isdir(name):
        return
    vocabularies = [f for f in TOKENIZER_FILES if f != "tokenizer_config.json"]
    if not any(os.path.isfile(os.path.join(name, f)) for f in vocabularies):
        raise ConfigError(f"model directory {name} has no tokenizer: none of {', '.join(vocabularies)} is there. "
                          "Save the tokenizer beside the weights (tokenizer.save_pretrained(DIR))")


def load_pretrained(
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
    _check_tokenizer_files(name)
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
    except RuntimeError as exc:  # a saved classifier head of another size ("size mismatch for classifier...")
        if not ("size mismatch" in str(exc) or "ignore_mismatched_sizes" in str(exc)) \
                or objective != "sequence_classification":
            raise
        saved = getattr(config, "num_labels", "?")
        raise ConfigError(
            f"{name} has a classifier for {saved} labels but task {task.name!r} declares {task.num_labels}; the "
            "task's labels (its `labels` task option) must be the ones the classifier was trained on"
        ) from None
    mismatched = [k for k, *_ in (info.get("mismatched_keys") or [])]
    if mismatched and objective == "sequence_classification":  # transformers re-initialised a saved head
        saved = getattr(config, "num_labels", "?")
        raise ConfigError(
            f"{name} has a classifier for {saved} labels but task {task.name!r} declares {task.num_labels} "
            f"({', '.join(sorted(mismatched)[:2])} differ in shape); the task's labels (its `labels` task option) "
            "must be the ones the classifier was trained on"
        )
    new_modules = sorted({k.rsplit(".", 1)[0] for k in info.get("missing_keys", [])})
    return model, tokenizer, new_modules


