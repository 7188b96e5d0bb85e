"""Adapter training with Lightning: one system module, one library call and the ``adamergex train`` command.

The split follows the Lightning style guide: the *model* is a Hugging Face model wrapped in a ``PeftModel`` by
:func:`prepare_model` (only the new adapter, and the heads it saves through PEFT ``modules_to_save``, require
grad); the *system* is :class:`AdapterTrainingModule` (loss, optimiser, schedule, logging, checkpoint contents);
the data is :class:`~adamergex.data.TaskDataModule`. :func:`train_adapter` wires them to a ``lightning.Trainer``
and returns an :class:`~adamergex.AdapterState` whose metadata says how it was made; with ``output`` it is also
written as a PEFT adapter directory (``PeftModel.from_pretrained`` and :func:`adamergex.io.load_adapter` read it).

Guarantees and the pitfalls they answer (GitHub issue #3):

* **Loss without full-vocabulary float32 logits.** Causal LMs run the backbone, then a fused linear +
  cross-entropy over row chunks that computes the gradient of the hidden states chunk by chunk
  (:func:`linear_cross_entropy`): logits exist in the compute dtype one chunk at a time. Masked LMs apply the MLM
  head only at masked positions. A one-off check at fit start compares this path with the model's own logits and
  falls back to the plain forward for models whose head does something else (soft-capping, logit scales).
* **Heads.** Sequence classifiers save their classifier *and* pooler with the task adapter (``modules_to_save``),
  so a head never meets a different random pooler at the next load. Reference (language-modelling) adapters
  keep the head frozen: the base model's, or a shared head trained once by :func:`train_reference_head`;
  ``metadata["head"]`` records which, with its SHA-256, so ``ref_target − ref_source`` carries no head change.
* **Dead runs.** A loss that does not fall (classification: not below the label-entropy baseline of a
  majority-class predictor) is detected after training; the run is retried at a lower learning rate (recorded
  in ``metadata["training"]["attempts"]``), or fails with :class:`TrainingStalledError`, never saved silently.
* **Repeatability.** Seeded initialisation, data order and masking; a run resumed from its last checkpoint
  (``resume=True``) ends with the same adapter as an uninterrupted one (RNG states travel in the checkpoint, and
  the data stream restarts at the restored step). DDP gives the same adapter as one process on the same global
  batch: losses are normalised by the *global* number of target tokens.
* **MAD-X.** ``stack_on`` adapters (e.g. the source-language adapter) are active and frozen under the new task
  adapter, so ``madx_stack`` can later swap in the target-language one.
* Multi-GPU and multi-node use Lightning's own strategies (``strategy="ddp"``, ``"fsdp"``...).

Configuration: ``adamergex train`` takes its options from :class:`TrainConfig`, a dataclass whose field docstrings
are the ``--help`` text. The same keys form a YAML file (``adamergex train --config run.yaml``; flags given on
the command line override the file; ``--print-config`` prints the resolved YAML). Example:
``tests/fixtures/training/train_lora.yaml``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .adapter_state import AdapterState
from .data import IGNORE_INDEX, OBJECTIVES, Objective, TaskDataModule
from .errors import AdapterFormatError, ConfigError, FrameworkError, NumericalError, OutputExistsError
from .registry import ADAPTERS
from .task import DataFiles, Task, get_task

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "AdapterTrainingModule",
    "ReferenceHead",
    "TrainConfig",
    "TrainingStalledError",
    "cli_train",
    "head_modules",
    "linear_cross_entropy",
    "load_for_training",
    "objective_of",
    "prepare_model",
    "train_adapter",
    "train_reference_head",
]

Schedule = Literal["linear", "cosine", "constant"]
OnStall = Literal["retry", "error", "warn"]
LIGHTNING_DIR = "lightning"
"""Sub-directory of the output that holds Lightning's checkpoints (``checkpoints/``) and logs (``logs/``)."""


class TrainingStalledError(FrameworkError, RuntimeError):
    """Training ended with a loss that did not fall (a dead adapter), after any retries."""


