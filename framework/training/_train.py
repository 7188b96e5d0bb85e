"""The library call that trains an adapter (:func:`train_adapter`) or a shared reference head
(:func:`train_reference_head`); the guarantees it keeps are listed in :mod:`adamergex.training`."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn

from ..adapter_state import AdapterState
from ..errors import ConfigError, OutputExistsError, TrainingStalledError
from ..models import Objective, objective_of, unwrap
from ..registry import ADAPTERS
from ..task import DataFiles, Task, get_task
from ..versions import package_versions
from ._data import TaskDataModule
from ._heads import ReferenceHead, _head_tensors, _sha256, head_modules
from ._model import prepare_model
from ._system import AdapterTrainingModule, Schedule, _fit, _label_entropy, _quiet_lightning, _stall_verdict

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["LIGHTNING_DIR", "train_adapter", "train_reference_head"]

OnStall = Literal["retry", "error", "warn"]
LIGHTNING_DIR = "lightning"
"""Sub-directory of the output that holds Lightning's checkpoints (``checkpoints/``) and logs (``logs/``)."""


# -- the library call -----------------------------------------------------------------------------------------------
def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise ConfigError(f"{name} must be positive, got {value!r}")


def _load_states(items: Sequence[AdapterState | str | os.PathLike[str]]) -> list[AdapterState]:
    from ..io import load_adapter

    return [s if isinstance(s, AdapterState) else load_adapter(s) for s in items]


def _last_checkpoint(root: Path) -> Path | None:
    last = root / "checkpoints" / "last.ckpt"
    return last if last.exists() else None


def _adapter_state(trainer: pl.Trainer, module: AdapterTrainingModule, adapter_name: str) -> AdapterState:
    """The trained adapter as a state (gathering full tensors first under sharding strategies such as FSDP)."""
    from lightning.pytorch.strategies import FSDPStrategy

    from ..io import state_from_peft_model

    name = type(trainer.strategy).__name__
    if not (isinstance(trainer.strategy, FSDPStrategy) or name.startswith(("DeepSpeed", "ModelParallel"))):
        return state_from_peft_model(module.model, adapter_name=adapter_name)  # type: ignore[arg-type]
    full = trainer.strategy.lightning_module_state_dict()  # collective: every rank calls it
    return _state_from_full_state_dict(module.model, full, adapter_name)  # type: ignore[arg-type]


def _state_from_full_state_dict(
    peft_model: PeftModel, full: Mapping[str, torch.Tensor], adapter_name: str
) -> AdapterState:
    """The adapter's state from a gathered (FSDP) state dict: wrapper prefixes are removed, PEFT selects the
    adapter's tensors, and :func:`adamergex.io.state_from_peft_model` does the rest."""
    from peft import get_peft_model_state_dict

    from ..io import state_from_peft_model

    clean = {}
    for key, value in full.items():
        key = key[len("model."):] if key.startswith("model.") else key
        for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
            key = key.replace(wrapper, "")
        clean[key] = value
    weights = get_peft_model_state_dict(peft_model, state_dict=clean, adapter_name=adapter_name)
    return state_from_peft_model(peft_model, adapter_name=adapter_name, state_dict=weights)


