"""``adamergex demo``: the whole AdaMergeX pipeline on the synthetic world, on a CPU, with no download.

For each adapter type (LoRA, (IA)³) and each seed, :func:`run_demo` trains with the project's Lightning training
(:func:`adamergex.training.train_adapter`) the task adapter in the source language, the reference adapters
(``world_reference``, causal LM) in the source and the target language, and the task adapter in the target
language (the upper bound that AdaMergeX's zero-shot setting lacks). It then applies every strategy registered
in ``STRATEGIES`` to the adapters by role, scores each result with the evaluation harness
(:func:`adamergex.evaluation.evaluate`) on the target language's ``test`` split, and writes ``results.json``,
``results.md`` and ``results.png`` to the output directory, printing the table as well.

The recipe (steps, learning rates, adapter options, task settings) depends on the base model size: see
:data:`RECIPES`. The base model comes from :func:`adamergex.tasks.world.model.load_base_model` (cached).

Every adapter is one job, and each (adapter type, seed) gets one more job that merges and scores once its four
adapters exist. The jobs run on ``--workers`` processes (:mod:`._jobs`), are seeded, and give the same results
with one worker or many. ``results.json`` records ``seconds``: ``base_model`` (load or build), ``training`` and
``merging_and_evaluation`` (summed over the workers), ``jobs_wall`` (the wall time of all jobs) and ``total``;
each adapter's own training seconds are under ``training``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adamergex.errors import ConfigError, OutputExistsError, UnknownNameError

from adamergex.tasks.world import LANGUAGES, WorldTask
from adamergex.tasks.world.model import PRESETS

from . import _jobs
from ._checks import reference_check
from ._report import markdown

__all__ = ["OUTPUT_FILES", "RECIPES", "DemoConfig", "Recipe", "markdown", "run_demo"]

OUTPUT_FILES = ("results.json", "results.md", "results.png")
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
    """Field overrides of the world task (``world_nli`` is trained at ``difficulty="simple"``)."""
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
    """Output directory for results.json, results.md and results.png."""
    overwrite: bool = False
    """Replace results already in the output directory."""
    adapters: tuple[str, ...] = ADAPTER_TYPES
    """Adapter types to train (comma-separated): lora, ia3, dora, loha, lokr."""
    world_seed: int = 0
    """Seed of the world and its languages (also keys the cached base model)."""
    cache_dir: str | None = None
    """Cache root for the base model (default: $ADAMERGEX_CACHE or ~/.cache/adamergex)."""
    workers: int | None = None
    """Processes that train, merge and evaluate adapters in parallel (default: the usable CPU cores; 1 runs
    every job in this process). Results do not depend on it: every job is seeded."""
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


# -- running -----------------------------------------------------------------------------------------------------
def _check_output(path: Path, overwrite: bool, cache_dir: str | None) -> None:
    """The demo writes only :data:`OUTPUT_FILES` into ``path``; it replaces them only when they are a previous
    demo's (``results.json`` holds a demo record), and never writes into the base model's cache (issue #12)."""
    from adamergex._outputs import check_apart

    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output {path} is a file; it must be a directory (or not exist yet)")
    if cache_dir:
        check_apart(path, {"--cache-dir": cache_dir}, inside_only=True)
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


def _is_demo_record(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and {"config", "summary", "per_seed"} <= set(data)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _primary(scores: dict[str, float]) -> tuple[str, float]:
    for name in ("accuracy", "exact_match", "numeric_exact_match"):
        if name in scores:
            return name, scores[name]
    name = sorted(scores)[0]
    return name, scores[name]


@dataclass
class _Context:
    """What every job reads: the options, the recipe, the base model and tokenizer, the task and the reference."""

    cfg: DemoConfig
    recipe: Recipe
    model: Any
    tokenizer: Any
    task: Any
    reference: Any


def _make_context(cfg: DemoConfig, model: Any, tokenizer: Any) -> _Context:
    from adamergex.task import get_task

    recipe = RECIPES[cfg.size]
    return _Context(cfg=cfg, recipe=recipe, model=model, tokenizer=tokenizer,
                    task=get_task(cfg.task, world_seed=cfg.world_seed, **recipe.task_options),
                    reference=get_task("world_reference", world_seed=cfg.world_seed, **recipe.reference_options))


def _spawned_context(cfg: DemoConfig) -> _Context:
    """A spawned worker's context: the base model the parent built or checked, read from the cache."""
    from adamergex.tasks.world.model import load_base_model

    base = load_base_model(cfg.size, cache_dir=cfg.cache_dir, progress=False, world_seed=cfg.world_seed,
                           rebuild="never")
    return _make_context(cfg, base.model, base.tokenizer)


def _train_job(kind: str, seed: int, role: str) -> tuple[bytes, float]:
    """Train one adapter of the demo; returns it as :meth:`AdapterState.to_bytes` and the seconds it took."""
    from adamergex.training import train_adapter

    ctx: _Context = _jobs.context()
    started = time.perf_counter()
    recipe, is_ref = ctx.recipe, role.startswith("ref")
    language = ctx.cfg.target if role in ("ref_target", UPPER) else ctx.task.source_language
    steps = recipe.ref_steps if is_ref else recipe.task_steps
    with warnings.catch_warnings():
        # Lightning's own deprecation chatter, and the stall warning of reference adapters: the base model was
        # pretrained on this very text, so their loss falls little (recorded in results.json, not hidden).
        warnings.filterwarnings("ignore", message=r".*(LeafSpec|training loss did not).*")
        state = train_adapter(
            copy.deepcopy(ctx.model), ctx.tokenizer, ctx.reference if is_ref else ctx.task, language, adapter=kind,
            adapter_options=recipe.adapter_options[kind], max_steps=steps,
            lr=(recipe.ref_lr if is_ref else recipe.lr)[kind],
            batch_size=recipe.ref_batch_size if is_ref else recipe.batch_size, seed=seed, scheduler="linear",
            group_by_length=0 if is_ref else recipe.group_by_length,
            warmup_steps=max(1, steps // 20), on_stall="warn" if is_ref else "retry",
            **({"val_split": "validation", "val_limit": recipe.ref_val_limit, "val_at_start": True,
                "val_every": max(1, steps // 4)}
               if is_ref and recipe.ref_val_limit is not None else {}),
        )
    return state.to_bytes(), time.perf_counter() - started


def _evaluate_job(
    kind: str, seed: int, blobs: dict[str, bytes]
) -> tuple[dict[str, tuple[str, float]], dict[str, str], dict[str, str], float]:
    """Apply every registered strategy to one seed's adapters and score each result (and the upper bound) on the
    target language's test split.

    Returns ``{row: (metric, value)}``, ``{row: earlier row}`` for merges bit-identical to an earlier row's (scored
    once: e.g. ``structure_adaptive`` at its default weights is ``adamergex`` at ``t = 1``), ``{row: error}`` for
    strategies that refused these adapters (e.g. a log-space merge of (IA)³ vectors with negative entries: the
    row is reported as not applicable, the others still run), and the seconds taken.
    """
    from adamergex.adapter_state import AdapterState
    from adamergex.errors import FrameworkError
    from adamergex.evaluation import evaluate
    from adamergex.registry import STRATEGIES

    ctx: _Context = _jobs.context()
    started = time.perf_counter()
    adapters = {role: AdapterState.from_bytes(blob) for role, blob in blobs.items()}
    scores: dict[str, tuple[str, float]] = {}
    same_as: dict[str, str] = {}
    failed: dict[str, str] = {}
    scored: dict[str, str] = {}  # fingerprint of a scored adapter -> its row
    for row in [*STRATEGIES.names(), UPPER]:
        if row == UPPER:
            adapter: Any = adapters[UPPER]
        else:
            strategy = STRATEGIES.get(row)
            try:
                adapter = strategy(strategy.select(adapters), None)
            except FrameworkError as exc:
                failed[row] = f"{type(exc).__name__}: {exc}"
                continue
        fingerprint = adapter.fingerprint() if isinstance(adapter, AdapterState) else None
        if fingerprint in scored:
            same_as[row] = scored[fingerprint]
            scores[row] = scores[same_as[row]]
            continue
        result = evaluate(ctx.model, ctx.tokenizer, ctx.task, [ctx.cfg.target], adapter=adapter, split="test",
                          batch_size=ctx.recipe.eval_batch_size, progress=False)
        scores[row] = _primary(result.scores[ctx.cfg.target])
        if fingerprint is not None:
            scored[fingerprint] = row
    return scores, same_as, failed, time.perf_counter() - started


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo described by ``cfg`` and write its outputs; returns the content of ``results.json``.

    The adapters are trained, merged and scored by ``cfg.workers`` processes (see :mod:`._jobs`); every job is
    seeded, so the results do not depend on how many ran at once.

    Raises:
        OutputExistsError: the output directory already holds results and ``cfg.overwrite`` is false.
        UnknownNameError, ConfigError: bad options (see :class:`DemoConfig`).
        WorldCacheError: the cached base model cannot be used or rebuilt.
    """
    import torch
    from tqdm.auto import tqdm

    from adamergex.adapter_state import AdapterState
    from adamergex.registry import STRATEGIES

    from adamergex.tasks.world.model import load_base_model

    from . import _report

    out = Path(cfg.output)
    _check_output(out, cfg.overwrite, cfg.cache_dir)
    roles = ("task", UPPER, "ref_source", "ref_target")  # longest jobs first, for the pool's sake
    jobs = [(kind, seed, role) for role in roles for kind in cfg.adapters for seed in cfg.seeds]
    workers = min(cfg.workers or _jobs.default_workers(), len(jobs))
    threads = cfg.threads if cfg.threads is not None else (1 if workers > 1 else None)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    base = load_base_model(cfg.size, cache_dir=cfg.cache_dir, progress=cfg.progress, world_seed=cfg.world_seed)
    timings["base_model"] = time.perf_counter() - started
    ctx = _make_context(cfg, base.model, base.tokenizer)
    strategies = STRATEGIES.names()
    rows = [*strategies, UPPER]
    per_seed: dict[str, dict[str, list[float]]] = {kind: {row: [] for row in rows} for kind in cfg.adapters}
    by_seed: dict[tuple[str, int], dict[str, tuple[str, float]]] = {}
    blobs: dict[tuple[str, int, str], bytes] = {}
    job_seconds: dict[tuple[str, int, str], float] = {}
    identical: dict[str, dict[str, str]] = {}
    failed: dict[str, dict[str, str]] = {}
    timings["training"] = timings["merging_and_evaluation"] = 0.0
    t0 = time.perf_counter()
    with _jobs.job_pool(ctx, workers=workers, threads=threads, build=_spawned_context, build_args=(cfg,)) as pool, \
            tqdm(total=len(jobs), desc="training adapters", disable=not cfg.progress) as train_bar, \
            tqdm(total=len(cfg.adapters) * len(cfg.seeds) * len(rows), desc="merging and evaluating",
                 disable=not cfg.progress) as eval_bar:
        pending: dict[Future[Any], tuple[str, Any]] = {pool.submit(_train_job, *job): ("train", job) for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                what, key = pending.pop(future)
                if what == "train":
                    blobs[key], seconds = future.result()
                    job_seconds[key] = seconds
                    timings["training"] += seconds
                    train_bar.update()
                    kind, seed, _ = key
                    if all((kind, seed, r) in blobs for r in roles):  # this seed's adapters are all there
                        evaluation = pool.submit(_evaluate_job, kind, seed, {r: blobs[(kind, seed, r)] for r in roles})
                        pending[evaluation] = ("evaluate", (kind, seed))
                else:
                    by_seed[key], same_as, refused, seconds = future.result()
                    if same_as:
                        identical[f"{key[0]}/seed{key[1]}"] = same_as
                    if refused:
                        failed[f"{key[0]}/seed{key[1]}"] = refused
                    timings["merging_and_evaluation"] += seconds
                    eval_bar.update(len(rows))
    timings["jobs_wall"] = time.perf_counter() - t0
    metric_name = ""
    for kind in cfg.adapters:
        for seed in cfg.seeds:
            for row in rows:
                if row in by_seed[(kind, seed)]:
                    metric_name, value = by_seed[(kind, seed)][row]
                    per_seed[kind][row].append(value)
        for row in rows:  # a row refused on some seed is not applicable to this type: no mean over fewer seeds
            if len(per_seed[kind][row]) < len(cfg.seeds):
                del per_seed[kind][row]

    adapters = {key: AdapterState.from_bytes(blob) for key, blob in blobs.items()}
    training = {
        f"{kind}/seed{seed}/{role}": {
            **{k: v for k, v in adapters[(kind, seed, role)].metadata["training"]["attempts"][-1].items()
               if k in ("lr", "steps", "stalled", "initial_loss", "final_loss")},
            "seconds": round(job_seconds[(kind, seed, role)], 2),
            **({} if not role.startswith("ref") else {
                k: v for k, v in zip(("held_out_loss_start", "held_out_loss_end", "held_out_fell"),
                                     reference_check(adapters[(kind, seed, role)]).values())}),
        }
        for kind in cfg.adapters for seed in cfg.seeds for role in ("task", "ref_source", "ref_target", UPPER)
    }
    task = ctx.task
    source = task.source_language
    results = _report.summarise(
        per_seed, baseline="source_only" if "source_only" in strategies else None, upper=UPPER,
    )
    timings["total"] = time.perf_counter() - started
    record = {
        "config": {**dataclasses.asdict(cfg), "seeds": list(cfg.seeds), "adapters": list(cfg.adapters)},
        "recipe": dataclasses.asdict(ctx.recipe),
        "git_sha": _git_sha(),
        "task": task.name,
        "task_settings": json.loads(json.dumps(dataclasses.asdict(task), default=str)),
        "source_language": source,
        "target_language": cfg.target,
        "split": "test",
        "metric": metric_name,
        "chance": task.chance(cfg.target, "test"),
        "base_model": {"path": str(base.path), "config_hash": base.config.config_hash(),
                       "config": base.config.to_dict(), "built_now": base.built},
        "strategies": strategies,
        "per_seed": per_seed,
        "training": training,
        "identical_merges": identical,
        "not_applicable": failed,
        "summary": results,
        "workers": {"processes": workers, "threads_each": threads},
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    _report.write(out, record)
    return record
