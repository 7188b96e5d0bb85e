"""The library call that trains an adapter (:func:`train_adapter`) or a shared reference head
(:func:`train_reference_head`); the guarantees it keeps are listed in :mod:`adamergex.training`."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..adapter_state import AdapterState
from ..errors import ConfigError, OutputExistsError
from ..models import objective_of, unwrap
from ..registry import ADAPTERS
from ..task import Task, get_task
from ..versions import package_versions
from ._data import TaskDataModule
from ._heads import ReferenceHead, _head_tensors, _sha256, head_modules
from ._model import prepare_model
from ._config import TrainingConfig
from ._system import AdapterTrainingModule, StallCheck, _fit, _label_entropy, _quiet_lightning

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["LIGHTNING_DIR", "train_adapter", "train_reference_head"]

LIGHTNING_DIR = "lightning"
"""Sub-directory of the output that holds Lightning's checkpoints (``checkpoints/``) and logs (``logs/``)."""

RESUMABLE = ("devices", "num_nodes", "accelerator", "strategy", "trainer_options", "compile", "loss_chunk_size",
             "progress_bar", "verbose", "log_every", "checkpoint_every", "val_every", "val_at_start", "val_split",
             "val_limit", "output", "overwrite", "resume", "data_files", "stack_on", "head")
"""Options that may differ between a run and its resumption (``resume``): where and how fast it runs (devices,
nodes, accelerator, strategy, extra Trainer arguments, compilation, loss chunking), what it shows and how often it
checkpoints, validates and logs, and where it is written. Every other option is part of the run's record and must
be the same, and so must the task, language, base model (name, class, revision), objective, resolved number of
steps, data fingerprint (``data_files`` are compared by content, not path) and the fingerprints of the shared head
and stacked adapters (compared instead of their paths). A different number of devices changes the global batch
(``batch_size × grad_accum × devices``), which the adapter's metadata records; it is allowed so that a run can
move to other hardware."""


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file; output (--output) must name a directory to write the adapter to")


def _run_record(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(record, sort_keys=True, default=str))
    return out


