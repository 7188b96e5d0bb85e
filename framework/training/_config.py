"""The options of one training run, in groups: what trains, on which data, how it is optimised, on what hardware,
where it is written, and what a stalled loss leads to.

Each group is a frozen dataclass that validates itself once, in ``__post_init__``, naming the option. Field
names are unique across groups and are the keyword names of :func:`~adamergex.training.train_adapter`, the YAML
keys and (with dashes) the flags of ``adamergex train``, so :meth:`TrainingConfig.of` builds the groups from one
flat mapping and :meth:`TrainingConfig.flat` gives it back. The docstring under each field is its ``--help``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError
from ..models import OBJECTIVES, Objective

if TYPE_CHECKING:
    from ..adapter_state import AdapterState
    from ..task import DataFiles
    from ._heads import ReferenceHead

__all__ = [
    "AdapterConfig",
    "DataConfig",
    "OnStall",
    "OptimConfig",
    "RunConfig",
    "StallConfig",
    "TrainerConfig",
    "TrainingConfig",
]

OnStall = Literal["retry", "error", "warn"]
Schedule = Literal["linear", "cosine", "constant"]


def _positive(owner: object, *names: str, allow_none: bool = True) -> None:
    for name in names:
        value = getattr(owner, name)
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _integer(owner: object, name: str, *, low: int, allow_none: bool = False) -> None:
    value = getattr(owner, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class AdapterConfig:
    """What trains: the new adapter and what sits under it."""

    adapter: str = "lora"
    """Registered adapter type (lora, ia3, dora, loha, lokr...)."""
    adapter_options: Mapping[str, Any] = field(default_factory=dict)
    """PEFT config options, e.g. r=8 lora_alpha=16 target_modules=[q_proj,v_proj] (values parsed as YAML)."""
    objective: Objective | None = None
    """Force the objective (causal_lm, masked_lm, sequence_classification, seq2seq_lm) instead of inferring it."""
    stack_on: Sequence[AdapterState | str | os.PathLike[str]] = ()
    """Adapter directories (or states) to keep active and frozen under the new adapter (MAD-X)."""
    head: ReferenceHead | str | os.PathLike[str] | None = None
    """Directory of a shared reference head (from --train-head) to load and freeze."""
    adapter_name: str = "default"
    """PEFT adapter name while training."""

    def __post_init__(self) -> None:
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        if not isinstance(self.adapter_options, Mapping):
            raise ConfigError(f"adapter_options must be a mapping of PEFT options, got {self.adapter_options!r}")
        if not self.adapter_name or not str(self.adapter_name).isidentifier():
            raise ConfigError(f"adapter_name must be a Python identifier, got {self.adapter_name!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is cut into batches."""

    data_files: DataFiles | Mapping[str, DataFiles] | None = None
    """Local data in the task's schema (one file for any split, or files per split) instead of the Hub."""
    task_options: Mapping[str, Any] = field(default_factory=dict)
    """Task field overrides, e.g. template=... chunk_length=256."""
    train_split: str = "train"
    """Split to train on."""
    val_split: str | None = None
    """Split to validate on (default: no validation)."""
    limit: int | None = None
    """Train on a seeded random subset of this many examples."""
    val_limit: int | None = None
    """Validate on a seeded random subset of this many examples."""
    batch_size: int = 8
    """Items per device per micro-batch."""
    max_length: int | None = None
    """Tokens per item (default: the task's chunk_length, else 512)."""
    group_by_length: int = 0
    """Draw batches from length-sorted windows of this many global micro-batches (0: off): less padding."""

    def __post_init__(self) -> None:
        _integer(self, "batch_size", low=1)
        _integer(self, "group_by_length", low=0)
        for name in ("limit", "val_limit"):
            _integer(self, name, low=1, allow_none=True)
        _integer(self, "max_length", low=2, allow_none=True)
        if not isinstance(self.task_options, Mapping):
            raise ConfigError(f"task_options must be a mapping of task fields, got {self.task_options!r}")


@dataclass(frozen=True)
class OptimConfig:
    """How long and how the adapter is optimised (AdamW with a warm-up and a schedule)."""

    lr: float = 1e-4
    """Peak learning rate."""
    max_steps: int | None = None
    """Optimiser steps (default: one pass over the training data, times epochs)."""
    epochs: float = 1.0
    """Passes over the training data when max_steps is not given."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    scheduler: Schedule = "linear"
    """Learning-rate schedule after warm-up: linear, cosine or constant."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    gradient_clip: float | None = 1.0
    """Clip the gradient norm to this value (none: no clipping)."""

    def __post_init__(self) -> None:
        _positive(self, "lr", "epochs", "gradient_clip")
        _integer(self, "max_steps", low=1, allow_none=True)
        _integer(self, "grad_accum", low=1)
        _integer(self, "warmup_steps", low=0)
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) \
                or not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise ConfigError(f"scheduler must be linear, cosine or constant; got {self.scheduler!r}")


