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
from ..models import Objective, objective_of, unwrap
from ..registry import ADAPTERS
from ._heads import head_modules

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

__all__ = ["prepare_model"]


def _default_task_type(objective: Objective) -> str | None:
    return {"causal_lm": "CAUSAL_LM", "seq2seq_lm": "SEQ_2_SEQ_LM",
            "sequence_classification": "SEQ_CLS"}.get(objective)


def _covers(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer + ".")


def _modules_to_save(model: PreTrainedModel, given: Sequence[str] | None, new_modules: Sequence[str]) -> list[str]:
    """A classifier's ``modules_to_save``: ``given`` (default: the head modules but the pooler), plus each of
    ``new_modules`` that no entry covers. An entry inside another (``bert.pooler.dense`` beside ``bert.pooler``)
    is dropped: PEFT would wrap the inner module inside the outer copy and fail to attach the saved tensors."""
    if isinstance(given, str):
        given = [given]
    pooler = f"{getattr(unwrap(model), 'base_model_prefix', '')}.pooler"
    names = list(given) if given is not None else [m for m in head_modules(model) if m != pooler]
    for m in new_modules:
        if not any(_covers(n, m) for n in names):
            names.append(m)
    return [n for i, n in enumerate(names)
            if not any(j != i and _covers(o, n) and (o != n or j < i) for j, o in enumerate(names))]


def prepare_model(
    model: PreTrainedModel,
    *,
    adapter: str = "lora",
    adapter_options: Mapping[str, Any] | None = None,
    objective: Objective | None = None,
    stack_on: Sequence[AdapterState] = (),
    adapter_name: str = "default",
    new_modules: Sequence[str] = (),
) -> PeftModel:
    """Wrap ``model`` in a ``PeftModel`` with a new trainable adapter; everything else frozen.

    ``adapter_options`` are the PEFT config's own (``r``, ``lora_alpha``, ``target_modules``...; PEFT's
    per-architecture target defaults apply when absent). A sequence classifier's ``modules_to_save`` is the given
    list as it is, or by default its head modules other than the pooler (:func:`head_modules`: ``classifier``,
    ``score``); to either, the ``new_modules`` its checkpoint lacked (a pooler the checkpoint has no weights for)
    are added, since they would be random again at every load (:func:`_modules_to_save`). ``stack_on`` adapters are attached first, frozen, and stay
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
        options["modules_to_save"] = _modules_to_save(model, options.get("modules_to_save"), new_modules)
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