def train_adapter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    language: str,
    *,
    adapter: str = "lora",
    adapter_options: Mapping[str, Any] | None = None,
    objective: Objective | None = None,
    data_files: DataFiles | None = None,
    task_options: Mapping[str, Any] | None = None,
    train_split: str = "train",
    val_split: str | None = None,
    limit: int | None = None,
    val_limit: int | None = None,
    max_steps: int | None = None,
    epochs: float = 1.0,
    lr: float = 1e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    group_by_length: int = 0,
    max_length: int | None = None,
    weight_decay: float = 0.0,
    scheduler: Schedule = "linear",
    warmup_steps: int = 0,
    gradient_clip: float | None = 1.0,
    precision: str = "32-true",
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: Any = "auto",
    compile: bool = False,
    loss_chunk_size: int = 2048,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int | None = None,
    val_every: int | None = None,
    log_every: int = 10,
    stack_on: Sequence[AdapterState | str | os.PathLike[str]] = (),
    head: ReferenceHead | str | os.PathLike[str] | None = None,
    on_stall: OnStall = "retry",
    max_retries: int = 2,
    retry_lr_factor: float = 0.3,
    min_loss_drop: float = 0.01,
    stall_min_steps: int = 20,
    base_model_revision: str | None = None,
    progress_bar: bool = False,
    trainer_options: Mapping[str, Any] | None = None,
    adapter_name: str = "default",
    _train_head: bool = False,
) -> AdapterState:
    """Train a new adapter on ``task`` in ``language`` and return it (also saved when ``output`` is given).

    Args:
        model: A Hugging Face model (causal LM, masked LM, sequence classifier or seq2seq LM); it is wrapped in
            place by PEFT.
        tokenizer: Its tokenizer.
        task: Registered task name or instance.
        language: Language code of the training data.
        adapter: Registered adapter type (``lora``, ``ia3``...).
        adapter_options: The PEFT config's own options (``r``, ``target_modules``...).
        objective: Overrides :func:`objective_of`.
        data_files: Local data in the task's schema (path, or paths per split) instead of the Hub.
        task_options: Field overrides of the task (``get_task(name, **task_options)``).
        train_split, val_split: Splits to train and validate on (``val_split=None``: no validation).
        limit, val_limit: Seeded subsets of the raw examples.
        max_steps: Optimiser steps; ``None``: ``epochs`` passes over the training items.
        epochs: Used only when ``max_steps`` is ``None``.
        lr: Peak learning rate. batch_size: items per device per micro-batch. grad_accum: micro-batches per step.
        group_by_length: Draw batches from length-sorted windows of this many global micro-batches (0: off; see
            :class:`~adamergex.data.StreamBatchSampler`): less padding for items of mixed length.
        max_length: Tokens per item (``None``: the task's ``chunk_length`` or 512).
        weight_decay, scheduler, warmup_steps, gradient_clip: Optimisation settings.
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``); half-precision "true" modes
            are refused because they would train the adapter in half precision.
        accelerator, devices, num_nodes, strategy: Lightning's own (``strategy="ddp"``, ``"fsdp"``...).
        compile: ``torch.compile`` each transformer block and the loss.
        loss_chunk_size: Rows of logits alive at once in the fused loss.
        seed: Seeds initialisation, data order and masking.
        output: Adapter directory to write (Lightning files go to ``output/lightning``); ``None``: not saved.
        overwrite: Replace a non-empty ``output``.
        resume: Continue from ``output/lightning/checkpoints/last.ckpt``.
        checkpoint_every: Optimiser steps between checkpoints (default: a tenth of the run; needs ``output``).
        val_every: Optimiser steps between validations (default: once, at the end).
        log_every: Steps between logger writes.
        stack_on: Frozen adapters (states or directories) active under the new one (MAD-X).
        head: A shared reference head (or its directory) loaded and frozen before training.
        on_stall: What a loss that does not fall leads to: ``retry`` at ``lr × retry_lr_factor`` (up to
            ``max_retries`` times, then an error), ``error``, or ``warn``.
        min_loss_drop, stall_min_steps: Stall-check threshold and the shortest run it applies to.
        base_model_revision: Recorded in the metadata (default: the commit hash transformers loaded).
        progress_bar: Show Lightning's progress bar and start-up messages.
        trainer_options: Extra ``lightning.Trainer`` arguments (``callbacks`` are added to ours).
        adapter_name: PEFT adapter name while training.

    Returns:
        The trained adapter; ``metadata`` holds task, language, base model and revision, seed, data fingerprint,
        training configuration and attempts, head and stacked adapters.

    Raises:
        UnknownNameError: unknown task, language, split or adapter type (listing what exists).
        ConfigError: bad options, or a data file lacking a column the task needs (named).
        OutputExistsError: ``output`` is not empty and neither ``overwrite`` nor ``resume`` was given.
        TrainingStalledError: the loss did not fall (``on_stall`` ``error``, or after the retries).
        NumericalError: the trained adapter holds NaN/Inf.
    """
    from ..io import save_adapter
    from ..loading import base_model_name

    _check_positive(batch_size=batch_size, grad_accum=grad_accum, lr=lr, epochs=epochs, max_steps=max_steps,
                    checkpoint_every=checkpoint_every, val_every=val_every, log_every=log_every,
                    loss_chunk_size=loss_chunk_size, retry_lr_factor=retry_lr_factor)
    if on_stall not in ("retry", "error", "warn"):
        raise ConfigError(f"on_stall must be one of retry, error, warn; got {on_stall!r}")
    if precision in ("bf16-true", "16-true", "bf16", "16", "half"):
        raise ConfigError(f"precision {precision!r} would train the adapter in half precision; use 'bf16-mixed' or "
                          "'16-mixed' (load the base model in half precision to save memory)")
    half = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
    if half and precision.startswith("32"):
        raise ConfigError(f"the model's weights are {sorted(map(str, half))} but precision is {precision!r}; use "
                          "'bf16-mixed' (or '16-mixed') so the float32 adapter runs under autocast")
    if resume and output is None:
        raise ConfigError("resume=True needs output= (checkpoints live in output/lightning/checkpoints)")
    out = Path(output) if output is not None else None
    ckpt_path: Path | None = None
    if out is not None:
        if resume:
            ckpt_path = _last_checkpoint(out / LIGHTNING_DIR)
            if ckpt_path is None:
                raise ConfigError(f"resume=True but {out / LIGHTNING_DIR / 'checkpoints' / 'last.ckpt'} does not exist")
        elif out.exists() and any(out.iterdir()) and not overwrite:
            raise OutputExistsError(f"output {out} already exists and is not empty; pass overwrite (--overwrite) "
                                    "to replace it or resume (--resume) to continue its run")
        elif overwrite and (out / LIGHTNING_DIR).exists():
            shutil.rmtree(out / LIGHTNING_DIR)

    pl.seed_everything(seed, workers=True, verbose=False)
    objective = objective or objective_of(model)
    task_obj = get_task(task, **dict(task_options or {})) if isinstance(task, str) else task
    dm = TaskDataModule(task_obj, language, tokenizer, objective, data_files=data_files, batch_size=batch_size,
                        max_length=max_length, train_split=train_split, val_split=val_split, limit=limit,
                        val_limit=val_limit, seed=seed, group_by_length=group_by_length)
    ADAPTERS.get(adapter)  # unknown adapter types fail before the data is read
    dm.setup("fit")
    world = (int(devices) if str(devices).isdigit() else 1) * num_nodes
    if max_steps is None:
        max_steps = max(1, math.ceil(epochs * dm.steps_per_epoch(world_size=world, accumulate=grad_accum)))

    head_info: dict[str, Any]
    if head is not None:
        shared = head if isinstance(head, ReferenceHead) else ReferenceHead.load(head)
        shared.apply(model)
        head_info = {"policy": "shared", "sha256": shared.fingerprint(), "modules": head_modules(model),
                     "source": shared.metadata.get("source")}
    elif objective == "sequence_classification":
        head_info = {"policy": "trained_with_adapter", "modules": head_modules(model)}
    else:
        head_info = {"policy": "base_model", "modules": head_modules(model) if objective != "seq2seq_lm" else [],
                     "sha256": _sha256(_head_tensors(model)) if objective != "seq2seq_lm" else None}

    stacked = _load_states(stack_on)
    base_name = base_model_name(model)
    revision = base_model_revision or getattr(getattr(model, "config", None), "_commit_hash", None)
    if _train_head:
        for p in model.parameters():
            p.requires_grad_(False)
        for tensor in _head_tensors(model).values():
            tensor.requires_grad_(True)
        net: nn.Module = model
    else:
        net = prepare_model(model, adapter=adapter, adapter_options=adapter_options, objective=objective,
                            stack_on=stacked, adapter_name=adapter_name)
    initial = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}

    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="adamergex-train-")
        root = Path(tmp.name)
    else:
        root = out / LIGHTNING_DIR
    baseline = _label_entropy(dm.label_counts) if objective == "sequence_classification" else None
    attempts: list[dict[str, Any]] = []
    attempt_lr = lr
    try:
        with _quiet_lightning(progress_bar):
            while True:
                module = AdapterTrainingModule(net, objective, lr=attempt_lr, weight_decay=weight_decay,
                                               scheduler=scheduler, warmup_steps=warmup_steps,
                                               loss_chunk_size=loss_chunk_size, compile=compile)
                trainer = _fit(module, dm, root=root, keep_files=out is not None, max_steps=max_steps,
                               ckpt_path=ckpt_path, checkpoint_every=checkpoint_every or max(1, max_steps // 10),
                               val_every=val_every, grad_accum=grad_accum, gradient_clip=gradient_clip,
                               precision=precision, accelerator=accelerator, devices=devices,
                               num_nodes=num_nodes, strategy=strategy, log_every=log_every,
                               progress_bar=progress_bar, trainer_options=trainer_options or {})
                summary = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items()
                           if k.startswith("adamergex/")}
                verdict = _stall_verdict(summary, baseline=baseline, min_drop=min_loss_drop,
                                         min_steps=stall_min_steps, steps=trainer.global_step)
                attempts.append({"lr": attempt_lr, "steps": trainer.global_step, "resumed_from":
                                 str(ckpt_path) if ckpt_path else None, **verdict})
                if not verdict.get("stalled"):
                    break
                message = (f"training loss did not fall at lr={attempt_lr:g}: mean {verdict['initial_loss']:.4f} over "
                           f"the first steps, {verdict['final_loss']:.4f} over the last"
                           + (f" (a majority-class predictor scores {baseline:.4f})" if baseline is not None else ""))
                if on_stall == "warn":
                    warnings.warn(f"{message}; the adapter is saved anyway because on_stall='warn'", stacklevel=2)
                    break
                if on_stall == "error" or len(attempts) > max_retries:
                    raise TrainingStalledError(f"{message}; attempts: {json.dumps(attempts, default=str)}. Lower "
                                               "the learning rate, train longer, or check the data and labels")
                warnings.warn(f"{message}; retrying at lr={attempt_lr * retry_lr_factor:g} "
                              "(set on_stall='error' to stop instead)", stacklevel=2)
                attempt_lr *= retry_lr_factor
                with torch.no_grad():
                    for n, p in net.named_parameters():
                        if n in initial:
                            p.copy_(initial[n])
                ckpt_path = None
                if (root / "checkpoints").exists() and trainer.is_global_zero:
                    shutil.rmtree(root / "checkpoints")

            metadata = {
                "task": task_obj.name, "language": language, "base_model": base_name,
                "base_model_revision": revision, "seed": seed, "objective": objective,
                "data": {"fingerprint": dm.fingerprint, "items": len(dm.train_set or []), "split": train_split,
                         "source": _describe_source(data_files, task_obj), "limit": limit,
                         "max_length": dm.resolved_max_length},
                "training": {"adapter": adapter, "adapter_options": dict(adapter_options or {}), "lr": lr,
                             "final_lr": attempt_lr, "max_steps": max_steps, "batch_size": batch_size,
                             "grad_accum": grad_accum, "group_by_length": group_by_length,
                             "world_size": trainer.world_size,
                             "global_batch": batch_size * grad_accum * trainer.world_size,
                             "weight_decay": weight_decay, "scheduler": scheduler, "warmup_steps": warmup_steps,
                             "gradient_clip": gradient_clip, "precision": precision,
                             "strategy": type(trainer.strategy).__name__, "compile": compile,
                             "attempts": attempts,
                             "framework": package_versions("torch", "transformers", "peft", "lightning"),
                             "validation": {k: float(v) for k, v in trainer.callback_metrics.items()
                                            if k.startswith("val/")}},
                "head": head_info,
                "stack_on": [{"kind": s.kind, "language": s.language, "task": s.task, "sha256": s.fingerprint()}
                             for s in stacked],
            }
            if _train_head:
                head_state = ReferenceHead(base_model=base_name, metadata=metadata, tensors={
                    n: p.detach().to("cpu").clone() for n, p in _head_tensors(model).items()})
                if out is not None and trainer.is_global_zero:
                    _save_keeping(out, root, lambda d: head_state.save(d))
                return head_state  # type: ignore[return-value]
            state = _adapter_state(trainer, module, adapter_name)
            state = state.replace(base_model=state.base_model or base_name, metadata={**state.metadata, **metadata})
            state.check_finite(where=f"adapter trained on {task_obj.name}/{language}")
            if out is not None and trainer.is_global_zero:
                _save_keeping(out, root, lambda d: save_adapter(state, d))
            return state
    finally:
        if tmp is not None:
            tmp.cleanup()


