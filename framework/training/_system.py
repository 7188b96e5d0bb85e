"""The Lightning system that trains an adapter (loss, optimiser, schedule, logging, checkpoint contents), the
stall check that reads its loss summary, and the ``lightning.Trainer`` that fits it.

Part of :mod:`adamergex.training`; import :class:`AdapterTrainingModule` from there. That module's docstring lists
the guarantees kept here (fused loss with a fallback, global-token normalisation under DDP, RNG states in
checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, TrainingStalledError
from ..models import OBJECTIVES, Objective, unwrap
from ._config import BaseDropout, OptimConfig, Schedule, StallConfig, TrainerConfig
from ._data import TaskDataModule
from ._encoding import IGNORE_INDEX
from ._heads import _backbone, head_modules
from ._losses import _ce_chunk, _head_cross_entropy, _shift_left, linear_cross_entropy

__all__ = ["AdapterTrainingModule", "Schedule", "StallCheck", "StepProgressBar"]


def _repeated_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The longest ``ModuleList`` of same-class modules (the transformer layers)."""
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best):
                best = module
    return best


def _rng_states() -> dict[str, Any]:
    """RNG states in types ``torch.load(weights_only=True)`` accepts (tensors, lists, numbers, strings)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
                              "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _module_modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def _restore_modes(model: nn.Module, modes: Mapping[str, bool]) -> None:
    for name, m in model.named_modules():
        if name in modes:
            m.training = modes[name]


def trains_in_eval_base(name: str, module: nn.Module, adapter_name: str) -> bool:
    """Whether module ``name`` stays in train mode when the base model's dropout is off: the adapter's own
    modules (a path component is the adapter's name: ``lora_dropout.default``, ``classifier.modules_to_save.default``),
    the PEFT layers that wrap them (LoHa's module dropout and DoRA read the wrapper's mode), and modules whose own
    parameters train (a reference head)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (adapter_name in name.split(".") or isinstance(module, BaseTunerLayer)
            or any(p.requires_grad for p in module.parameters(recurse=False)))


# -- the system -----------------------------------------------------------------------------------------------------
class AdapterTrainingModule(pl.LightningModule):
    """Trains whatever parameters of ``model`` require grad (the adapter and its saved heads).

    Args:
        model: A ``PeftModel`` from :func:`prepare_model` (or any HF model whose trainable parameters are set).
        objective: How the loss is computed (see :mod:`adamergex.data`).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        scheduler: Learning-rate shape after warm-up, per optimiser step.
        warmup_steps: Linear warm-up steps.
        loss_chunk_size: Rows of logits alive at once in the fused loss.
        fused_loss: Compute LM losses from the backbone's hidden states (see the module docstring); models whose
            head the check at fit start cannot reproduce fall back to the plain forward.
        compile: ``torch.compile`` each transformer block and the loss chunk (fit start).
        stall_window: Fraction of the run whose mean loss opens and closes the stall check.
        head_lr: Peak learning rate of the parameters of modules trained whole (``modules_to_save``); default
            ``lr``.
        base_dropout: ``"on"``: every module in train mode during training steps; ``"off"``: the base model in
            eval mode (its dropout off) and only the adapter's modules in train mode (:func:`trains_in_eval_base`).
            Set at fit start, after which Lightning keeps module modes (restoring them after each validation).
        adapter_name: The PEFT adapter being trained (whose modules count as the adapter's).
        run_record: The settings that determine the run's result, stored in every checkpoint so that a resumed
            run can be checked against them.

    Raises:
        ConfigError: no model, an unknown objective or schedule.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        objective: Objective = "causal_lm",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: Schedule = "linear",
        warmup_steps: int = 0,
        loss_chunk_size: int = 2048,
        fused_loss: bool = True,
        compile: bool = False,
        stall_window: float = 0.2,
        head_lr: float | None = None,
        base_dropout: BaseDropout = "off",
        adapter_name: str = "default",
        run_record: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if model is None:
            raise ConfigError("AdapterTrainingModule needs model= (a PeftModel from prepare_model)")
        if objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {objective!r}; available: {', '.join(OBJECTIVES)}")
        if scheduler not in ("linear", "cosine", "constant"):
            raise ConfigError(f"unknown scheduler {scheduler!r}; available: constant, cosine, linear")
        if not lr > 0:
            raise ConfigError(f"lr must be positive, got {lr}")
        if head_lr is not None and not head_lr > 0:
            raise ConfigError(f"head_lr must be positive, got {head_lr}")
        if base_dropout not in ("off", "on"):
            raise ConfigError(f"base_dropout must be off or on; got {base_dropout!r}")
        self.model = model
        self.objective: Objective = objective
        self.lr, self.weight_decay, self.betas = lr, weight_decay, betas
        self.scheduler, self.warmup_steps = scheduler, warmup_steps
        self.loss_chunk_size, self.fused_loss, self.compile_model = loss_chunk_size, fused_loss, compile
        self.stall_window = stall_window
        self.head_lr, self.base_dropout, self.adapter_name = head_lr, base_dropout, adapter_name
        self.run_record = dict(run_record or {})
        self.initial_validation: dict[str, float] = {}
        self.validation_curve: list[dict[str, float]] = []
        """``{"step", "loss"}`` per validation run (the one before the first step included): the held-out curve that
        shows whether a budget converged, recorded under ``training.validation.curve``."""
        self.strict_loading = False  # checkpoints hold the trainable tensors only (see on_save_checkpoint)
        self._fused: bool | None = None
        self._chunk_fn: Callable[..., Any] = _ce_chunk
        self._prepared = False
        self.loss_history: list[torch.Tensor] = []
        self._val: list[torch.Tensor] = []

    # -- forward ----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the fused loss against the model's own logits, then compile if asked (once)."""
        if self._prepared:
            return
        self._prepared = True
        self._fused = self.fused_loss and self.objective in ("causal_lm", "masked_lm") and self._fused_matches()
        if self.compile_model:
            blocks = _repeated_blocks(unwrap(self.model))
            for block in blocks or []:
                if getattr(block, "_compiled_call_impl", None) is None:  # already compiled by an earlier module
                    block.compile()
            self._chunk_fn = torch.compile(_ce_chunk)

    def _lm_parts(self) -> tuple[nn.Module, nn.Module]:
        base = unwrap(self.model)
        if self.objective == "causal_lm":
            head = base.get_output_embeddings()
        else:
            names = [n for n in head_modules(base)]
            head = base.get_submodule(names[0]) if len(names) == 1 else None
        if head is None:
            raise ConfigError(f"{type(base).__name__} has no single LM head module")
        return _backbone(base), head

    def _fused_matches(self) -> bool:
        """Whether head(backbone(x)) reproduces the model's logits on a short input (no logit soft-capping,
        scaling or other head-side step that the fused loss would miss)."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel) and self.model.peft_config[self.model.active_adapter].is_prompt_learning:
            return False
        try:
            backbone, head = self._lm_parts()
        except ConfigError:
            return False
        vocab = unwrap(self.model).config.vocab_size
        device = next(self.model.parameters()).device
        ids = (torch.arange(8, device=device)[None, :] * 7919 + 3) % vocab
        extra = {"use_cache": False} if self.objective == "causal_lm" else {}
        # Eager even where blocks are compiled already: a no-grad call would add a compiled variant per block.
        stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else (
            contextlib.nullcontext())
        modes = _module_modes(self.model)
        self.model.eval()
        try:
            with torch.no_grad(), stance:
                full = self.model(input_ids=ids, **extra).logits.float()
                mine = head(backbone(input_ids=ids, **extra)[0]).float()
        except Exception:  # any model whose parts cannot be called apart keeps the plain path
            return False
        finally:
            _restore_modes(self.model, modes)
        scale = full.abs().max().clamp_min(1.0)
        return bool(full.shape == mine.shape and ((full - mine).abs().max() / scale) < 1e-2)

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(summed loss, number of targets, predictions or None)`` of one batch (predictions: classifiers)."""
        self.prepare()
        labels = batch["labels"]
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if self.objective == "sequence_classification":
            logits = self.model(**inputs).logits  # (B, C)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            return loss, torch.tensor(labels.numel(), device=labels.device), logits.argmax(-1)
        if self.objective == "seq2seq_lm":
            logits = self.model(**inputs, labels=labels).logits  # (B, T, V); HF builds decoder inputs from labels
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="sum")
            return loss, (labels != IGNORE_INDEX).sum(), None
        if self.objective == "causal_lm":
            labels = _shift_left(labels)
        count = (labels != IGNORE_INDEX).sum()
        if not self._fused:
            logits = self.model(**inputs).logits  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="sum")
            return loss, count, None
        backbone, head = self._lm_parts()
        extra = {"use_cache": False} if self.objective == "causal_lm" else {}
        hidden = backbone(**inputs, **extra)[0].flatten(0, 1)  # (B·T, H)
        flat = labels.flatten()
        if "attention_mask" in batch or self.objective == "masked_lm":
            # padded or masked batches: drop positions without a target before the head (MLM: ~85% of them)
            keep = (flat != IGNORE_INDEX).nonzero().squeeze(1)
            hidden, flat = hidden.index_select(0, keep), flat.index_select(0, keep)
        if type(head) is nn.Linear:
            loss = linear_cross_entropy(hidden, head.weight, head.bias, flat, chunk_size=self.loss_chunk_size,
                                        chunk_fn=self._chunk_fn)
        else:  # an MLM head, or an LM head wrapped by the adapter
            loss = _head_cross_entropy(head, hidden, flat, self.loss_chunk_size)
        return loss, count, None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of ``batch`` on this process."""
        loss, count, _ = self.compute_loss(batch)
        return loss / count.clamp_min(1)

    # -- training ---------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.prepare()
        self.set_train_modes()

    def set_train_modes(self) -> None:
        """Put every module in the mode ``base_dropout`` asks for during training steps (see the class doc)."""
        self.train()
        if self.base_dropout == "off":
            for name, m in self.model.named_modules():
                m.training = trains_in_eval_base(name, m, self.adapter_name)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss_sum, count, _ = self.compute_loss(batch)
        world = self.trainer.world_size
        if world > 1:
            # Normalise by the global number of targets: DDP then averages to the single-process gradient.
            stats = self.trainer.strategy.reduce(torch.stack([loss_sum.detach(), count.to(loss_sum.dtype)]),
                                                 reduce_op="sum")
            loss = loss_sum * world / stats[1].clamp_min(1)
            mean = stats[0] / stats[1].clamp_min(1)
        else:
            loss = loss_sum / count.clamp_min(1)
            mean = loss.detach()
        self.loss_history.append(mean.detach())
        self.log("train/loss", mean, on_step=True, prog_bar=True, batch_size=int(batch["input_ids"].shape[0]))
        return loss

    def loss_summary(self) -> dict[str, float]:
        """Mean training loss over the first and last ``stall_window`` of the micro-batches, and their count."""
        if not self.loss_history:
            return {"micro_batches": 0.0}
        losses = torch.stack([t.float().cpu() for t in self.loss_history])
        w = max(1, int(len(losses) * self.stall_window))
        return {"micro_batches": float(len(losses)), "initial_loss": float(losses[:w].mean()),
                "final_loss": float(losses[-w:].mean())}

    # -- validation -------------------------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, count, preds = self.compute_loss(batch)
        correct = (preds == batch["labels"]).sum() if preds is not None else torch.zeros((), device=loss.device)
        self._val.append(torch.stack([loss.detach().float(), count.float(), correct.float()]))

    def on_validation_epoch_end(self) -> None:
        total = torch.stack(self._val).sum(0) if self._val else torch.zeros(3, device=self.device)
        self._val = []
        total = self.trainer.strategy.reduce(total, reduce_op="sum") if self.trainer.world_size > 1 else total
        loss = total[0] / total[1].clamp_min(1)
        self.validation_curve.append({"step": int(self.trainer.global_step), "loss": float(loss)})
        self.log("val/loss", loss, prog_bar=True)
        if self.objective == "sequence_classification":
            self.log("val/accuracy", total[2] / total[1].clamp_min(1), prog_bar=True)
        else:
            self.log("val/perplexity", torch.exp(loss))

    # -- checkpoints ------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only what training changes: the base model can be billions of frozen parameters.
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["adamergex"] = {"rng": _rng_states(), "loss_history": [float(t) for t in self.loss_history],
                                   "run": json.dumps(self.run_record, sort_keys=True),
                                   "initial_validation": dict(self.initial_validation),
                                   "validation_curve": list(self.validation_curve)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("adamergex", {})
        if "rng" in extra:
            _set_rng_states(extra["rng"])
        self.loss_history = [torch.tensor(v) for v in extra.get("loss_history", [])]
        self.initial_validation = {k: float(v) for k, v in extra.get("initial_validation", {}).items()}
        self.validation_curve = [dict(p) for p in extra.get("validation_curve", [])]

    # -- optimiser --------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # Modules trained whole (PEFT's modules_to_save copies: classifier, pooler) form their own group at head_lr.
        head = [p for n, p in self.named_parameters() if p.requires_grad and "modules_to_save" in n.split(".")]
        rest = [p for n, p in self.named_parameters() if p.requires_grad and "modules_to_save" not in n.split(".")]
        groups = [{"params": rest, "lr": self.lr, "name": "adapter"}]
        if head:
            groups.append({"params": head, "lr": self.head_lr if self.head_lr is not None else self.lr,
                           "name": "head"})
        # foreach, not fused: Lightning refuses gradient clipping with optimisers that unscale internally.
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr,
                                      weight_decay=self.weight_decay, betas=self.betas, foreach=True)
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else int(
            self.trainer.estimated_stepping_batches)
        warmup, kind = self.warmup_steps, self.scheduler

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            if kind == "linear":
                return 1.0 - progress
            if kind == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# -- stall detection ------------------------------------------------------------------------------------------------
def _label_entropy(counts: Mapping[int, int]) -> float | None:
    total = sum(counts.values())
    if total == 0 or len(counts) < 2:
        return None
    return -sum(c / total * math.log(c / total) for c in counts.values() if c)


def _stall_verdict(summary: Mapping[str, float], *, baseline: float | None, min_drop: float, min_steps: int,
                   steps: int) -> dict[str, Any]:
    """Whether the loss fell: the closing mean must be below ``(1 − min_drop)`` × the opening mean (and, for
    classifiers, × the label entropy, the loss of a predictor stuck at the class prior)."""
    if steps < min_steps or "final_loss" not in summary:
        return {"checked": False, "reason": f"fewer than {min_steps} optimiser steps"}
    first, last = summary["initial_loss"], summary["final_loss"]
    reference = min(first, baseline) if baseline is not None else first
    stalled = not (last <= reference * (1.0 - min_drop))  # NaN counts as stalled
    return {"checked": True, "stalled": stalled, "initial_loss": first, "final_loss": last,
            "baseline_loss": baseline, "min_drop": min_drop}


class StallCheck(pl.Callback):
    """Records the run's opening and closing mean loss (:meth:`AdapterTrainingModule.loss_summary`) as
    ``adamergex/initial_loss`` and ``adamergex/final_loss`` in the trainer's ``callback_metrics`` when training
    ends, so the figures reach the main process under spawn-based strategies too; :meth:`read` turns them into a
    verdict there, and :meth:`next_lr` decides what a loss that did not fall leads to, following
    ``config.on_stall``.

    A dead run is never saved silently: ``retry`` retrains from the same initial weights at
    ``lr × retry_lr_factor`` up to ``max_retries`` times, then raises; ``error`` raises at once; ``warn`` warns
    and keeps the adapter. The verdicts of all attempts are recorded in the adapter's metadata.
    """

    def __init__(self, config: StallConfig, *, baseline: float | None = None) -> None:
        self.config = config
        self.baseline = baseline
        self.verdict: dict[str, Any] = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = pl_module.loss_summary() if isinstance(pl_module, AdapterTrainingModule) else {}
        for key, value in summary.items():
            trainer.callback_metrics[f"adamergex/{key}"] = torch.tensor(float(value))

    def read(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The verdict of the run ``trainer`` just fitted (also kept as :attr:`verdict`)."""
        summary = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("adamergex/")}
        self.verdict = _stall_verdict(summary, baseline=self.baseline, min_drop=self.config.min_loss_drop,
                                      min_steps=self.config.stall_min_steps, steps=trainer.global_step)
        return self.verdict

    def next_lr(self, lr: float, attempts: list[dict[str, Any]]) -> float | None:
        """The learning rate of the next attempt after one at ``lr``, or ``None`` when the run is done.

        Raises:
            TrainingStalledError: the loss did not fall and ``on_stall`` is ``error``, or the retries are spent.
        """
        verdict, cfg = self.verdict, self.config
        if not verdict.get("stalled"):
            return None
        message = (f"training loss did not fall at lr={lr:g}: mean {verdict['initial_loss']:.4f} over the first "
                   f"steps, {verdict['final_loss']:.4f} over the last"
                   + (f" (a majority-class predictor scores {self.baseline:.4f})" if self.baseline is not None else ""))
        if cfg.on_stall == "warn" and math.isfinite(verdict["final_loss"]):
            warnings.warn(f"{message}; the adapter is saved anyway because on_stall='warn'", stacklevel=3)
            return None
        if not math.isfinite(verdict["final_loss"]):
            message += " (the loss is not finite: nothing is saved, whatever on_stall says)"
        if cfg.on_stall in ("error", "warn") or len(attempts) > cfg.max_retries:  # warn: a non-finite loss
            raise TrainingStalledError(f"{message}; attempts: {json.dumps(attempts, default=str)}. Lower the "
                                       "learning rate, train longer, or check the data and labels")
        warnings.warn(f"{message}; retrying at lr={lr * cfg.retry_lr_factor:g} (set on_stall='error' to stop "
                      "instead)", stacklevel=3)
        return lr * cfg.retry_lr_factor


