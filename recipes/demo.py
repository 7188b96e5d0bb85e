"""``adamergex demo``: the whole AdaMergeX pipeline on the synthetic world, on a CPU, with no download.

A thin recipe over the ablation runner (:mod:`adamergex.recipes.ablate`): :func:`ablation_config` turns the options
and the :data:`RECIPES` entry of the base model size into an :class:`~adamergex.recipes.ablate.AblationConfig`
(``benchmarks/ablations/world.yaml`` with one target and every registered strategy at its defaults), and
:func:`run_demo` runs its grid with :func:`~adamergex.recipes.ablate.run_pool` on ``--workers`` processes. For
each adapter type and seed that trains the task adapter in the source language, the reference adapters
(``world_reference``, causal LM) in the source and the target language, and the task adapter in the target
language (the upper bound that AdaMergeX's zero-shot setting lacks), each once into the adapter cache that
``adamergex ablate`` uses (a rerun trains nothing); then it applies every strategy registered in ``STRATEGIES``
to the adapters by role and scores each result (and the upper bound) on the target language's ``test`` split, one
row per cell in ``OUTPUT/run/results.jsonl``. ``results.json``, ``results.md`` and ``results.png`` are built from
those rows, and the table is printed.

The base model comes from :func:`adamergex.tasks.world.model.load_base_model` (cached). ``results.json`` records
``seconds``: ``base_model`` (load or build), ``training`` and ``merging_and_evaluation`` (summed over the workers),
``jobs_wall`` (the wall time of all jobs) and ``total``; each adapter's own seconds (and whether it came from the
cache) are under ``training``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adamergex.errors import ConfigError, OutputExistsError, UnknownNameError

from adamergex.tasks.world import LANGUAGES, WorldTask
from adamergex.tasks.world.model import PRESETS

from ._report import markdown

if TYPE_CHECKING:
    from .ablate import AblationConfig, AdapterJob

__all__ = ["OUTPUT_FILES", "RECIPES", "RUN_DIR", "DemoConfig", "Recipe", "ablation_config", "markdown", "run_demo"]

OUTPUT_FILES = ("results.json", "results.md", "results.png")
RUN_DIR = "run"
"""The runner's run directory inside the output (``config.yaml``, ``run.json``, ``results.jsonl``)."""
_RUN_FILES = ("config.yaml", "run.json", "results.jsonl")
"""What the runner writes into the run directory (and ``--overwrite`` removes)."""
_RUN_ENTRIES = (*_RUN_FILES, ".lock", ".config.yaml.tmp", "report")
"""What a demo run directory may hold: the run files, the runner's lock and temporary, ``adamergex report``'s
folder."""
ADAPTER_TYPES = ("lora", "ia3")
"""The adapter types the demo trains by default (its time targets are for these two)."""
UPPER = "upper_bound"
_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _per_type(lora: float, ia3: float) -> dict[str, float]:
    """A rate per adapter type: the low-rank types (DoRA, LoHa, LoKr) take LoRA's (not tuned for them)."""
    return {"lora": lora, "dora": lora, "loha": lora, "lokr": lora, "ia3": ia3}