# -- models, heads and adapters -----------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> Any:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def objective_of(model: nn.Module) -> Objective:
    """The training objective of a Hugging Face model (or ``PeftModel``), read from its class."""
    base = _unwrap(model)
    name = type(base).__name__
    if getattr(getattr(base, "config", None), "is_encoder_decoder", False):
        return "seq2seq_lm"
    for suffix, objective in (("ForSequenceClassification", "sequence_classification"),
                              ("ForMaskedLM", "masked_lm"), ("ForCausalLM", "causal_lm"),
                              ("LMHeadModel", "causal_lm")):
        if name.endswith(suffix):
            return objective  # type: ignore[return-value]
    raise ConfigError(f"cannot tell how to train a {name}; pass objective= one of {', '.join(OBJECTIVES)}")


def _backbone(base: nn.Module) -> nn.Module:
    prefix = getattr(base, "base_model_prefix", "")
    backbone = getattr(base, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module):
        raise ConfigError(f"{type(base).__name__} has no backbone attribute {prefix!r} (base_model_prefix)")
    return backbone


def head_modules(model: nn.Module) -> list[str]:
    """Names (inside the base model) of the modules a head consists of: every top-level child with parameters
    other than the backbone (``classifier``, ``score``, ``cls``, ``lm_head``), plus the backbone's pooler when a
    sequence classifier reads it (models without a pooler checkpoint get a new random one at every load)."""
    base = _unwrap(model)
    prefix = getattr(base, "base_model_prefix", "")
    names = [n for n, child in base.named_children()
             if n != prefix and any(True for _ in child.parameters())]
    if type(base).__name__.endswith("ForSequenceClassification"):
        pooler = getattr(getattr(base, prefix, None), "pooler", None)
        if isinstance(pooler, nn.Module):
            names.append(f"{prefix}.pooler")
    return names