@dataclass(frozen=True)
class TrainerConfig:
    """Where and how fast it runs: Lightning's own accelerator, precision and distributed strategy."""

    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed or 16-mixed (half-precision base weights need a mixed mode)."""
    accelerator: str = "auto"
    """Lightning accelerator: cpu, gpu, auto."""
    devices: int | str = 1
    """Devices per node (a number or 'auto')."""
    num_nodes: int = 1
    """Nodes."""
    strategy: Any = "auto"
    """Lightning strategy: auto, ddp, fsdp, ... (or a Strategy object from Python)."""
    compile: bool = False
    """torch.compile each transformer block and the loss."""
    loss_chunk_size: int = 2048
    """Rows of logits alive at once in the fused linear + cross-entropy loss."""
    log_every: int = 10
    """Optimiser steps between logger writes."""
    progress_bar: bool = False
    """Show Lightning's progress bar and start-up messages."""
    trainer_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra lightning.Trainer arguments, e.g. deterministic=true (callbacks are added to ours)."""

    def __post_init__(self) -> None:
        if self.precision in ("bf16-true", "16-true", "bf16", "16", "half"):
            raise ConfigError(f"precision {self.precision!r} would train the adapter in half precision; use "
                              "'bf16-mixed' or '16-mixed' (load the base model in half precision to save memory)")
        if not (self.devices == "auto" or (isinstance(self.devices, int) and not isinstance(self.devices, bool)
                                           and self.devices >= 1)):
            raise ConfigError(f"devices must be a positive number or 'auto'; got {self.devices!r}")
        _integer(self, "num_nodes", low=1)
        _integer(self, "loss_chunk_size", low=1)
        _integer(self, "log_every", low=1)
        if not isinstance(self.trainer_options, Mapping):
            raise ConfigError(f"trainer_options must be a mapping of Trainer arguments, got {self.trainer_options!r}")

    @property
    def world_size(self) -> int:
        """Processes per run as far as the config tells (``devices='auto'`` counts as 1 until Lightning knows)."""
        return (self.devices if isinstance(self.devices, int) else 1) * self.num_nodes


@dataclass(frozen=True)
class RunConfig:
    """Seed, where the run is written, and how often it checkpoints and validates."""

    seed: int = 0
    """Seed of initialisation, data order and masking."""
    output: str | os.PathLike[str] | None = None
    """Directory to write the adapter (PEFT format) to; Lightning checkpoints and logs go to OUTPUT/lightning."""
    overwrite: bool = False
    """Replace a non-empty OUTPUT."""
    resume: bool = False
    """Continue the run in OUTPUT from its last checkpoint."""
    checkpoint_every: int | None = None
    """Optimiser steps between checkpoints (default: a tenth of the run)."""
    val_every: int | None = None
    """Optimiser steps between validations (default: once at the end)."""
    val_at_start: bool = False
    """Also validate once before the first optimiser step (needs val_split): the held-out loss before training,
    recorded as training.validation_at_start in the adapter's metadata next to training.validation (the end)."""
    base_model_revision: str | None = None
    """Recorded in the adapter's metadata (default: the commit hash transformers loaded)."""

    def __post_init__(self) -> None:
        _integer(self, "seed", low=0)
        _integer(self, "checkpoint_every", low=1, allow_none=True)
        _integer(self, "val_every", low=1, allow_none=True)
        if self.resume and self.output is None:
            raise ConfigError("resume needs output (checkpoints live in OUTPUT/lightning/checkpoints)")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite contradict each other: continue the run or replace it")


@dataclass(frozen=True)
class StallConfig:
    """What a loss that does not fall leads to (checked after training; see :class:`StallCheck`)."""

    on_stall: OnStall = "retry"
    """When the loss does not fall: retry (at a lower learning rate), error, or warn."""
    max_retries: int = 2
    """Retries before a stalled run is an error."""
    retry_lr_factor: float = 0.3
    """Each retry's learning rate is the previous one times this."""
    min_loss_drop: float = 0.01
    """The closing mean loss must be below (1 - this) times the opening mean (and the label entropy)."""
    stall_min_steps: int = 20
    """Runs shorter than this many optimiser steps are not checked."""

    def __post_init__(self) -> None:
        if self.on_stall not in ("retry", "error", "warn"):
            raise ConfigError(f"on_stall must be retry, error or warn; got {self.on_stall!r}")
        _integer(self, "max_retries", low=0)
        _integer(self, "stall_min_steps", low=0)
        if isinstance(self.retry_lr_factor, bool) or not isinstance(self.retry_lr_factor, (int, float)) \
                or not 0 < self.retry_lr_factor < 1:
            raise ConfigError(f"retry_lr_factor must be in (0, 1), got {self.retry_lr_factor!r}")
        if isinstance(self.min_loss_drop, bool) or not isinstance(self.min_loss_drop, (int, float)) \
                or not 0 <= self.min_loss_drop < 1:
            raise ConfigError(f"min_loss_drop must be in [0, 1), got {self.min_loss_drop!r}")


_GROUPS: dict[str, type] = {"adapter": AdapterConfig, "data": DataConfig, "optim": OptimConfig,
                            "trainer": TrainerConfig, "run": RunConfig, "stall": StallConfig}


@dataclass(frozen=True)
class TrainingConfig:
    """Every option of one training run, by group (see the module docstring)."""

    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    stall: StallConfig = field(default_factory=StallConfig)

    @staticmethod
    def option_names() -> dict[str, str]:
        """``{option: group}`` for every option of every group."""
        return {f.name: group for group, cls in _GROUPS.items() for f in dataclasses.fields(cls)}

    @classmethod
    def of(cls, base: TrainingConfig | None = None, **options: Any) -> TrainingConfig:
        """A config from flat options (``lr=1e-3, max_steps=50``...), over ``base`` (default: all defaults).

        Raises:
            ConfigError: an unknown option (the known ones are listed), or a value a group refuses.
        """
        names = cls.option_names()
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; available: {', '.join(sorted(names))}")
        base = base or cls()
        groups = {}
        for group in _GROUPS:
            given = {k: v for k, v in options.items() if names[k] == group}
            current = getattr(base, group)
            groups[group] = dataclasses.replace(current, **given) if given else current
        return cls(**groups)

    def flat(self) -> dict[str, Any]:
        """Every option by name (the inverse of :meth:`of`)."""
        return {f.name: getattr(getattr(self, group), f.name)
                for group, gcls in _GROUPS.items() for f in dataclasses.fields(gcls)}
