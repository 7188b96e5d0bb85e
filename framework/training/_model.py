"""The model side of adapter training: wrapping a Hugging Face model for PEFT with one new trainable adapter.

Part of :mod:`adamergex.training`; import the public names from there. In the Lightning style guide's terms the
*model* is a Hugging Face model wrapped in a ``PeftModel`` by :func:`prepare_model`, and the *system* that trains it
is :class:`~adamergex.training.AdapterTrainingModule`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..adapter_state import AdapterState
from ..errors import ConfigError
from ..models import Objective, objective_of
from ..registry import ADAPTERS
from ._heads import head_modules

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

__all__ = ["prepare_model"]


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
    from ..loading import attach, peft_model
    from ..strategy import Composition

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


