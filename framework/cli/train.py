"""``adamergex train``: train a PEFT adapter (or a shared reference head) on a task and language with Lightning.

Every option of the library call (the groups of :class:`adamergex.training.TrainingConfig`) is a flag and a YAML
key, next to the command's own (:class:`TrainCommand`: which model, task and language, and how to load the model).
A dataclass field and the docstring under it give the default, the YAML key and the ``--help`` text
(:mod:`._options`); flags given on the command line override the YAML file named by ``--config``
(``--print-config`` prints the resolved options). Example: ``tests/fixtures/training/train_lora.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..models import load_pretrained, objective_of
from ..registry import ADAPTERS
from ..task import get_task
from ._options import add_options, config_values, quiet_libraries

if TYPE_CHECKING:
    from ..training import TrainingConfig

__all__ = ["TrainCommand", "cli_train", "parse_train_args"]


@dataclass(frozen=True)
class TrainCommand:
    """The options of ``adamergex train`` that are not training options (YAML keys are the field names)."""

    model: str = ""
    """Base model: Hugging Face Hub id or local directory (safetensors weights)."""
    task: str = ""
    """Registered task name."""
    language: str = ""
    """Language code of the training data."""
    data_files: list[str] = field(default_factory=list)
    """Local data in the task's schema instead of the Hub, one entry per file: LANG:SPLIT=PATH (one split of one
    language), LANG=PATH (every split of LANG), :SPLIT=PATH or PATH (the same for the command's only language;
    SPLIT=PATH too); SPLIT is train, validation or test, and an entry repeated for one language and split lists
    several files. With --train-head, LANG is one of --head-languages."""
    dtype: str | None = None
    """dtype to load the base weights in (float32, bfloat16, float16; default: bfloat16 with bf16-mixed,
    float16 with 16-mixed, else float32)."""
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
    devices: str = "1"
    """Devices per node (a number or 'auto')."""
    progress_bar: bool = True
    """Show the progress bar."""

    def __post_init__(self) -> None:
        for name in ("model", "task", "language"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must be set (--{name.replace('_', '-')} or '{name}:' in the YAML)")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16; got {self.dtype!r}")
        if not (self.devices == "auto" or str(self.devices).isdigit()):
            raise ConfigError(f"devices must be a number or 'auto'; got {self.devices!r}")

    @property
    def data_files_value(self) -> Any:
        """``data_files`` as the task contract takes it: one language's files (a path, or split → paths), or, for
        a shared head trained on several languages, language → such files (the one grammar of
        :func:`._options.parse_data_files`)."""
        from ._options import parse_data_files

        langs = list(dict.fromkeys(self.head_languages if self.train_head and self.head_languages
                                   else [self.language]))
        files = parse_data_files(self.data_files, languages=langs)
        return None if files is None else (files[langs[0]] if len(langs) == 1 else files)

    def training_options(self) -> dict[str, Any]:
        """The training options this command's own fields imply."""
        return {"data_files": self.data_files_value, "head": self.head, "stack_on": tuple(self.stack_on),
                "devices": int(self.devices) if self.devices.isdigit() else self.devices,
                "progress_bar": self.progress_bar, "base_model_revision": self.revision}


# Training options set through TrainCommand's own fields (their CLI form differs) or by the command itself.
_IMPLIED = ("data_files", "head", "stack_on", "devices", "progress_bar", "base_model_revision", "new_modules")


def _groups() -> list[type]:
    from ..training import _config

    return [_config.AdapterConfig, _config.DataConfig, _config.OptimConfig, _config.TrainerConfig,
            _config.RunConfig, _config.StallConfig]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adamergex train", argument_default=argparse.SUPPRESS,
        description="Train a PEFT adapter on a task and language with Lightning. Options come from flags, a YAML "
                    "file (--config; its keys are the option names with underscores), or both (flags win).")
    parser.add_argument("--config", help="YAML file of options")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options as YAML and exit")
    add_options(parser, TrainCommand)
    for group in _groups():
        add_options(parser, group, skip=_IMPLIED)
    return parser