def _save_keeping(out: Path, lightning_root: Path, write: Callable[[Path], Any]) -> None:
    """Replace ``out`` atomically with what ``write`` puts in a fresh directory, keeping ``out/lightning``."""
    from ..io import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        write(tmp)
        if lightning_root.exists():
            os.replace(lightning_root, tmp / LIGHTNING_DIR)


def _describe_source(data_files: DataFiles | None, task: Task) -> Any:
    if data_files is None:
        return {"dataset_id": task.dataset_id, "revision": task.revision}
    if isinstance(data_files, (str, os.PathLike)):
        return str(data_files)
    return {k: (str(v) if isinstance(v, (str, os.PathLike)) else [str(x) for x in v]) for k, v in data_files.items()}


def train_reference_head(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    languages: str | Sequence[str],
    **options: Any,
) -> ReferenceHead:
    """Train the LM / MLM head alone, backbone frozen, on ``task`` in ``languages`` (examples concatenated).

    The result is passed as ``head=`` to :func:`train_adapter` for every reference adapter, so that each learns
    its language against one fixed head. ``options`` are :func:`train_adapter`'s (``max_steps``, ``lr``,
    ``data_files`` — with several languages a mapping from language to files —, ``output``...), minus the
    adapter ones. Weights tied to the input embeddings stay frozen and are not part of the head.
    """
    for key in ("adapter", "adapter_options", "stack_on", "head"):
        if key in options:
            raise ConfigError(f"train_reference_head trains no adapter; remove {key}=")
    langs = [languages] if isinstance(languages, str) else list(languages)
    if not _head_tensors(model):
        raise ConfigError(f"{type(unwrap(model)).__name__} has no head parameters to train")
    return train_adapter(model, tokenizer, task, langs, _train_head=True, **options)  # type: ignore[arg-type, return-value]