def _check_resume(ckpt_path: Path, record: Mapping[str, Any]) -> None:
    """Refuse to resume from ``ckpt_path`` unless it loads as a weights-only checkpoint written by a run with the
    same ``record`` (see :data:`RESUMABLE` for what may differ)."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"resume: checkpoint {ckpt_path} is not a weights-only checkpoint (it holds Python objects "
                          "that torch.load(weights_only=True) refuses to run); adamergex train never writes one. "
                          "Start afresh with --overwrite") from None
    except Exception as exc:  # a truncated or foreign file: say what torch said, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"resume: checkpoint {ckpt_path} cannot be loaded ({first}); start afresh with "
                          "--overwrite") from None
    stored = ckpt.get("adamergex", {}).get("run") if isinstance(ckpt, Mapping) else None
    if not stored:
        raise ConfigError(f"resume: checkpoint {ckpt_path} records no run settings (it predates this check), so "
                          "it cannot be checked to match this run; start afresh with --overwrite")
    old = json.loads(stored)
    diffs = [f"{k} was {old.get(k)!r}, now {record.get(k)!r}" for k in sorted(set(old) | set(record))
             if old.get(k) != record.get(k)]
    if diffs:
        raise ConfigError(f"resume: this run differs from the one that wrote {ckpt_path}: {'; '.join(diffs)}. "
                          "Resume with the same settings, or start afresh with --overwrite")


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
    config: TrainingConfig | None = None,
    **options: Any,
) -> AdapterState:
    """Train a new adapter on ``task`` in ``language`` and return it (also saved when ``run.output`` is given).

    Args:
        model: A Hugging Face model (causal LM, masked LM, sequence classifier or seq2seq LM); it is wrapped in
            place by PEFT.
        tokenizer: Its tokenizer.
        task: Registered task name or instance.
        language: Language code of the training data.
        config: The run's options by group (:class:`TrainingConfig`: adapter, data, optim, trainer, run, stall);
            default: all defaults.
        **options: Flat overrides of ``config`` by option name (``lr=1e-3, max_steps=50``), exactly as
            ``TrainingConfig.of(config, **options)``: the field docstrings of the groups document each one.

    Returns:
        The trained adapter; ``metadata`` holds task, language, base model and revision, seed, data fingerprint,
        every training option and the attempts, head and stacked adapters.

    Raises:
        UnknownNameError: unknown task, language, split or adapter type (listing what exists).
        ConfigError: bad options, or a data file lacking a column the task needs (named).
        OutputExistsError: ``output`` is not empty and neither ``overwrite`` nor ``resume`` was given.
        TrainingStalledError: the loss did not fall (``on_stall`` ``error``, or after the retries).
        NumericalError: the trained adapter holds NaN/Inf.
    """
    cfg = TrainingConfig.of(config, **options)
    state = _train(model, tokenizer, task, language, cfg, head_only=False)
    assert isinstance(state, AdapterState)  # internal invariant: head_only=False returns an adapter
    return state


def _train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    language: str | Sequence[str],
    cfg: TrainingConfig,
    *,
    head_only: bool,
) -> AdapterState | ReferenceHead:
    """The run behind :func:`train_adapter` and :func:`train_reference_head` (``head_only``: train the head)."""
    from ..io import save_adapter
    from ..loading import base_model_name

    ad, data, optim, hw, run = cfg.adapter, cfg.data, cfg.optim, cfg.trainer, cfg.run
    half = {p.dtype for p in model.parameters()} & {torch.bfloat16, torch.float16}
    if half and hw.precision.startswith("32"):
        raise ConfigError(f"the model's weights are {sorted(map(str, half))} but precision is {hw.precision!r}; use "
                          "'bf16-mixed' (or '16-mixed') so the float32 adapter runs under autocast")
    out = Path(run.output) if run.output is not None else None
    ckpt_path: Path | None = None
    staging: Path | None = None
    if out is not None:
        _check_output(out)
        if run.resume:
            ckpt_path = _last_checkpoint(out / LIGHTNING_DIR)
            if ckpt_path is None:
                raise ConfigError(f"resume=True but {out / LIGHTNING_DIR / 'checkpoints' / 'last.ckpt'} does not exist")
        elif out.exists() and any(out.iterdir()) and not run.overwrite:
            raise OutputExistsError(f"output {out} already exists and is not empty; pass overwrite (--overwrite) "
                                    "to replace it or resume (--resume) to continue its run")
        elif out.exists() and any(out.iterdir()):
            # overwrite: the new run is written beside the old one, which it replaces only once it has succeeded
            from ..io import staging_directory

            staging = staging_directory(out)

    pl.seed_everything(run.seed, workers=True, verbose=False)
    objective = ad.objective or objective_of(model)
    task_obj = get_task(task, **dict(data.task_options)) if isinstance(task, str) else task
    dm = TaskDataModule.from_config(task_obj, language, tokenizer, objective, data, seed=run.seed)
    if not head_only:
        ADAPTERS.get(ad.adapter)  # unknown adapter types fail before the data is read
    dm.setup("fit")
    max_steps = optim.max_steps or max(1, math.ceil(
        optim.epochs * dm.steps_per_epoch(world_size=hw.world_size, accumulate=optim.grad_accum)))

    head_info: dict[str, Any]
    if ad.head is not None:
        shared = ad.head if isinstance(ad.head, ReferenceHead) else ReferenceHead.load(ad.head)
        shared.apply(model)
        head_info = {"policy": "shared", "sha256": shared.fingerprint(), "modules": head_modules(model),
                     "source": shared.metadata.get("source")}
    elif objective == "sequence_classification":
        head_info = {"policy": "trained_with_adapter", "modules": head_modules(model)}
    else:
        head_info = {"policy": "base_model", "modules": head_modules(model) if objective != "seq2seq_lm" else [],
                     "sha256": _sha256(_head_tensors(model)) if objective != "seq2seq_lm" else None}

    stacked = _load_states(ad.stack_on)
    base_name = base_model_name(model)
    revision = run.base_model_revision or getattr(getattr(model, "config", None), "_commit_hash", None)
    record = _run_record({
        **{k: _jsonable(v) for k, v in cfg.flat().items() if k not in RESUMABLE},
        "head_only": head_only, "task": task_obj.name, "language": language, "base_model": base_name,
        "base_model_class": type(unwrap(model)).__name__, "base_model_revision": revision, "objective": objective,
        "resolved_max_steps": max_steps, "data_fingerprint": dm.fingerprint,
        "head_sha256": head_info.get("sha256") if head_info["policy"] == "shared" else None,
        "stack_on_sha256": [s.fingerprint() for s in stacked]})
    if ckpt_path is not None:
        _check_resume(ckpt_path, record)
    if head_only:
        for p in model.parameters():
            p.requires_grad_(False)
        for tensor in _head_tensors(model).values():
            tensor.requires_grad_(True)
        net: nn.Module = model
    else:
        net = prepare_model(model, adapter=ad.adapter, adapter_options=ad.adapter_options, objective=objective,
                            stack_on=stacked, adapter_name=ad.adapter_name, new_modules=ad.new_modules)
        if objective == "sequence_classification":
            saved = getattr(net.peft_config[ad.adapter_name], "modules_to_save", None)
            head_info["modules"] = list(saved or [])
    initial = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}

    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="adamergex-train-")
        root = Path(tmp.name)
    else:
        root = (staging or out) / LIGHTNING_DIR
    baseline = _label_entropy(dm.label_counts) if objective == "sequence_classification" else None
    stall = StallCheck(cfg.stall, baseline=baseline)
    attempts: list[dict[str, Any]] = []
    attempt_lr = optim.lr
    try:
        with _quiet_lightning(hw.verbose, base_dropout=ad.base_dropout):
            while True:
                # a retry scales the head's learning rate with the adapter's
                head_lr = optim.head_lr * attempt_lr / optim.lr if optim.head_lr is not None else None
                module = AdapterTrainingModule(net, objective, lr=attempt_lr, weight_decay=optim.weight_decay,
                                               scheduler=optim.scheduler, warmup_steps=optim.warmup_steps,
                                               loss_chunk_size=hw.loss_chunk_size, compile=hw.compile,
                                               head_lr=head_lr, base_dropout=ad.base_dropout,
                                               adapter_name=ad.adapter_name, run_record=record)
                trainer = _fit(module, dm, root=root, keep_files=out is not None, max_steps=max_steps,
                               ckpt_path=ckpt_path, checkpoint_every=run.checkpoint_every or max(1, max_steps // 10),
                               val_every=run.val_every, optim=optim, trainer=hw, callbacks=[stall],
                               val_at_start=run.val_at_start)
                verdict = stall.read(trainer)
                attempts.append({"lr": attempt_lr, "steps": trainer.global_step, "resumed_from":
                                 str(ckpt_path) if ckpt_path else None, **verdict})
                retry_lr = stall.next_lr(attempt_lr, attempts)  # raises when the run may not go on
                if retry_lr is None:
                    break
                attempt_lr = retry_lr
                with torch.no_grad():
                    for n, p in net.named_parameters():
                        if n in initial:
                            p.copy_(initial[n])
                ckpt_path = None
                if (root / "checkpoints").exists() and trainer.is_global_zero:
                    shutil.rmtree(root / "checkpoints")

            options = {k: _jsonable(v) for k, v in cfg.flat().items()
                       if k not in ("output", "overwrite", "resume", "progress_bar", "verbose", "stack_on", "head",
                         "data_files")}
            metadata = {
                "task": task_obj.name, "language": language, "base_model": base_name,
                "base_model_revision": revision, "seed": run.seed, "objective": objective,
                "data": {"fingerprint": dm.fingerprint, "items": len(dm.train_set or []), "split": data.train_split,
                         "source": _describe_source(data.data_files, task_obj), "limit": data.limit,
                         "max_length": dm.resolved_max_length},
                "training": {**options, "final_lr": attempt_lr, "final_head_lr": head_lr, "max_steps": max_steps,
                             "world_size": trainer.world_size,
                             "global_batch": data.batch_size * optim.grad_accum * trainer.world_size,
                             "strategy": type(trainer.strategy).__name__,
                             "attempts": attempts,
                             "framework": package_versions("torch", "transformers", "peft", "lightning"),
                             "validation": {**{k: float(v) for k, v in trainer.callback_metrics.items()
                                               if k.startswith("val/")},
                                            **({"initial": module.initial_validation}
                                               if module.initial_validation else {}),
                                            **({"curve": module.validation_curve}
                                               if module.validation_curve else {})}},
                "head": head_info,
                "stack_on": [{"kind": s.kind, "language": s.language, "task": s.task, "sha256": s.fingerprint()}
                             for s in stacked],
            }
            if head_only:
                head_state = ReferenceHead(base_model=base_name, metadata=metadata, tensors={
                    n: p.detach().to("cpu").clone() for n, p in _head_tensors(model).items()})
                if out is not None and trainer.is_global_zero:
                    _save_keeping(out, root, lambda d: head_state.save(d))
                return head_state
            state = _adapter_state(trainer, module, ad.adapter_name)
            state = state.replace(base_model=state.base_model or base_name, metadata={**state.metadata, **metadata})
            state.check_finite(where=f"adapter trained on {task_obj.name}/{language}")
            if out is not None and trainer.is_global_zero:
                _save_keeping(out, root, lambda d: save_adapter(state, d))
            return state
    finally:
        if tmp is not None:
            tmp.cleanup()
        if staging is not None:  # moved into the output on success; a failed run leaves nothing beside it
            shutil.rmtree(staging, ignore_errors=True)


def _jsonable(value: Any) -> Any:
    """An option as recorded in metadata: JSON types as they are, anything else (a Strategy object) by name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return type(value).__name__