# -- fitting --------------------------------------------------------------------------------------------------------
class StepProgressBar(ProgressBar):
    """One bar over the run's optimiser steps showing the loss and learning rate, and one line per validation
    (Lightning's own bars count batches per epoch, which reads "Epoch 0/-2" in a run bounded by steps)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: Any = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            from tqdm import tqdm

            self._bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, desc="train", unit="step",
                             file=sys.stderr, dynamic_ncols=True, leave=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._bar is None or trainer.global_step <= self._bar.n:
            return
        self._bar.update(trainer.global_step - self._bar.n)
        loss = trainer.callback_metrics.get("train/loss")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self._bar.set_postfix_str(f"loss {float(loss):.4f}, lr {lr:.2e}" if loss is not None else f"lr {lr:.2e}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled or not trainer.is_global_zero or trainer.sanity_checking:
            return
        values = ", ".join(f"{k.split('/', 1)[1]} {float(v):.4f}" for k, v in sorted(trainer.callback_metrics.items())
                           if k.startswith("val/"))
        self.print(f"validation at step {trainer.global_step}: {values}")

    def print(self, *args: Any, **kwargs: Any) -> None:
        text = " ".join(map(str, args))
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_lightning(verbose: bool, *, base_dropout: BaseDropout = "on") -> Iterator[None]:
    """Keep Lightning's start-up notes (accelerators, the logger tip, "max_steps reached"), the worker-count hint
    (items are pre-tokenised in memory) and deprecation notes of Lightning's internals off the console unless
    ``verbose``; the "modules in eval mode" warning is the expected consequence of ``base_dropout='off'`` and is
    silenced there only."""
    import logging

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if base_dropout == "off":
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        if not verbose:
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*")
            for lg in loggers:
                lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _fit(
    module: AdapterTrainingModule,
    datamodule: TaskDataModule,
    *,
    root: Path,
    keep_files: bool,
    max_steps: int,
    ckpt_path: Path | None,
    checkpoint_every: int | None,
    val_every: int | None,
    optim: OptimConfig,
    trainer: TrainerConfig,
    callbacks: Sequence[pl.Callback] = (),
    val_at_start: bool = False,
) -> pl.Trainer:
    """Fit ``module``; with a validation split and ``val_at_start`` (and no checkpoint to resume), validate once
    before the first step into ``module.initial_validation``, restoring the RNG states afterwards so that the
    run's result does not depend on it (creating a data-loader iterator draws from the global RNG)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    options = dict(trainer.trainer_options)
    callbacks = [*callbacks, *(options.pop("callbacks", []) or [])]
    if trainer.progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StepProgressBar())
    if keep_files and checkpoint_every:
        callbacks.append(ModelCheckpoint(dirpath=root / "checkpoints", filename="step-{step}", save_top_k=0,
                                         save_last=True, every_n_train_steps=checkpoint_every))
    validate = datamodule.val_split is not None
    kwargs: dict[str, Any] = dict(
        max_steps=max_steps, max_epochs=-1, accelerator=trainer.accelerator, devices=trainer.devices,
        num_nodes=trainer.num_nodes, strategy=trainer.strategy, precision=trainer.precision,
        accumulate_grad_batches=optim.grad_accum, gradient_clip_val=optim.gradient_clip, default_root_dir=str(root),
        logger=CSVLogger(str(root), name="logs") if keep_files else False,
        callbacks=callbacks, enable_checkpointing=keep_files and bool(checkpoint_every),
        enable_progress_bar=trainer.progress_bar, enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, log_every_n_steps=trainer.log_every,
        limit_val_batches=1.0 if validate else 0, check_val_every_n_epoch=None,
        val_check_interval=(val_every or max_steps) * optim.grad_accum if validate else None,
    )
    kwargs.update(options)
    fitter = pl.Trainer(**kwargs)
    if validate and val_at_start and ckpt_path is None:
        states = _rng_states()
        results = fitter.validate(module, datamodule=datamodule, verbose=False)
        _set_rng_states(states)
        module.initial_validation = {k: float(v) for k, v in (results[0] if results else {}).items()
                                     if k.startswith("val/")}
    fitter.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None,
               weights_only=True)
    return fitter