def _head_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Head parameters by name in the base model, leaving out weights tied to the input embeddings."""
    base = _unwrap(model)
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    tied = {id(p) for p in emb.parameters()} if emb is not None else set()
    out: dict[str, torch.Tensor] = {}
    for module_name in head_modules(base):
        for name, p in base.get_submodule(module_name).named_parameters():
            if id(p) not in tied:
                out[f"{module_name}.{name}"] = p
    return out


def _sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class ReferenceHead:
    """A language-modelling head trained once with the encoder/decoder frozen, shared by reference adapters.

    ``tensors`` maps parameter names inside the base model (``cls.predictions.transform.dense.weight``) to
    values; weights tied to the input embeddings are not part of it.
    """

    base_model: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    FILE = "head.safetensors"
    META = "head.json"

    def fingerprint(self) -> str:
        """SHA-256 over names, dtypes, shapes and bytes of the tensors."""
        return _sha256(self.tensors)

    def apply(self, model: nn.Module) -> None:
        """Copy the head into ``model`` (the base model or a ``PeftModel`` over it) and freeze it.

        Raises:
            AdapterFormatError: a tensor has no place in the model, or a shape differs.
        """
        params = dict(_unwrap(model).named_parameters())
        with torch.no_grad():
            for name, value in self.tensors.items():
                if name not in params:
                    raise AdapterFormatError(f"reference head tensor {name} has no place in {type(_unwrap(model)).__name__}")
                if params[name].shape != value.shape:
                    raise AdapterFormatError(
                        f"reference head tensor {name} has shape {tuple(value.shape)}, the model "
                        f"{tuple(params[name].shape)}")
                params[name].copy_(value)
                params[name].requires_grad_(False)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``head.safetensors`` and ``head.json`` atomically."""
        from safetensors.torch import save_file

        from .io import atomic_directory

        meta = {"base_model": self.base_model, "sha256": self.fingerprint(), **self.metadata}
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in self.tensors.items()}, str(tmp / self.FILE),
                      metadata={"format": "pt"})
            (tmp / self.META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ReferenceHead:
        """Read a head written by :meth:`save`. Raises :class:`AdapterFormatError` for a missing/corrupt one."""
        from safetensors.torch import load_file

        from .io import read_json

        path = Path(directory)
        if not (path / cls.FILE).is_file():
            raise AdapterFormatError(f"{path} holds no {cls.FILE}; is it a reference head directory?")
        meta = read_json(path / cls.META)
        head = cls(base_model=str(meta.pop("base_model", "")), tensors=load_file(str(path / cls.FILE)), metadata=meta)
        recorded = meta.pop("sha256", None)
        if recorded is not None and recorded != head.fingerprint():
            raise AdapterFormatError(f"{path}: head tensors do not match the SHA-256 recorded in {cls.META}")
        head.metadata["source"] = str(path)
        return head


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
    from peft import PeftModel

    from .loading import attach
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
        peft_model = PeftModel(model, config, adapter_name)
    else:
        for i, st in enumerate(stack_on):
            if st.kind != adapter:
                raise ConfigError(f"stack_on adapters must be {adapter!r} adapters like the one trained; "
                                  f"stack_on[{i}] is {st.kind!r}")
        # Their heads are dropped: the task adapter owns the head (PEFT would otherwise add the classifier to
        # every adapter's modules_to_save and fail on the missing tensors).
        frozen = {f"stack_{i}": st.replace(saved_modules={}, config={**st.config, "modules_to_save": None})
                  for i, st in enumerate(stack_on)}
        peft_model = attach(model, Composition(strategy="madx_stack", adapters=frozen, head_from="stack_0"))
        peft_model.add_adapter(adapter_name, config)
        peft_model.base_model.set_adapter([*frozen, adapter_name])  # type: ignore[operator]  # marks all of them trainable; undone below
    trainable = 0
    for name, p in peft_model.named_parameters():
        p.requires_grad_(adapter_name in name.split("."))
        if p.requires_grad:
            trainable += p.numel()
            if p.dtype != torch.float32:
                p.data = p.data.float()
    if trainable == 0:
        raise ConfigError(f"adapter {adapter!r} with options {options} adapts no module of {type(model).__name__}; "
                          "set target_modules")
    return peft_model


# -- losses -----------------------------------------------------------------------------------------------------
def _ce_chunk(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of one chunk ``(c, V)`` and its gradient w.r.t. the logits, in the logits' dtype."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    lse = torch.logsumexp(x, dim=-1)  # (c,)
    picked = x.gather(1, safe[:, None]).squeeze(1)
    loss = ((lse - picked) * valid).sum()
    grad = torch.exp(x - lse[:, None])
    grad = grad.scatter_add(1, safe[:, None], -torch.ones_like(grad[:, :1]))
    grad = grad * valid[:, None]
    return loss, grad.to(logits.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    """``Σ CE(hidden @ weightᵀ + bias, labels)`` computed chunk by chunk; gradients are formed in the forward
    pass (one logits matmul and one gradient matmul per chunk, nothing recomputed), so no ``(N, V)`` tensor
    ever exists."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                labels: torch.Tensor, chunk_size: int, chunk_fn: Callable[..., Any]) -> torch.Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        acc = torch.promote_types(weight.dtype, torch.float32)  # accumulate in at least float32
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b and bias is not None else None
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]  # (c, H)
            logits = F.linear(h, weight, bias)  # (c, V), compute dtype (autocast applies)
            loss, g = chunk_fn(logits, labels[start : start + chunk_size])
            total += loss
            if grad_h is not None:
                grad_h[start : start + chunk_size] = g @ weight.to(g.dtype)
            if grad_w is not None:
                grad_w += (g.t() @ h.to(g.dtype)).to(acc)
            if grad_b is not None:
                grad_b += g.to(acc).sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        dh, dw, db = ctx.dtypes
        return (
            (grad_h * grad_out).to(dh) if grad_h is not None else None,
            (grad_w * grad_out).to(dw) if grad_w is not None else None,
            (grad_b * grad_out).to(db) if grad_b is not None else None,
            None, None, None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor, *,
    chunk_size: int = 2048, chunk_fn: Callable[..., Any] = _ce_chunk,
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden (N, H) @ weight (V, H)ᵀ`` against ``labels (N,)`` (``-100`` ignored),
    never materialising the ``(N, V)`` logits. ``chunk_fn`` may be a compiled :func:`_ce_chunk`."""
    return _LinearCrossEntropy.apply(  # type: ignore[no-untyped-call, no-any-return]
        hidden, weight, bias, labels, chunk_size, chunk_fn)


def _head_cross_entropy(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Summed cross-entropy through an arbitrary head module, chunked with activation checkpointing so only one
    chunk's logits are alive at a time."""
    from torch.utils.checkpoint import checkpoint

    def part(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, ignore_index=IGNORE_INDEX, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[s : s + chunk_size], labels[s : s + chunk_size]
        total = total + (checkpoint(part, h, y, use_reentrant=False) if torch.is_grad_enabled() else part(h, y))
    return total


def _shift_left(labels: torch.Tensor) -> torch.Tensor:
    """Labels for next-token prediction at each position: ``labels[:, t+1]``, ``-100`` at the end."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


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
        self.model = model
        self.objective: Objective = objective
        self.lr, self.weight_decay, self.betas = lr, weight_decay, betas
        self.scheduler, self.warmup_steps = scheduler, warmup_steps
        self.loss_chunk_size, self.fused_loss, self.compile_model = loss_chunk_size, fused_loss, compile
        self.stall_window = stall_window
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
            blocks = _repeated_blocks(_unwrap(self.model))
            for block in blocks or []:
                if getattr(block, "_compiled_call_impl", None) is None:  # already compiled by an earlier module
                    block.compile()
            self._chunk_fn = torch.compile(_ce_chunk)

    def _lm_parts(self) -> tuple[nn.Module, nn.Module]:
        base = _unwrap(self.model)
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
        vocab = _unwrap(self.model).config.vocab_size
        device = next(self.model.parameters()).device
        ids = (torch.arange(8, device=device)[None, :] * 7919 + 3) % vocab
        extra = {"use_cache": False} if self.objective == "causal_lm" else {}
        # Eager even where blocks are compiled already: a no-grad call would add a compiled variant per block.
        stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else (
            contextlib.nullcontext())
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), stance:
                full = self.model(input_ids=ids, **extra).logits.float()
                mine = head(backbone(input_ids=ids, **extra)[0]).float()
        except Exception:  # any model whose parts cannot be called apart keeps the plain path
            return False
        finally:
            self.model.train(was_training)
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

    def on_train_end(self) -> None:
        # Written into callback_metrics so the figures reach the main process under spawn-based strategies too.
        for key, value in self.loss_summary().items():
            self.trainer.callback_metrics[f"adamergex/{key}"] = torch.tensor(float(value))

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
        checkpoint["adamergex"] = {"rng": _rng_states(), "loss_history": [float(t) for t in self.loss_history]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("adamergex", {})
        if "rng" in extra:
            _set_rng_states(extra["rng"])
        self.loss_history = [torch.tensor(v) for v in extra.get("loss_history", [])]

    # -- optimiser --------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        # foreach, not fused: Lightning refuses gradient clipping with optimisers that unscale internally.
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
                                      foreach=True)
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


# -- the library call -----------------------------------------------------------------------------------------------
def _check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise ConfigError(f"{name} must be positive, got {value!r}")


def _load_states(items: Sequence[AdapterState | str | os.PathLike[str]]) -> list[AdapterState]:
    from .io import load_adapter

    return [s if isinstance(s, AdapterState) else load_adapter(s) for s in items]


def _last_checkpoint(root: Path) -> Path | None:
    last = root / "checkpoints" / "last.ckpt"
    return last if last.exists() else None


def _adapter_state(trainer: pl.Trainer, module: AdapterTrainingModule, adapter_name: str) -> AdapterState:
    """The trained adapter as a state (gathering full tensors first under sharding strategies such as FSDP)."""
    from lightning.pytorch.strategies import FSDPStrategy

    from .io import state_from_peft_model

    name = type(trainer.strategy).__name__
    if not (isinstance(trainer.strategy, FSDPStrategy) or name.startswith(("DeepSpeed", "ModelParallel"))):
        return state_from_peft_model(module.model, adapter_name=adapter_name)  # type: ignore[arg-type]
    full = trainer.strategy.lightning_module_state_dict()  # collective: every rank calls it
    return _state_from_full_state_dict(module.model, full, adapter_name)  # type: ignore[arg-type]


def _state_from_full_state_dict(peft_model: PeftModel, full: Mapping[str, torch.Tensor], adapter_name: str) -> AdapterState:
    """Deliberate duplicate of ``adamergex.io.state_from_peft_model`` for a gathered (FSDP) state dict: wrapper
    prefixes are removed, then PEFT selects the adapter's tensors."""
    from peft import get_peft_model_state_dict

    from .io import adapter_type_for
    from .loading import base_model_name

    clean = {}
    for key, value in full.items():
        key = key[len("model."):] if key.startswith("model.") else key
        for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
            key = key.replace(wrapper, "")
        clean[key] = value
    weights = get_peft_model_state_dict(peft_model, state_dict=clean, adapter_name=adapter_name)
    weights = {k: v.detach().to("cpu").clone() for k, v in weights.items()}
    cfg = peft_model.peft_config[adapter_name]
    config = cfg.to_dict()
    config["peft_type"] = str(getattr(cfg.peft_type, "value", cfg.peft_type))
    if config.get("task_type") is not None:
        config["task_type"] = str(getattr(cfg.task_type, "value", cfg.task_type))
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    typ = adapter_type_for(config["peft_type"], source=f"gathered adapter {adapter_name!r}")
    state = typ.from_peft(config, weights, source=f"gathered adapter {adapter_name!r}")
    return state if state.base_model else state.replace(base_model=base_model_name(peft_model.get_base_model()))


@contextlib.contextmanager
def _quiet_lightning(progress_bar: bool) -> Iterator[None]:
    """Silence Lightning's start-up chatter and the worker-count hint (items are pre-tokenised in memory) unless
    a progress bar was asked for. Set ``progress_bar=True`` to see them."""
    import logging

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
        if not progress_bar:
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
    grad_accum: int,
    gradient_clip: float | None,
    precision: str,
    accelerator: str,
    devices: int | str,
    num_nodes: int,
    strategy: Any,
    log_every: int,
    progress_bar: bool,
    trainer_options: Mapping[str, Any],
) -> pl.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    options = dict(trainer_options)
    callbacks = list(options.pop("callbacks", []) or [])
    if keep_files and checkpoint_every:
        callbacks.append(ModelCheckpoint(dirpath=root / "checkpoints", filename="step-{step}", save_top_k=0,
                                         save_last=True, every_n_train_steps=checkpoint_every))
    validate = datamodule.val_split is not None
    kwargs: dict[str, Any] = dict(
        max_steps=max_steps, max_epochs=-1, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=strategy, precision=precision, accumulate_grad_batches=grad_accum,
        gradient_clip_val=gradient_clip, default_root_dir=str(root),
        logger=CSVLogger(str(root), name="logs") if keep_files else False,
        callbacks=callbacks, enable_checkpointing=keep_files and bool(checkpoint_every),
        enable_progress_bar=progress_bar, enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, log_every_n_steps=log_every,
        limit_val_batches=1.0 if validate else 0, check_val_every_n_epoch=None,
        val_check_interval=(val_every or max_steps) * grad_accum if validate else None,
    )
    kwargs.update(options)
    trainer = pl.Trainer(**kwargs)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return trainer


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
    from .io import atomic_directory, save_adapter
    from .loading import base_model_name

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
                        val_limit=val_limit, seed=seed)
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
                             "grad_accum": grad_accum, "world_size": trainer.world_size,
                             "global_batch": batch_size * grad_accum * trainer.world_size,
                             "weight_decay": weight_decay, "scheduler": scheduler, "warmup_steps": warmup_steps,
                             "gradient_clip": gradient_clip, "precision": precision,
                             "strategy": type(trainer.strategy).__name__, "compile": compile,
                             "attempts": attempts, "framework": _versions(),
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
    from .io import atomic_directory

    with atomic_directory(out, overwrite=True) as tmp:
        write(tmp)
        if lightning_root.exists():
            os.replace(lightning_root, tmp / LIGHTNING_DIR)


def _describe_source(data_files: DataFiles | None, task: Task) -> Any:
    if data_files is None:
        return {"dataset_id": task.dataset_id, "revision": task.revision}
    if isinstance(data_files, str):
        return str(data_files)
    return {k: (str(v) if isinstance(v, (str, os.PathLike)) else [str(x) for x in v]) for k, v in data_files.items()}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft", "lightning")}


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
        raise ConfigError(f"{type(_unwrap(model)).__name__} has no head parameters to train")
    return train_adapter(model, tokenizer, task, langs, _train_head=True, **options)  # type: ignore[arg-type, return-value]


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


# -- configuration and CLI --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Options of ``adamergex train`` (YAML keys are the field names)."""

    model: str = ""
    """Base model: Hugging Face Hub id or local directory (safetensors weights)."""
    task: str = ""
    """Registered task name."""
    language: str = ""
    """Language code of the training data."""
    output: str = ""
    """Directory to write the adapter (PEFT format) to; Lightning checkpoints and logs go to OUTPUT/lightning."""
    adapter: str = "lora"
    """Registered adapter type (lora, ia3, ...)."""
    adapter_options: dict[str, Any] = field(default_factory=dict)
    """PEFT config options, e.g. r=8 lora_alpha=16 target_modules=[q_proj,v_proj] (values parsed as YAML)."""
    data_files: list[str] = field(default_factory=list)
    """Local data in the task's schema: one file for any split, or SPLIT=FILE entries."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Task field overrides, e.g. template=... chunk_length=256."""
    train_split: str = "train"
    """Split to train on."""
    val_split: str | None = None
    """Split to validate on (default: no validation)."""
    limit: int | None = None
    """Train on a seeded random subset of this many examples."""
    max_steps: int | None = None
    """Optimiser steps (default: one pass over the training data)."""
    epochs: float = 1.0
    """Passes over the training data when max_steps is not given."""
    batch_size: int = 8
    """Items per device per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    scheduler: str = "linear"
    """Learning-rate schedule after warm-up: linear, cosine or constant."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    max_length: int | None = None
    """Tokens per item (default: the task's chunk_length, else 512)."""
    seed: int = 0
    """Seed of initialisation, data order and masking."""
    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed or 16-mixed (half-precision base weights need a mixed mode)."""
    dtype: str | None = None
    """dtype to load the base weights in (float32, bfloat16, float16; default: bfloat16 with bf16-mixed,
    float16 with 16-mixed, else float32)."""
    accelerator: str = "auto"
    """Lightning accelerator: cpu, gpu, auto."""
    devices: str = "1"
    """Devices per node (a number or 'auto')."""
    num_nodes: int = 1
    """Nodes."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, fsdp, ..."""
    compile: bool = False
    """torch.compile each transformer block and the loss."""
    objective: str | None = None
    """Force the objective (causal_lm, masked_lm, sequence_classification, seq2seq_lm) instead of inferring it."""
    revision: str | None = None
    """Model revision (commit, branch or tag) on the Hub."""
    trust_remote_code: bool = False
    """Allow model code from the Hub repository to run."""
    head: str | None = None
    """Directory of a shared reference head (from --train-head) to load and freeze."""
    train_head: bool = False
    """Train and write a shared reference head (backbone frozen) instead of an adapter."""
    head_languages: list[str] = field(default_factory=list)
    """With --train-head: languages to train the head on (default: --language)."""
    stack_on: list[str] = field(default_factory=list)
    """Adapter directories to keep active and frozen under the new adapter (MAD-X)."""
    checkpoint_every: int | None = None
    """Optimiser steps between checkpoints (default: a tenth of the run)."""
    val_every: int | None = None
    """Optimiser steps between validations (default: once at the end)."""
    resume: bool = False
    """Continue the run in OUTPUT from its last checkpoint."""
    overwrite: bool = False
    """Replace a non-empty OUTPUT."""
    on_stall: str = "retry"
    """When the loss does not fall: retry (at a lower learning rate), error, or warn."""
    progress_bar: bool = True
    """Show the progress bar."""

    def __post_init__(self) -> None:
        for name in ("model", "task", "language", "output"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must be set (--{name.replace('_', '-')} or '{name}:' in the YAML)")
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise ConfigError(f"scheduler must be linear, cosine or constant; got {self.scheduler!r}")
        if self.on_stall not in ("retry", "error", "warn"):
            raise ConfigError(f"on_stall must be retry, error or warn; got {self.on_stall!r}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16; got {self.dtype!r}")
        if not (self.devices == "auto" or str(self.devices).isdigit()):
            raise ConfigError(f"devices must be a number or 'auto'; got {self.devices!r}")

    @property
    def data_files_value(self) -> DataFiles | None:
        """``data_files`` as the task contract takes it (one path, or a split → paths mapping)."""
        if not self.data_files:
            return None
        if all("=" not in f for f in self.data_files):
            return self.data_files[0] if len(self.data_files) == 1 else {"train": list(self.data_files)}
        mapping: dict[str, list[str]] = {}
        for entry in self.data_files:
            if "=" not in entry:
                raise ConfigError(f"data_files mixes SPLIT=FILE entries with a bare file {entry!r}; name its split")
            split, path = entry.split("=", 1)
            mapping.setdefault(split, []).append(path)
        return {k: v[0] if len(v) == 1 else v for k, v in mapping.items()}


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (what ``--help`` prints), read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_pairs(entries: Sequence[str], option: str) -> dict[str, Any]:
    import yaml

    out = {}
    for entry in entries:
        if "=" not in entry:
            raise ConfigError(f"--{option} takes KEY=VALUE entries, got {entry!r}")
        key, value = entry.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _parser() -> argparse.ArgumentParser:
    docs = _field_docs(TrainConfig)
    parser = argparse.ArgumentParser(
        prog="adamergex train", argument_default=argparse.SUPPRESS,
        description="Train a PEFT adapter on a task and language with Lightning. Options come from flags, a YAML "
                    "file (--config; its keys are the option names with underscores), or both (flags win).")
    parser.add_argument("--config", help="YAML file of options")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options as YAML and exit")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, "")
        annotation = str(f.type)
        if annotation == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        elif annotation.startswith(("list", "dict")):
            parser.add_argument(flag, nargs="+", metavar="KEY=VALUE" if annotation.startswith("dict") else "VALUE",
                                help=help_)
        else:
            kind = {"int": int, "float": float}.get(annotation.replace(" | None", ""), str)
            parser.add_argument(flag, type=kind, help=help_)
    return parser


def parse_train_args(argv: Sequence[str]) -> tuple[TrainConfig, bool]:
    """``(config, print_only)`` from command-line arguments and the optional YAML file they name."""
    import yaml

    args = vars(_parser().parse_args(list(argv)))
    print_only = bool(args.pop("print_config", False))
    values: dict[str, Any] = {}
    if "config" in args:
        path = Path(args.pop("config"))
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must hold a mapping of options, got {type(loaded).__name__}")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise ConfigError(f"config {path} has unknown option(s) {unknown}; available: {', '.join(sorted(names))}")
        values.update(loaded)
    for key in ("adapter_options", "task_options"):
        if key in args:
            args[key] = {**values.get(key, {}), **_parse_pairs(args[key], key.replace("_", "-"))}
    values.update(args)
    if isinstance(values.get("data_files"), str):
        values["data_files"] = [values["data_files"]]
    if isinstance(values.get("data_files"), dict):
        values["data_files"] = [f"{k}={v}" for k, v in values["data_files"].items()]
    if "devices" in values:
        values["devices"] = str(values["devices"])
    return TrainConfig(**values), print_only


def cli_train(argv: list[str]) -> int:
    """``adamergex train``: see ``adamergex train --help``. Returns the exit status."""
    import yaml

    cfg, print_only = parse_train_args(argv)
    if print_only:
        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
        return 0
    task = get_task(cfg.task, **cfg.task_options)
    task.check_language(cfg.language)
    for lang in cfg.head_languages:
        task.check_language(lang)
    if not cfg.train_head:
        ADAPTERS.get(cfg.adapter)
    dtype_name = cfg.dtype or {"bf16": "bfloat16", "16": "float16"}.get(cfg.precision.split("-")[0], "float32")
    model, tokenizer, new_modules = load_for_training(
        cfg.model, task=task, objective=cfg.objective, revision=cfg.revision,  # type: ignore[arg-type]
        trust_remote_code=cfg.trust_remote_code, dtype=getattr(torch, dtype_name))
    objective = objective_of(model) if cfg.objective is None else cfg.objective
    heads = set(head_modules(model))
    fresh_heads = sorted(m for m in new_modules if m.split(".")[0] in heads or m in heads)
    if objective in ("causal_lm", "masked_lm") and fresh_heads and cfg.head is None and not cfg.train_head:
        raise ConfigError(
            f"{cfg.model} has no trained LM head (the checkpoint lacks {fresh_heads}); an adapter trained beside a "
            "random head mostly learns the head. Train a shared head once with --train-head and pass --head DIR")
    devices: int | str = int(cfg.devices) if cfg.devices.isdigit() else cfg.devices
    adapter_options = dict(cfg.adapter_options)
    extra = [m for m in new_modules if objective == "sequence_classification" and m.split(".")[0] not in heads]
    if extra:  # anything else the checkpoint lacked would be re-randomised at the next load: save it too
        adapter_options["modules_to_save"] = [*adapter_options.get("modules_to_save", []), *extra]
    common: dict[str, Any] = dict(
        objective=objective, data_files=cfg.data_files_value, task_options=cfg.task_options,
        train_split=cfg.train_split, val_split=cfg.val_split, limit=cfg.limit, max_steps=cfg.max_steps,
        epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        max_length=cfg.max_length, weight_decay=cfg.weight_decay, scheduler=cfg.scheduler,
        warmup_steps=cfg.warmup_steps, precision=cfg.precision, accelerator=cfg.accelerator, devices=devices,
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, compile=cfg.compile, seed=cfg.seed, output=cfg.output,
        overwrite=cfg.overwrite, resume=cfg.resume, checkpoint_every=cfg.checkpoint_every, val_every=cfg.val_every,
        on_stall=cfg.on_stall, base_model_revision=cfg.revision, progress_bar=cfg.progress_bar,
    )
    if cfg.train_head:
        head = train_reference_head(model, tokenizer, task, cfg.head_languages or [cfg.language], **common)
        print(json.dumps({"head": cfg.output, "sha256": head.fingerprint(), "tensors": len(head.tensors)}))
        return 0
    state = train_adapter(model, tokenizer, task, cfg.language, adapter=cfg.adapter, adapter_options=adapter_options,
                          stack_on=cfg.stack_on, head=cfg.head, **common)
    attempts = state.metadata["training"]["attempts"]
    print(json.dumps({"adapter": cfg.output, **state.summary(), "final_loss": attempts[-1].get("final_loss"),
                      "steps": attempts[-1]["steps"]}, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli_train(sys.argv[1:]))