def _save_keeping(out: Path, lightning_root: Path, write: Callable[[Path], Any]) -> None:
    """Replace ``out`` atomically with what ``write`` puts in a fresh directory, keeping ``out/lightning``."""
    from ..io import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        write(tmp)
        if lightning_root.exists():
            os.replace(lightning_root, tmp / LIGHTNING_DIR)


def _describe_source(data_files: Any, task: Task) -> Any:
    """Where the training data came from: the pinned Hub dataset, or the local paths (per split, per language)."""
    if data_files is None:
        return {"dataset_id": task.dataset_id, "revision": task.revision}
    if isinstance(data_files, (str, os.PathLike)):
        return str(data_files)
    if isinstance(data_files, Mapping):
        return {str(k): _describe_source(v, task) for k, v in data_files.items()}
    return [str(x) for x in data_files]


def train_reference_head(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    languages: str | Sequence[str],
    config: TrainingConfig | None = None,
    **options: Any,
) -> ReferenceHead:
    """Train the LM / MLM head alone, backbone frozen, on ``task`` in ``languages`` (examples concatenated).

    The result is passed as ``head=`` to :func:`train_adapter` for every reference adapter, so that each learns
    its language against one fixed head. ``config``/``options`` are :func:`train_adapter`'s (``max_steps``,
    ``lr``, ``data_files`` — with several languages a mapping from language to files —, ``output``...); the
    adapter group does not apply. Weights tied to the input embeddings stay frozen and are not part of the head.
    """
    cfg = TrainingConfig.of(config, **options)
    given = {k for k in ("adapter_options", "stack_on", "head") if getattr(cfg.adapter, k)}
    if given:
        raise ConfigError(f"train_reference_head trains no adapter; remove {', '.join(sorted(given))}")
    langs = [languages] if isinstance(languages, str) else list(languages)
    if not _head_tensors(model):
        raise ConfigError(f"{type(unwrap(model)).__name__} has no head parameters to train")
    head = _train(model, tokenizer, task, langs, cfg, head_only=True)
    assert isinstance(head, ReferenceHead)  # internal invariant: head_only=True returns the head
    return head