@dataclass(frozen=True)
class Recipe:
    """How adapters are trained and scored for one base model size."""

    task_steps: int
    """Optimiser steps of each task adapter (source and target)."""
    ref_steps: int
    """Optimiser steps of each reference (causal LM) adapter (default size: 200, where the held-out curve has
    converged; tasks/world/README.md, "Reference budget")."""
    batch_size: int = 16
    """Task examples per step."""
    ref_batch_size: int = 8
    """Reference chunks per step."""
    group_by_length: int = 0
    """Task batches drawn from length-sorted windows of this many batches (0: off); packed reference chunks all
    have one length already."""
    lr: dict[str, float] = field(default_factory=lambda: _per_type(3e-3, 1.0))
    """Peak learning rate of task adapters per adapter type (linear decay after a short warm-up; (IA)³ vectors
    start at 1 and need a large rate to move in a few hundred steps)."""
    ref_lr: dict[str, float] = field(default_factory=lambda: _per_type(3e-3, 0.1))
    """Peak learning rate of reference adapters per adapter type."""
    adapter_options: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "lora": {"r": 8, "lora_alpha": 16, "target_modules": _ATTENTION},
        "dora": {"r": 8, "lora_alpha": 16, "target_modules": _ATTENTION},
        "loha": {"r": 4, "alpha": 8, "target_modules": _ATTENTION},
        "lokr": {"r": 4, "alpha": 8, "target_modules": _ATTENTION},
        "ia3": {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
    })
    """PEFT options per adapter type (the keys are the types the demo can train: ``--adapters``)."""
    task_options: dict[str, Any] = field(default_factory=lambda: {"difficulty": "simple"})
    """Field overrides of the world task (``world_nli`` is trained at ``difficulty="simple"``); those the chosen
    task lacks (``difficulty`` for world_arith and world_qa) are not passed to it."""
    reference_options: dict[str, Any] = field(default_factory=dict)
    """Field overrides of ``world_reference`` (for the reference adapters)."""
    eval_batch_size: int = 64
    """Sequences per forward pass in evaluation."""
    ref_val_limit: int | None = 16
    """Reference adapters are validated before and after training on a seeded subset of this many chunks of the
    ``world_reference`` validation split (``None``: no validation); a reference adapter whose held-out loss did not
    fall is flagged in ``results.json`` (``training.*.held_out_fell``) and in the table."""


RECIPES: dict[str, Recipe] = {
    "default": Recipe(task_steps=160, ref_steps=200, ref_batch_size=4, group_by_length=4,
                      lr=_per_type(6e-3, 1.5), ref_lr=_per_type(6e-3, 0.2),
                      reference_options={"chunk_length": 64}),
    "tiny": Recipe(
        task_steps=12, ref_steps=6, batch_size=8, ref_batch_size=4,
        task_options={"difficulty": "simple", "train_size": 96, "validation_size": 30, "test_size": 30},
        reference_options={"train_size": 40, "validation_size": 10, "test_size": 10, "chunk_length": 64},
    ),
}
"""Training recipe per base model size (``--size``)."""


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``adamergex demo`` (each field is a command-line option)."""

    task: str = "world_nli"
    """World task to transfer: world_nli, world_arith or world_qa."""
    target: str = "lex"
    """Target language: lex, sov or morph (the source is src)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Training seeds (comma-separated); means and spreads are taken over them."""
    size: str = "default"
    """Base model and recipe size: default, or tiny (seconds; for tests)."""
    output: str = "demo-results"
    """Output directory for results.json, results.md and results.png, and run/ (the runner's rows: a run killed
    before writing its results resumes from them)."""
    overwrite: bool = False
    """Replace results already in the output directory (every cell is scored again; the adapters still come
    from the adapter cache)."""
    adapters: tuple[str, ...] = ADAPTER_TYPES
    """Adapter types to train (comma-separated): lora, ia3, dora, loha, lokr."""
    world_seed: int = 0
    """Seed of the world and its languages (also keys the cached base model)."""
    cache_dir: str | None = None
    """Cache root for the base model (default: $ADAMERGEX_CACHE or ~/.cache/adamergex)."""
    adapter_cache: str | None = None
    """Adapter cache directory, shared with `adamergex ablate` (default: $ADAMERGEX_ADAPTER_CACHE, else adapters/
    under the cache root)."""
    workers: int | None = None
    """Processes that train, merge and evaluate adapters in parallel (default: the usable CPU cores; 1 runs
    every job in this process). Results do not depend on it at equal --threads (every job is seeded); one process
    at torch's default thread count rounds differently from workers at one thread each."""
    threads: int | None = None
    """Torch CPU threads of this process and of each worker (default: torch's choice for this process, 1 per
    worker when there are several)."""
    progress: bool = True
    """Show progress bars on stderr."""

    def __post_init__(self) -> None:
        from adamergex.registry import TASKS

        world_tasks = sorted(n for n, cls in TASKS.items() if isinstance(cls, type) and issubclass(cls, WorldTask)
                             and cls.kind != "language_modeling")
        if self.task not in world_tasks:
            raise UnknownNameError(f"unknown demo task {self.task!r}; available: {', '.join(world_tasks)}")
        targets = [lang for lang in LANGUAGES if lang != "src"]
        if self.target not in targets:
            raise UnknownNameError(f"unknown target language {self.target!r}; available: {', '.join(targets)}")
        if self.size not in RECIPES or self.size not in PRESETS:
            raise UnknownNameError(f"unknown size {self.size!r}; available: {', '.join(sorted(RECIPES))}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be one or more distinct integers, got {list(self.seeds)}")
        known = list(RECIPES[self.size].adapter_options)
        for kind in self.adapters:
            if kind not in known:
                raise UnknownNameError(f"unknown adapter type {kind!r}; available: {', '.join(known)}")
        if not self.adapters:
            raise ConfigError("adapters must name at least one adapter type")
        for name in ("threads", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}")


