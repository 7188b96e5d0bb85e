"""``adamergex train``: :class:`TrainConfig`, its YAML/flag parsing, and :func:`cli_train`.

A dataclass field and the docstring under it give the default, the YAML key and the ``--help`` text
(:mod:`._options`); flags given on the command line override the YAML file named by ``--config``
(``--print-config`` prints the resolved YAML). Example: ``tests/fixtures/training/train_lora.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..models import OBJECTIVES, load_pretrained, objective_of
from ..registry import ADAPTERS
from ..task import DataFiles, get_task
from ._options import add_options, config_values

__all__ = ["TrainConfig", "cli_train", "parse_train_args"]


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
    group_by_length: int = 0
    """Draw batches from length-sorted windows of this many global micro-batches (0: off): less padding."""
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adamergex train", argument_default=argparse.SUPPRESS,
        description="Train a PEFT adapter on a task and language with Lightning. Options come from flags, a YAML "
                    "file (--config; its keys are the option names with underscores), or both (flags win).")
    parser.add_argument("--config", help="YAML file of options")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options as YAML and exit")
    add_options(parser, TrainConfig)
    return parser


def parse_train_args(argv: Sequence[str]) -> tuple[TrainConfig, bool]:
    """``(config, print_only)`` from command-line arguments and the optional YAML file they name."""
    args = _parser().parse_args(list(argv))
    values = config_values(TrainConfig, args, config=getattr(args, "config", None))
    if isinstance(values.get("data_files"), str):
        values["data_files"] = [values["data_files"]]
    if isinstance(values.get("data_files"), dict):
        values["data_files"] = [f"{k}={v}" for k, v in values["data_files"].items()]
    if "devices" in values:
        values["devices"] = str(values["devices"])
    return TrainConfig(**values), bool(getattr(args, "print_config", False))


def cli_train(argv: list[str]) -> int:
    """``adamergex train``: see ``adamergex train --help``. Returns the exit status."""
    import torch
    import yaml

    from ..training import head_modules, train_adapter, train_reference_head

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
    model, tokenizer, new_modules = load_pretrained(
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
        group_by_length=cfg.group_by_length, max_length=cfg.max_length, weight_decay=cfg.weight_decay,
        scheduler=cfg.scheduler,
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
