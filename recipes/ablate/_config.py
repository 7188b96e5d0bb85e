"""The ablation config: one YAML file, parsed into frozen dataclasses and validated before any training.

Every name is a registry name (``STRATEGIES``, ``TASKS``, ``ADAPTERS``). Every error is a :class:`ConfigError`
(or :class:`UnknownNameError`) whose message opens with the config key path that is wrong, e.g.
``strategies[2].params[0].t: AdaMergeXConfig.t must be in [0.0, inf], got -1.0``. Unknown keys are refused
(a typo must not silently fall back to a default).

Overrides: ``${NAME}`` in any string value is replaced by the environment variable ``NAME`` (an unset variable
is an error naming the key), and ``--set a.b[0].c=VALUE`` (:func:`apply_overrides`, values read as YAML)
replaces one value before validation. The shape (keys and defaults) is the dataclasses below; the shipped
configs in ``benchmarks/ablations/`` are examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adamergex.errors import ConfigError, FrameworkError, UnknownNameError

__all__ = [
    "SPLITS",
    "AblationConfig",
    "AdapterSpec",
    "EvaluationSpec",
    "HeadSpec",
    "ModelSpec",
    "StrategySpec",
    "TaskSpec",
    "TrainRecipe",
    "TuneSpec",
    "apply_overrides",
    "config_hash",
    "load_config",
    "parse_config",
]

SPLITS = ("train", "validation", "test")
BASELINES = ("source_only", "upper_bound")
CONTROLS = ("wrong_language", "swapped", "source_both")
_DTYPES = ("float32", "bfloat16", "float16")


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}" if path else message)


# -- the schema --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainRecipe:
    """How one adapter (or the shared head) is trained: :func:`adamergex.training.train_adapter`'s options."""

    max_steps: int = 100
    """Optimiser steps."""
    lr: float = 1e-4
    """Peak learning rate."""
    batch_size: int = 8
    """Items per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    scheduler: str = "linear"
    """linear, cosine or constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    group_by_length: int = 0
    """Length-sorted windows of this many batches (0: off)."""
    max_length: int | None = None
    """Tokens per item (default: the task's)."""
    limit: int | None = None
    """Train on a seeded subset of this many examples."""
    on_stall: str = "retry"
    """retry, error or warn when the loss does not fall."""
    precision: str = "32-true"
    """Lightning precision (32-true, bf16-mixed, 16-mixed)."""
    val_split: str | None = None
    """Split to validate on (held-out loss recorded in the adapter's metadata; reference adapters whose held-out
    loss did not fall are flagged in the rows and the report)."""
    val_limit: int | None = None
    """Validate on a seeded subset of this many examples."""
    val_at_start: bool = False
    """Also validate before the first step (needs val_split): the held-out loss before and after training."""
    val_every: int | None = None
    """Optimiser steps between validations (default: once at the end); the curve is in the adapter's metadata."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(name, f"must be a positive integer, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise _fail("lr", f"must be a positive number, got {self.lr!r}")
        for name in ("warmup_steps", "group_by_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _fail(name, f"must be a non-negative integer, got {value!r}")
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise _fail("scheduler", f"must be linear, cosine or constant, got {self.scheduler!r}")
        if self.on_stall not in ("retry", "error", "warn"):
            raise _fail("on_stall", f"must be retry, error or warn, got {self.on_stall!r}")
        if self.precision not in ("32-true", "bf16-mixed", "16-mixed"):
            raise _fail("precision", f"must be 32-true, bf16-mixed or 16-mixed, got {self.precision!r}")
        if self.val_split is not None and self.val_split not in SPLITS:
            raise _fail("val_split", f"must be one of {', '.join(SPLITS)} or null, got {self.val_split!r}")
        if self.val_at_start and self.val_split is None:
            raise _fail("val_at_start", "needs val_split (the split the held-out loss is measured on)")
        for name in ("max_length", "limit", "val_limit", "val_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise _fail(name, f"must be a positive integer or null, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """The base model: a synthetic-world preset, a local directory or a Hub id."""

    world: str | None = None
    """Synthetic world preset (tiny, default): the base model of :func:`adamergex.tasks.world.model.load_base_model`."""
    world_seed: int = 0
    """Seed of the world (with ``world``)."""
    path: str | None = None
    """Local model directory (safetensors) or Hugging Face Hub id."""
    revision: str | None = None
    """Hub revision; pin a commit so the adapter cache key names exactly one model."""
    dtype: str = "float32"
    """dtype the base weights are loaded in: float32, bfloat16 or float16."""

    def __post_init__(self) -> None:
        if (self.world is None) == (self.path is None):
            raise _fail("", "set exactly one of `world` (a synthetic-world preset) and `path` (a model directory "
                            f"or Hub id); got world={self.world!r}, path={self.path!r}")
        if self.world is not None:
            from adamergex.tasks.world.model import PRESETS

            if self.world not in PRESETS:
                raise UnknownNameError(f"world: unknown preset {self.world!r}; available: {', '.join(sorted(PRESETS))}")
        if self.dtype not in _DTYPES:
            raise _fail("dtype", f"must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")

    @property
    def is_local(self) -> bool:
        """Whether ``path`` is a directory on this machine (else a Hub id)."""
        return self.path is not None and Path(self.path).is_dir()


@dataclass(frozen=True)
class TaskSpec:
    """A registered task, its field overrides, and its local data files per language."""

    name: str
    """Registered task name."""
    options: dict[str, Any] = field(default_factory=dict)
    """Task field overrides (``get_task(name, **options)``)."""
    data_files: dict[str, Any] = field(default_factory=dict)
    """Per language: one file, or ``{split: file}``; empty: the task's own data (Hub or generated)."""

    def __post_init__(self) -> None:
        from adamergex.registry import TASKS
        from adamergex.task import get_task

        if self.name not in TASKS:
            raise UnknownNameError(f"name: unknown task {self.name!r}; available: {', '.join(TASKS.names())}")
        try:
            get_task(self.name, **self.options)
        except FrameworkError as exc:
            raise _fail("options", str(exc)) from None
        except TypeError as exc:
            raise _fail("options", f"task {self.name!r} refused the options: {exc}") from None
        for lang, files in self.data_files.items():
            entries = files.items() if isinstance(files, Mapping) else [(None, files)]
            for split, path in entries:
                where = f"data_files.{lang}" + (f".{split}" if split is not None else "")
                if split is not None and split not in SPLITS:
                    raise UnknownNameError(f"{where}: unknown split {split!r}; available: {', '.join(SPLITS)}")
                paths = path if isinstance(path, (list, tuple)) else [path]
                for p in paths:
                    if not isinstance(p, str) or not os.path.isfile(p):
                        raise _fail(where, f"data file {p!r} does not exist")

    def task(self) -> Any:
        """The task instance."""
        from adamergex.task import get_task

        return get_task(self.name, **self.options)

    def files(self, language: str) -> Any:
        """The data files of ``language`` as the task contract takes them (``None``: the task's own data)."""
        return self.data_files.get(language)


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter type, its PEFT options and its training recipe per role."""

    type: str
    """Registered adapter type (lora, ia3, ...)."""
    options: dict[str, Any] = field(default_factory=dict)
    """PEFT config options (r, lora_alpha, target_modules...)."""
    task: TrainRecipe = field(default_factory=TrainRecipe)
    """Recipe of task adapters (source-language task adapter and the target-language upper bound)."""
    reference: TrainRecipe = field(default_factory=TrainRecipe)
    """Recipe of reference adapters (they usually need another learning rate)."""
    reference_options: dict[str, Any] | None = None
    """PEFT options of reference adapters when they differ from ``options`` (e.g. the positive control's LoRA on
    embed_tokens and lm_head); default: ``options``."""
    pad_modules: bool = False
    """Before merging, give every adapter of a cell the union of their modules, each added module at its identity
    (LoRA ``ΔW = 0``, (IA)³ ``l = 1``; :func:`adamergex.module_union.pad_to_union`). Needed when
    ``reference_options`` adapts other modules than ``options``."""

    def options_for(self, role: str) -> dict[str, Any]:
        """PEFT options of a ``task`` or ``reference`` adapter."""
        return dict(self.options if role == "task" or self.reference_options is None else self.reference_options)

    def __post_init__(self) -> None:
        from adamergex.registry import ADAPTERS

        if self.type not in ADAPTERS:
            raise UnknownNameError(f"type: unknown adapter type {self.type!r}; available: {', '.join(ADAPTERS.names())}")
        if self.reference_options is not None and not isinstance(self.reference_options, Mapping):
            raise _fail("reference_options", f"must be a mapping of PEFT options or null, got {self.reference_options!r}")
        if self.reference_options is not None and self.reference_options != self.options and not self.pad_modules:
            ref_t, task_t = self.reference_options.get("target_modules"), self.options.get("target_modules")
            if ref_t != task_t:
                raise _fail("pad_modules", f"reference_options adapts {ref_t!r} and options {task_t!r}: merges need "
                                           "one module set; set pad_modules: true to add each missing module at "
                                           "its identity")


@dataclass(frozen=True)
class TuneSpec:
    """Tune the strategy's parameters on the tuning split for each cell, then score the best on the test split."""

    n_trials: int = 10
    """Trials per cell."""
    seed: int = 0
    """Seed of the sampler."""
    limit: int | None = None
    """Seeded subset of the tuning split per language."""

    def __post_init__(self) -> None:
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise _fail("n_trials", f"must be a positive integer, got {self.n_trials!r}")


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy with its parameter settings (each one cell), or ``tune``."""

    name: str
    """Registered strategy name."""
    params: tuple[dict[str, Any], ...] = ({},)
    """Parameter settings, one cell each (default: the strategy's defaults)."""
    tune: TuneSpec | None = None
    """Tune instead of fixed settings."""

    def __post_init__(self) -> None:
        from adamergex.registry import STRATEGIES

        if self.name not in STRATEGIES:
            raise UnknownNameError(f"name: unknown strategy {self.name!r}; available: {', '.join(STRATEGIES.names())}")
        strategy = STRATEGIES.get(self.name)
        for i, params in enumerate(self.params):
            if not isinstance(params, Mapping):
                raise _fail(f"params[{i}]", f"must be a mapping of parameter names to values, got {params!r}")
            for key, value in params.items():
                try:
                    strategy.make_config({key: value})
                except ConfigError as exc:
                    raise _fail(f"params[{i}].{key}", str(exc)) from None
            try:
                strategy.make_config(params)
            except ConfigError as exc:
                raise _fail(f"params[{i}]", str(exc)) from None
        if self.tune is not None and not any(p["tune"] for p in strategy.config.parameters()):
            raise _fail("tune", f"strategy {self.name!r} has no tunable parameters")

    def settings(self) -> list[dict[str, Any] | None]:
        """One entry per cell: a parameter setting, or ``None`` for a tuned cell."""
        return [None] if self.tune is not None else [dict(p) for p in self.params]


@dataclass(frozen=True)
class HeadSpec:
    """A shared reference head (encoders whose checkpoint has no trained MLM head): trained once, frozen."""

    train: TrainRecipe = field(default_factory=TrainRecipe)
    """Recipe of the head training (backbone frozen)."""
    languages: tuple[str, ...] = ()
    """Languages of the head's training text (default: the source and every target)."""


@dataclass(frozen=True)
class EvaluationSpec:
    """How cells are scored."""

    split: str = "test"
    """Split every cell is scored on."""
    metric: str | None = None
    """Metric the report uses (default: the task's first)."""
    batch_size: int = 16
    """Sequences per forward pass."""
    limit: int | None = None
    """Seeded subset of the evaluation split per language."""
    tune_split: str = "validation"
    """Split tuned cells search on (never the test split unless allow_test)."""
    allow_test: bool = False
    """Allow tuning on the test split (deliberate leakage, e.g. an oracle)."""

    def __post_init__(self) -> None:
        from adamergex.task import check_tuning_split

        for name in ("split", "tune_split"):
            if getattr(self, name) not in SPLITS:
                raise UnknownNameError(f"{name}: unknown split {getattr(self, name)!r}; available: {', '.join(SPLITS)}")
        try:
            check_tuning_split(self.tune_split, self.allow_test)
        except ConfigError as exc:
            raise _fail("tune_split", str(exc)) from None
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise _fail("batch_size", f"must be a positive integer, got {self.batch_size!r}")


@dataclass(frozen=True)
class AblationConfig:
    """A whole ablation grid (see ``benchmarks/ablations/*.yaml``)."""

    model: ModelSpec
    """The base model."""
    task: TaskSpec
    """The task that is transferred."""
    reference: TaskSpec
    """The reference task (language modelling) of ``ref_source`` / ``ref_target``."""
    source: str
    """Source language (task adapters are trained in it)."""
    targets: tuple[str, ...]
    """Target languages."""
    adapters: tuple[AdapterSpec, ...]
    """Adapter types."""
    strategies: tuple[StrategySpec, ...]
    """Strategies with their settings."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds."""
    head: HeadSpec | None = None
    """Shared reference head (encoders without a trained MLM head)."""
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    """Scoring."""
    baselines: tuple[str, ...] = BASELINES
    """source_only (added as a strategy if missing) and upper_bound (a target-trained task adapter)."""
    name: str = "ablation"
    """Name of the run (titles of the report)."""
    controls: tuple[str, ...] = ()
    """Negative controls, one extra cell per strategy setting each (label ``<setting>~<control>``), with the
    reference roles replaced: ``wrong_language`` (``ref_target`` is another language's reference adapter: see
    ``control_language``), ``swapped`` (``ref_source`` and ``ref_target`` exchanged), ``source_both``
    (``ref_target`` is the source's reference adapter: a zero language vector). A gain that its control shares
    is not language-specific."""
    control_language: dict[str, str] = field(default_factory=dict)
    """Per target, the language whose reference adapter ``wrong_language`` uses (default: the next target in
    ``targets``, cyclically)."""

    def __post_init__(self) -> None:
        task, reference = self.task.task(), self.reference.task()
        if task.kind == "language_modeling":
            raise _fail("task.name", f"{self.task.name!r} is a language-modelling task; name the task to transfer")
        if reference.kind != "language_modeling":
            raise _fail("reference.name", f"{self.reference.name!r} is a {task.kind} task; the reference task must "
                                          "be language modelling (reference_clm, reference_mlm, reference_text...)")
        for where, spec, t in (("task", self.task, task), ("reference", self.reference, reference)):
            for lang in [self.source, *self.targets]:
                try:
                    t.check_language(lang)
                except UnknownNameError as exc:
                    raise UnknownNameError(f"{'source' if lang == self.source else 'targets'}: {exc}") from None
            for lang in spec.data_files:
                if lang not in (self.source, *self.targets):
                    raise _fail(f"{where}.data_files.{lang}", f"language {lang!r} is neither the source nor a target")
        if not self.targets:
            raise _fail("targets", "name at least one target language")
        if self.source in self.targets or len(set(self.targets)) != len(self.targets):
            raise _fail("targets", f"must be distinct and differ from the source {self.source!r}, got {list(self.targets)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise _fail("seeds", f"must be one or more distinct integers, got {list(self.seeds)}")
        types = [a.type for a in self.adapters]
        if not types or len(set(types)) != len(types):
            raise _fail("adapters", f"must name each adapter type once, got {types}")
        for b in self.baselines:
            if b not in BASELINES:
                raise UnknownNameError(f"baselines: unknown baseline {b!r}; available: {', '.join(BASELINES)}")
        labels = [label for s in self.strategies for label in _labels(s)]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise _fail("strategies", f"each strategy setting must appear once; repeated: {', '.join(dup)}")
        for c in self.controls:
            if c not in CONTROLS:
                raise UnknownNameError(f"controls: unknown control {c!r}; available: {', '.join(CONTROLS)}")
        if len(set(self.controls)) != len(self.controls):
            raise _fail("controls", f"must name each control once, got {list(self.controls)}")
        if not isinstance(self.control_language, Mapping):
            raise _fail("control_language", f"must map targets to languages, got {self.control_language!r}")
        for target, lang in self.control_language.items():
            if target not in self.targets:
                raise _fail(f"control_language.{target}", f"{target!r} is not one of the targets {list(self.targets)}")
            if lang == target:
                raise _fail(f"control_language.{target}", "the wrong language must differ from the target")
            try:
                reference.check_language(lang)
            except UnknownNameError as exc:
                raise UnknownNameError(f"control_language.{target}: {exc}") from None
        if "wrong_language" in self.controls and len(self.targets) < 2 and not self.control_language:
            raise _fail("control_language", f"the wrong_language control needs another language for target "
                                            f"{self.targets[0]!r}: name one here, or list two or more targets")
        if self.head is not None:
            for lang in self.head.languages:
                if lang not in (self.source, *self.targets):
                    raise _fail("head.languages", f"{lang!r} is neither the source nor a target")

    # -- the grid ------------------------------------------------------------------------------------------------
    def strategy_settings(self) -> list[tuple[str, str, dict[str, Any] | None, TuneSpec | None]]:
        """``(label, strategy, params or None, tune spec)`` per strategy setting, source_only first if asked."""
        out = []
        specs = list(self.strategies)
        if "source_only" in self.baselines and not any(s.name == "source_only" for s in specs):
            specs.insert(0, StrategySpec("source_only"))
        for spec in specs:
            for label, params in zip(_labels(spec), spec.settings()):
                out.append((label, spec.name, params, spec.tune))
        return out

    def wrong_language(self, target: str) -> str:
        """The language whose reference adapter the ``wrong_language`` control of ``target`` uses."""
        if target in self.control_language:
            return self.control_language[target]
        return self.targets[(self.targets.index(target) + 1) % len(self.targets)]

    @property
    def head_languages(self) -> tuple[str, ...]:
        """Languages of the shared head's training text."""
        if self.head is None:
            return ()
        return self.head.languages or (self.source, *self.targets)


def _labels(spec: StrategySpec) -> list[str]:
    if spec.tune is not None:
        return [f"{spec.name}[tune]"]
    return [spec.name + (f"[{','.join(f'{k}={v}' for k, v in sorted(p.items()))}]" if p else "") for p in spec.params]


# -- parsing -----------------------------------------------------------------------------------------------------
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, path: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                raise _fail(path, f"environment variable {m.group(1)} is not set (used as ${{{m.group(1)}}})")
            return os.environ[m.group(1)]

        return _ENV.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _build(cls: type, raw: Any, path: str, nested: Mapping[str, Any] | None = None) -> Any:
    """``cls(**raw)`` refusing unknown keys; errors raised inside carry ``path`` in front of their own."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _fail(path, f"must be a mapping, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise _fail(f"{path}.{unknown[0]}" if path else unknown[0],
                    f"unknown key; {cls.__name__} takes {', '.join(names)}")
    kwargs = dict(raw)
    for key, build in (nested or {}).items():
        if key in kwargs:
            kwargs[key] = build(kwargs[key], f"{path}.{key}" if path else key)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise _fail(f"{path}.{missing[0]}" if path else missing[0], "is required")
    try:
        return cls(**kwargs)
    except (ConfigError, UnknownNameError) as exc:
        if str(exc).startswith(path + ".") or not path:
            raise
        message = str(exc)
        joined = f"{path}.{message}" if re.match(r"^[\w.\[\]]+: ", message) else f"{path}: {message}"
        raise type(exc)(joined) from None


def _recipe(raw: Any, path: str) -> TrainRecipe:
    return _build(TrainRecipe, raw, path)  # type: ignore[no-any-return]


def _strategy(raw: Any, path: str) -> StrategySpec:
    if isinstance(raw, str):
        raw = {"name": raw}
    if isinstance(raw, Mapping) and "params" in raw:
        params = raw["params"]
        raw = {**raw, "params": tuple(params) if isinstance(params, list) else (params,)}
    if isinstance(raw, Mapping) and raw.get("tune") is True:
        raw = {**raw, "tune": {}}
    return _build(StrategySpec, raw, path, {"tune": lambda r, p: _build(TuneSpec, r, p)})  # type: ignore[no-any-return]


def _tuple_of(build: Any) -> Any:
    def inner(raw: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise _fail(path, f"must be a list, got {raw!r}")
        return tuple(build(r, f"{path}[{i}]") for i, r in enumerate(raw))
    return inner


def _strings(raw: Any, path: str) -> tuple[Any, ...]:
    if isinstance(raw, (str, int)):
        raw = [raw]
    if not isinstance(raw, list):
        raise _fail(path, f"must be a list, got {raw!r}")
    return tuple(raw)


def parse_config(raw: Mapping[str, Any]) -> AblationConfig:
    """Validate a config given as a mapping (a parsed YAML file); see the module docstring for errors."""
    raw = _expand(raw, "")
    adapter = lambda r, p: _build(AdapterSpec, r, p, {"task": _recipe, "reference": _recipe})  # noqa: E731
    return _build(AblationConfig, raw, "", {  # type: ignore[no-any-return]
        "model": lambda r, p: _build(ModelSpec, r, p),
        "task": lambda r, p: _build(TaskSpec, r, p),
        "reference": lambda r, p: _build(TaskSpec, r, p),
        "adapters": _tuple_of(adapter),
        "strategies": _tuple_of(_strategy),
        "head": lambda r, p: None if r is None else _build(HeadSpec, r, p, {"train": _recipe,
                                                                             "languages": _strings}),
        "evaluation": lambda r, p: _build(EvaluationSpec, r, p),
        "targets": _strings,
        "seeds": _strings,
        "baselines": _strings,
        "controls": _strings,
    })


def apply_overrides(raw: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """``raw`` with each ``KEY.PATH[i]=VALUE`` applied (VALUE read as YAML); a new dict, ``raw`` untouched."""
    import copy

    import yaml

    out = copy.deepcopy(raw)
    for item in assignments:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set must be KEY=VALUE (e.g. task.data_files.en.train=/data/en.jsonl), got {item!r}")
        parts = [p for p in re.split(r"\.|\[(\d+)\]", key.strip()) if p]
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            index: Any = int(part) if part.isdigit() and isinstance(node, list) else part
            if isinstance(node, list):
                if not isinstance(index, int) or index >= len(node):
                    raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} has no item {part}")
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping")
            if last:
                node[index] = yaml.safe_load(text)
            else:
                if isinstance(node, dict) and node.get(index) is None:
                    node[index] = {}
                node = node[index]
    return out


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> tuple[AblationConfig, dict[str, Any]]:
    """``(config, raw mapping after overrides)`` from a YAML file.

    Raises:
        ConfigError: unreadable YAML, or any invalid value (the key path is named).
    """
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {p} must hold a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    return parse_config(raw), raw


def config_hash(raw: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of the (overridden, expanded) config."""
    blob = json.dumps(_expand(raw, ""), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