def parse_train_args(argv: Sequence[str]) -> tuple[TrainCommand, TrainingConfig, bool]:
    """``(command options, training config, print_only)`` from the arguments and the YAML file they name."""
    from ..training import TrainingConfig

    args = _parser().parse_args(list(argv))
    classes = [TrainCommand, *_groups()]
    values = config_values(classes, args, config=getattr(args, "config", None), skip=_IMPLIED)
    if isinstance(values.get("data_files"), str):
        values["data_files"] = [values["data_files"]]
    if isinstance(values.get("data_files"), dict):  # a YAML mapping: KEY=PATH entries, a list value one per path
        values["data_files"] = [f"{k}={p}" for k, v in values["data_files"].items()
                                for p in (v if isinstance(v, list) else [v])]
    for key in ("devices", "revision", "head"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    own = {f.name for f in dataclasses.fields(TrainCommand)}
    command = TrainCommand(**{k: v for k, v in values.items() if k in own})
    training = TrainingConfig.of(**{k: v for k, v in values.items() if k not in own},
                                 **command.training_options())
    return command, training, bool(getattr(args, "print_config", False))


def cli_train(argv: list[str]) -> int:
    """``adamergex train``: see ``adamergex train --help``. Returns the exit status."""
    import yaml

    cmd, cfg, print_only = parse_train_args(argv)
    if print_only:
        shown = {k: v for k, v in cfg.flat().items() if k not in _IMPLIED}
        resolved = {**dataclasses.asdict(cmd), **shown}
        print(yaml.safe_dump(json.loads(json.dumps(resolved, default=str)), sort_keys=False), end="")
        return 0
    if cfg.run.output is None:
        raise ConfigError("output must be set (--output or 'output:' in the YAML)")
    if Path(cfg.run.output).exists() and not Path(cfg.run.output).is_dir():
        raise ConfigError(f"output {cfg.run.output} is a file; --output must name a directory to write the "
                          "adapter to")
    _check_output(cmd, cfg)
    with quiet_libraries(cfg.trainer.verbose):
        return _run(cmd, cfg)


def _check_output(cmd: TrainCommand, cfg: TrainingConfig) -> None:
    """The output is none of the inputs (model, data, head, stacked adapters), and ``--overwrite`` replaces only
    a previous adamergex training output: an adapter, a shared head, or a run's ``lightning/`` directory."""
    from .._outputs import check_apart, check_replaceable, is_adapter_output

    out = Path(str(cfg.run.output))
    files = [entry.split("=", 1)[-1] for entry in cmd.data_files]  # FILE or SPLIT=FILE
    inputs: dict[str, str | None] = {"--model": cmd.model, "--head": cmd.head}
    inputs.update({f"--data-files {f}": f for f in files})
    inputs.update({f"--stack-on {d}": d for d in cmd.stack_on})
    check_apart(out, inputs, kind="directory")
    if cfg.run.overwrite:  # resume continues what is there; a plain run refuses a non-empty output (the library)
        def ours(path: Path) -> bool:
            return is_adapter_output(path) or (path / "head.json").is_file() or (path / "lightning").is_dir()

        check_replaceable(out, overwrite=True, ours=ours, what="an adamergex training output")


def _run(cmd: TrainCommand, cfg: TrainingConfig) -> int:
    import torch

    from ..training import TrainingConfig, head_modules, train_adapter, train_reference_head
    task = get_task(cmd.task, **cfg.data.task_options)
    task.check_language(cmd.language)
    for lang in cmd.head_languages:
        task.check_language(lang)
    if not cmd.train_head:  # unknown types and PEFT options fail in one line before the model loads
        ADAPTERS.get(cfg.adapter.adapter).check_options(cfg.adapter.adapter_options)
    precision = cfg.trainer.precision
    dtype_name = cmd.dtype or {"bf16": "bfloat16", "16": "float16"}.get(precision.split("-")[0], "float32")
    model, tokenizer, new_modules = load_pretrained(
        cmd.model, task=task, objective=cfg.adapter.objective, revision=cmd.revision,
        trust_remote_code=cmd.trust_remote_code, dtype=getattr(torch, dtype_name))
    objective = cfg.adapter.objective or objective_of(model)
    heads = set(head_modules(model))
    fresh_heads = sorted(m for m in new_modules if m.split(".")[0] in heads or m in heads)
    if objective in ("causal_lm", "masked_lm") and fresh_heads and cmd.head is None and not cmd.train_head:
        raise ConfigError(
            f"{cmd.model} has no trained LM head (the checkpoint lacks {fresh_heads}); an adapter trained beside a "
            "random head mostly learns the head. Train a shared head once with --train-head and pass --head DIR")
    if objective == "sequence_classification" and new_modules and not cmd.train_head:
        # the one line left of transformers' load report: what starts random, and that the adapter keeps it
        print(f"adamergex train: {cmd.model} lacks {', '.join(new_modules)}; trained and saved with the adapter",
              file=sys.stderr)
    # what the checkpoint lacked is random at every load: a classifier's adapter saves it (prepare_model)
    cfg = TrainingConfig.of(cfg, objective=objective, new_modules=tuple(new_modules))
    if cmd.train_head:
        head = train_reference_head(model, tokenizer, task, cmd.head_languages or [cmd.language],
                                    TrainingConfig.of(cfg, adapter_options={}))
        print(json.dumps({"head": str(cfg.run.output), "sha256": head.fingerprint(), "tensors": len(head.tensors)}))
        return 0
    state = train_adapter(model, tokenizer, task, cmd.language, cfg)
    attempts = state.metadata["training"]["attempts"]
    print(json.dumps({"adapter": str(cfg.run.output), **state.summary(), "final_loss": attempts[-1].get("final_loss"),
                      "steps": attempts[-1]["steps"]}, default=str))
    return 0