# -- the ablation config ---------------------------------------------------------------------------------------
def _train_recipe(steps: int, lr: float, batch_size: int, group_by_length: int, reference: bool,
                  val_limit: int | None) -> dict[str, Any]:
    """One role's training recipe (``TrainRecipe`` fields): linear decay after a warm-up of 5% of the steps;
    reference adapters warn instead of retrying when their loss stalls (the base model was pretrained on this very
    text, so it falls little: the held-out check reports it) and are validated before training and every quarter
    of their steps (the held-out curve, and whether it converged)."""
    recipe: dict[str, Any] = {"max_steps": steps, "lr": lr, "batch_size": batch_size,
                              "warmup_steps": max(1, steps // 20)}
    if group_by_length:
        recipe["group_by_length"] = group_by_length
    if reference:
        recipe["on_stall"] = "warn"
        if val_limit is not None:
            recipe.update(val_split="validation", val_limit=val_limit, val_at_start=True,
                          val_every=max(1, steps // 4))
    return recipe


def _primary_metric(task: Any) -> str:
    """The metric the demo reports: accuracy, else exact match, else the first the task reports."""
    from adamergex.evaluation import metric_names

    names = metric_names(task)
    return next((n for n in ("accuracy", "exact_match", "numeric_exact_match") if n in names), names[0])


def ablation_config(cfg: DemoConfig) -> tuple[AblationConfig, dict[str, Any]]:
    """The ablation grid the demo runs, as ``(config, its raw mapping)`` (the mapping is what the run directory's
    ``config.yaml`` holds and what its config hash is taken of).

    It is ``benchmarks/ablations/world.yaml`` with ``targets: [cfg.target]``, ``seeds``, ``model.world:
    cfg.size`` and the :data:`RECIPES` entry of that size, except: ``name`` is ``demo``; ``strategies`` are
    every registered strategy at its defaults (no second AdaMergeX ``t``, no tuned cell); ``evaluation.metric``
    is the task's primary one; ``adapters`` are the ``--adapters`` types. ``world_seed`` enters the task and
    reference options only when it is not 0, so that a default demo's adapters have the cache keys of ``adamergex ablate
    world.yaml``'s (one adapter cache serves both).
    """
    from adamergex.registry import STRATEGIES, TASKS
    from adamergex.task import get_task

    from .ablate import parse_config

    recipe = RECIPES[cfg.size]
    seed_option = {"world_seed": cfg.world_seed} if cfg.world_seed else {}
    fields = {f.name for f in dataclasses.fields(TASKS.get(cfg.task))}
    task_options = {**seed_option, **{k: v for k, v in recipe.task_options.items() if k in fields}}
    task = get_task(cfg.task, **task_options)
    adapters = [{
        "type": kind,
        "options": recipe.adapter_options[kind],
        "task": _train_recipe(recipe.task_steps, recipe.lr[kind], recipe.batch_size, recipe.group_by_length,
                              False, None),
        "reference": _train_recipe(recipe.ref_steps, recipe.ref_lr[kind], recipe.ref_batch_size, 0, True,
                                   recipe.ref_val_limit),
    } for kind in cfg.adapters]
    raw: dict[str, Any] = {
        "name": "demo",
        "model": {"world": cfg.size, "world_seed": cfg.world_seed},
        "task": {"name": cfg.task, "options": task_options},
        "reference": {"name": "world_reference", "options": {**seed_option, **recipe.reference_options}},
        "source": task.source_language,
        "targets": [cfg.target],
        "seeds": list(cfg.seeds),
        "adapters": adapters,
        "strategies": STRATEGIES.names(),
        "evaluation": {"split": "test", "metric": _primary_metric(task), "batch_size": recipe.eval_batch_size},
        "baselines": ["source_only", UPPER],
    }
    raw = json.loads(json.dumps(raw))  # plain lists and dicts, as a YAML file gives (config.yaml, the config hash)
    return parse_config(raw), raw


# -- the output directory ----------------------------------------------------------------------------------------
def _check_output(path: Path, overwrite: bool, caches: dict[str, str | None]) -> None:
    """The demo writes only :data:`OUTPUT_FILES` and :data:`RUN_DIR` into ``path``; it replaces them only when they
    are a previous demo's (``results.json`` holds a demo record, ``run/`` holds only run files), and never writes
    into a cache (issue #12)."""
    from adamergex._outputs import check_apart

    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output {path} is a file; it must be a directory (or not exist yet)")
    check_apart(path, caches, inside_only=True)
    existing = [name for name in OUTPUT_FILES if (path / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output {path} already holds results ({', '.join(existing)}); pass --overwrite to replace them"
        )
    if existing and not _is_demo_record(path / "results.json"):
        raise OutputExistsError(
            f"--output {path} is not a previous adamergex demo output (its {', '.join(existing)} hold no demo "
            "record); --overwrite replaces only the demo's own results. Remove them yourself or pick another --output"
        )
    run = path / RUN_DIR
    if run.exists() and (not run.is_dir() or any(p.name not in _RUN_ENTRIES for p in run.iterdir())):
        raise OutputExistsError(
            f"--output {path}: {run} is not a demo run directory (it holds files other than "
            f"{', '.join(_RUN_FILES)} and report/); remove it yourself or pick another --output"
        )


def _is_demo_record(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and {"config", "summary", "per_seed"} <= set(data)


def _fresh_run_dir(run: Path, raw: dict[str, Any], overwrite: bool) -> None:
    """Empty ``run`` with ``overwrite``; else keep it only if it holds a run of these options (resumed: its
    finished cells are not scored again)."""
    from .ablate import config_hash
    from .ablate._results import run_lock

    if not run.is_dir():
        return
    try:
        recorded = json.loads((run / "run.json").read_text(encoding="utf-8")).get("config_hash")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        recorded = None
    if not overwrite and recorded not in (None, config_hash(raw)):
        raise OutputExistsError(
            f"--output {run.parent} holds an unfinished demo run of other options ({run}); pass --overwrite to "
            "replace it, or pick another --output"
        )
    if overwrite or recorded is None:
        with run_lock(run):  # refused while another demo runs on this output
            for name in _RUN_FILES:
                (run / name).unlink(missing_ok=True)


def _adapter_cache_dir(cfg: DemoConfig) -> Path:
    """``--adapter-cache``, else $ADAMERGEX_ADAPTER_CACHE, else ``adapters/`` under the base model's cache root."""
    import os

    from .ablate import default_cache_dir

    if cfg.adapter_cache:
        return Path(cfg.adapter_cache).expanduser()
    if cfg.cache_dir and not os.environ.get("ADAMERGEX_ADAPTER_CACHE"):
        return Path(cfg.cache_dir).expanduser() / "adapters"
    return default_cache_dir()


# -- running -----------------------------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo described by ``cfg`` and write its outputs; returns the content of ``results.json``.

    The adapters are trained, merged and scored by ``cfg.workers`` processes
    (:func:`~adamergex.recipes.ablate.run_pool`); every training is seeded, so the results do not depend on how
    many ran at once.

    Raises:
        OutputExistsError: the output directory already holds results and ``cfg.overwrite`` is false.
        UnknownNameError, ConfigError: bad options (see :class:`DemoConfig`).
        WorldCacheError: the cached base model cannot be used or rebuilt.
    """
    import torch

    from . import _jobs, _report
    from .ablate import AdapterCache, Session, adapter_jobs, cells, run_pool

    out = Path(cfg.output)
    acfg, raw = ablation_config(cfg)
    cache = AdapterCache(_adapter_cache_dir(cfg))
    _check_output(out, cfg.overwrite, {"--cache-dir": cfg.cache_dir, "--adapter-cache": str(cache.root)})
    run = out / RUN_DIR
    _fresh_run_dir(run, raw, cfg.overwrite)
    jobs = adapter_jobs(acfg, cells(acfg))
    workers = min(cfg.workers or _jobs.default_workers(), len(jobs))
    threads = cfg.threads if cfg.threads is not None else (1 if workers > 1 else None)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    session = Session(acfg, cache, progress=cfg.progress, model_cache=cfg.cache_dir)
    session.base_identity()  # loads (or builds) the base model
    base_seconds = time.perf_counter() - started
    summary = run_pool(session, raw, run, workers=workers, threads=threads, progress=cfg.progress)
    record = _record(cfg, acfg, session, run, summary)
    record["workers"] = {"processes": workers, "threads_each": threads}
    trained = sum(a["trained"] for a in summary["adapters"].values())
    record["adapter_cache"] = {"dir": str(cache.root), "trained": trained,
                               "from_cache": len(summary["adapters"]) - trained}
    record["run_dir"] = str(run)
    seconds = {"base_model": base_seconds, **summary["seconds"], "total": time.perf_counter() - started}
    record["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    _report.write(out, record)
    return record


def _demo_role(job: AdapterJob, source: str) -> str:
    """The demo's name of an adapter job's role: task, upper_bound, ref_source or ref_target."""
    if job.role == "task":
        return "task" if job.language == source else UPPER
    return "ref_source" if job.language == source else "ref_target"


def _record(cfg: DemoConfig, acfg: AblationConfig, session: Any, run: Path,
            summary: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` (less workers, cache and seconds) from the run directory's rows and the adapters."""
    from adamergex.io import read_json

    from . import _report
    from .ablate import adapter_jobs, cells, read_rows

    grid = cells(acfg)
    rows = read_rows(run)
    labels = [label for label, *_ in acfg.strategy_settings()] + [UPPER]
    per_seed: dict[str, dict[str, list[float]]] = {kind: {label: [] for label in labels} for kind in cfg.adapters}
    failed: dict[str, dict[str, str]] = {}
    metric = acfg.evaluation.metric
    for cell in grid:
        row = rows[cell.id]
        if row["status"] == "ok":
            per_seed[cell.adapter][cell.label].append(row["value"])
        else:
            failed.setdefault(f"{cell.adapter}/seed{cell.seed}", {})[cell.label] = row["error"]
    for kind in cfg.adapters:  # a row refused on some seed is not applicable to this type: no mean over fewer seeds
        for label in labels:
            if len(per_seed[kind][label]) < len(cfg.seeds):
                del per_seed[kind][label]
    training = {}
    for job in adapter_jobs(acfg, grid):
        info = summary["adapters"][job.name]
        entry = {k: v for k, v in info["attempt"].items()
                 if k in ("lr", "steps", "stalled", "initial_loss", "final_loss")}
        entry.update(seconds=round(info["seconds"], 2), cached=not info["trained"], key=info["key"])
        check = info["reference_check"]
        if check is not None:
            entry.update(held_out_loss_start=check["val_loss_start"], held_out_loss_end=check["val_loss_end"],
                         held_out_fell=check["fell"], held_out_converged=check["converged"])
        training[f"{job.adapter}/seed{job.seed}/{_demo_role(job, acfg.source)}"] = entry
    task, base = session.task, session.world_base
    strategies = [label for label in labels if label != UPPER]
    return {
        "config": {**dataclasses.asdict(cfg), "seeds": list(cfg.seeds), "adapters": list(cfg.adapters)},
        "recipe": dataclasses.asdict(RECIPES[cfg.size]),
        "git_sha": read_json(run / "run.json").get("git_commit"),
        "task": task.name,
        "task_settings": json.loads(json.dumps(dataclasses.asdict(task), default=str)),
        "source_language": acfg.source,
        "target_language": cfg.target,
        "split": acfg.evaluation.split,
        "metric": metric,
        "chance": task.chance(cfg.target, acfg.evaluation.split),
        "base_model": {"path": str(base.path), "config_hash": base.config.config_hash(),
                       "config": base.config.to_dict(), "built_now": base.built},
        "strategies": strategies,
        "per_seed": per_seed,
        "training": training,
        "not_applicable": failed,
        "summary": _report.summarise(per_seed, [rows[c.id] for c in grid], target=cfg.target),
    }
