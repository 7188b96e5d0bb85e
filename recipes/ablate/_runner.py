"""Running cells: the models, the adapters (through the cache), merging, tuning and scoring one cell.

:class:`Session` holds what one process loads once (base models, the shared head, the cache) and turns a
:class:`~._grid.Cell` into a result row. Training goes through :func:`_train_one` alone, the one place that
calls :func:`adamergex.training.train_adapter`. The loop over cells (resumable, one row per finished cell) is
:func:`run_local`; the distributed loop is :mod:`._distributed`.
"""

from __future__ import annotations

import copy
import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adamergex.errors import ConfigError, OutputExistsError

from ._cache import AdapterCache, key_of, model_identity
from ._config import AblationConfig, TrainRecipe, config_hash
from ._grid import UPPER, AdapterJob, Cell, adapter_jobs, cells, head_inputs, job_inputs
from ._results import append_row, read_rows, run_lock
from .._checks import reference_check

__all__ = ["Session", "TrainSpec", "prepare_run_dir", "run_local"]


@dataclass
class TrainSpec:
    """Everything one adapter (or head) training takes."""

    model: Any
    tokenizer: Any
    task: Any
    language: str | list[str]
    adapter: str
    adapter_options: dict[str, Any]
    recipe: TrainRecipe
    seed: int
    data_files: Any = None
    head: Any = None
    train_head: bool = False


def _train_one(spec: TrainSpec) -> Any:
    """Train one adapter (or, with ``train_head``, the shared reference head) with the project's training.

    The one call of :func:`adamergex.training.train_adapter` in the runner: a change of its signature is a
    change here only.
    """
    from adamergex.training import TrainingConfig, train_adapter, train_reference_head

    r = spec.recipe
    cfg = TrainingConfig.of(
        data_files=spec.data_files, max_steps=r.max_steps, lr=r.lr, batch_size=r.batch_size, grad_accum=r.grad_accum,
        warmup_steps=r.warmup_steps, scheduler=r.scheduler, weight_decay=r.weight_decay,
        group_by_length=r.group_by_length, max_length=r.max_length, limit=r.limit, on_stall=r.on_stall,
        precision=r.precision, seed=spec.seed, progress_bar=False, val_split=r.val_split, val_limit=r.val_limit,
        val_at_start=r.val_at_start, val_every=r.val_every,
    )
    with warnings.catch_warnings():
        # Lightning's deprecation chatter; stalls are recorded in the adapter's metadata (on_stall decides).
        warnings.filterwarnings("ignore", message=r".*(LeafSpec|training loss did not).*")
        if spec.train_head:
            return train_reference_head(spec.model, spec.tokenizer, spec.task, spec.language, cfg)
        return train_adapter(spec.model, spec.tokenizer, spec.task, spec.language, TrainingConfig.of(
            cfg, adapter=spec.adapter, adapter_options=spec.adapter_options, head=spec.head))


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


class Session:
    """One process's models, head and cache for a config (loaded lazily, once)."""

    def __init__(self, cfg: AblationConfig, cache: AdapterCache, *, progress: bool = False,
                 model_cache: str | os.PathLike[str] | None = None,
                 rebuild: Literal["auto", "never"] = "auto") -> None:
        """``model_cache`` and ``rebuild`` concern a world base model: its cache root (default
        :func:`~adamergex.tasks.world.model.cache_root`), and whether a missing one is built (``never``: a
        process that must only read what another built)."""
        self.cfg = cfg
        self.cache = cache
        self.progress = progress
        self.model_cache = None if model_cache is None else str(model_cache)
        self.rebuild: Literal["auto", "never"] = rebuild
        self.world_base: Any = None
        """The world base model as loaded (:class:`~adamergex.tasks.world.model.BaseModel`: path, config, whether
        it was built now); ``None`` before loading or for other models."""
        self._models: dict[str, tuple[Any, Any, list[str]]] = {}
        self._base: dict[str, Any] | None = None
        self._head: tuple[Any, str | None] | None = None
        self.trained: list[str] = []
        """Cache keys this session trained (the rest came from the cache)."""
        self.task = cfg.task.task()
        self.reference = cfg.reference.task()

    # -- models ----------------------------------------------------------------------------------------------
    def _load(self, which: str) -> tuple[Any, Any, list[str]]:
        """``(model, tokenizer, modules the checkpoint lacked)`` for ``task`` or ``reference`` training."""
        if which not in self._models:
            m = self.cfg.model
            if m.world is not None:
                from adamergex.tasks.world.model import load_base_model

                base = load_base_model(m.world, cache_dir=self.model_cache, rebuild=self.rebuild,
                                       progress=self.progress, world_seed=m.world_seed)
                if self.world_base is None:  # a reload after a failed attach is not a build
                    self.world_base = base
                model = base.model.to(_torch_dtype(m.dtype))
                self._models = {"task": (model, base.tokenizer, []), "reference": (model, base.tokenizer, [])}
            else:
                from adamergex.models import load_pretrained

                task = self.task if which == "task" else self.reference
                model, tok, new = load_pretrained(m.path, task=task, revision=m.revision,  # type: ignore[arg-type]
                                                  dtype=_torch_dtype(m.dtype))
                model.eval()
                self._models[which] = (model, tok, new)
        return self._models[which]

    def base_identity(self) -> dict[str, Any]:
        """What the cache keys say about the base model: its files' SHA-256 (local), or Hub id and revision."""
        if self._base is None:
            m = self.cfg.model
            if m.world is not None:
                from adamergex.tasks.world.model import get_config

                self._load("task")
                path = self.world_base.path
                ident: dict[str, Any] = {"world": get_config(m.world, world_seed=m.world_seed).config_hash(),
                                         "files": model_identity(path)}
            elif m.is_local:
                ident = {"files": model_identity(m.path)}  # type: ignore[arg-type]
            else:
                ident = {"hub": m.path, "revision": m.revision}
            self._base = {**ident, "dtype": m.dtype}
        return self._base

    # -- adapters --------------------------------------------------------------------------------------------
    def head(self) -> tuple[Any, str | None]:
        """``(shared head or None, its cache key)``: trained once (cached), or refused when it is needed."""
        if self._head is None:
            from adamergex.models import objective_of
            from adamergex.training import head_modules

            model, tok, new = self._load("reference")
            fresh = sorted(n for n in new if n.split(".")[0] in set(head_modules(model)))
            if self.cfg.head is None:
                if fresh and objective_of(model) in ("causal_lm", "masked_lm"):
                    raise ConfigError(
                        f"head: {self.cfg.model.path} has no trained LM head (the checkpoint lacks {fresh}); an "
                        "adapter trained beside a random head mostly learns the head. Add `head:` with a recipe so a "
                        "shared head is trained once and frozen")
                self._head = (None, None)
            else:
                inputs = head_inputs(self.cfg, self.base_identity())
                assert inputs is not None
                key = key_of(inputs)
                files = {lang: self.cfg.reference.files(lang) for lang in self.cfg.head_languages}
                spec = TrainSpec(copy.deepcopy(model), tok, self.reference, list(self.cfg.head_languages), "", {},
                                 self.cfg.head.train, 0, data_files=files if any(files.values()) else None,
                                 train_head=True)
                head, trained = self.cache.get_or_train(key, inputs, lambda: _train_one(spec))
                if trained:
                    self.trained.append(key)
                self._head = (head, key)
        return self._head

    def job_key(self, job: AdapterJob) -> tuple[str, dict[str, Any]]:
        """``(cache key, key inputs)`` of one adapter."""
        head_key = self.head()[1] if job.role == "reference" else None
        inputs = job_inputs(self.cfg, job, self.base_identity(), head_key)
        return key_of(inputs), inputs

    def adapter(self, job: AdapterJob) -> tuple[Any, str]:
        """``(state, cache key)`` of one adapter, trained now if the cache lacks it."""
        key, inputs = self.job_key(job)
        spec = next(a for a in self.cfg.adapters if a.type == job.adapter)
        task_role = job.role == "task"
        model, tok, new = self._load("task" if task_role else "reference")
        options = spec.options_for(job.role)
        if task_role:
            from adamergex.models import objective_of
            from adamergex.training import head_modules

            heads = set(head_modules(model))
            extra = [n for n in new if objective_of(model) == "sequence_classification"
                     and not any(n == h or n.startswith(h + ".") for h in heads)]
            if extra:  # modules the checkpoint lacked (a pooler) travel with the task adapter, as `train` does
                options["modules_to_save"] = [*options.get("modules_to_save", []), *extra]
        data = (self.cfg.task if task_role else self.cfg.reference).files(job.language)
        train = TrainSpec(copy.deepcopy(model), tok, self.task if task_role else self.reference, job.language,
                          job.adapter, options, spec.task if task_role else spec.reference, job.seed,
                          data_files=data, head=None if task_role else self.head()[0])
        state, trained = self.cache.get_or_train(key, inputs, lambda: _train_one(train))
        if trained:
            self.trained.append(key)
        return state, key

    # -- one cell ----------------------------------------------------------------------------------------------
    def run_cell(self, cell: Cell, on_adapter: Callable[[], None] | None = None) -> dict[str, Any]:
        """Train or load the cell's adapters, merge (or tune, then merge the best), score; the row."""
        started = time.perf_counter()
        states: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for role, job in cell.roles(self.cfg.source).items():
            states[role], keys[role] = self.adapter(job)
            if on_adapter is not None:
                on_adapter()
        model, tok, _ = self._load("task")
        try:
            return self._score(cell, states, keys, model, tok, started)
        finally:
            if hasattr(model, "peft_config"):  # an attach that failed midway left PEFT layers: reload next time
                self._models.pop("task", None)
                if self.cfg.model.world is not None:
                    self._models.clear()

    def _score(self, cell: Cell, states: dict[str, Any], keys: dict[str, str], model: Any, tok: Any,
               started: float) -> dict[str, Any]:
        from adamergex.evaluation import evaluate
        from adamergex.merging import merge

        ev = self.cfg.evaluation
        data_files = {cell.target: self.cfg.task.files(cell.target)} if self.cfg.task.files(cell.target) else None
        row: dict[str, Any] = {"cell": cell.id, "adapter_type": cell.adapter, "seed": cell.seed, "target": cell.target,
                               "label": cell.label, "strategy": cell.strategy, "adapters": keys, "split": ev.split}
        if cell.control is not None:
            row["control"] = cell.control
        checks = {role: reference_check(states[role]) for role in ("ref_source", "ref_target") if role in states}
        if checks:
            row["reference_checks"] = checks
        params = cell.params
        if cell.strategy == UPPER:
            merged: Any = states["task"]
        else:
            if next(a for a in self.cfg.adapters if a.type == cell.adapter).pad_modules:
                from adamergex.module_union import pad_to_union

                states = pad_to_union(states)
            if cell.tune is not None:
                row["tune"] = self._tune(cell, states, model, tok, data_files)
                params = row["tune"]["best_params"]
            merged = merge(cell.strategy, states, params).output
        row["params"] = params
        result = evaluate(model, tok, self.task, [cell.target], adapter=merged, split=ev.split, limit=ev.limit,
                          data_files=data_files, batch_size=ev.batch_size, keep_predictions=True, progress=False)
        scores = result.scores[cell.target]
        metric = ev.metric or sorted(scores)[0]
        if metric not in scores:
            raise ConfigError(f"evaluation.metric: task {self.task.name!r} reports {sorted(scores)}, not {metric!r}")
        row.update(metric=metric, scores=scores, value=scores[metric],
                   items=_item_scores(self.task, result.predictions[cell.target], metric),
                   examples_sha256=result.record["examples_sha256"][cell.target],
                   seconds=round(time.perf_counter() - started, 3), status="ok")
        return row

    def _tune(self, cell: Cell, states: Mapping[str, Any], model: Any, tok: Any, data_files: Any) -> dict[str, Any]:
        import optuna

        from adamergex.tuning import evaluation_objective, tune

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would break the progress bars

        ev, spec = self.cfg.evaluation, cell.tune
        assert spec is not None
        inner = evaluation_objective(model, tok, self.task, [cell.target], metric=ev.metric,  # type: ignore[arg-type]
                                     split=ev.tune_split, allow_test=ev.allow_test, limit=spec.limit,
                                     data_files=data_files, batch_size=ev.batch_size)
        trials: list[dict[str, Any]] = []

        def objective(merged: Any, trial: Any) -> float:
            value = inner(merged, trial)
            trials.append({"number": trial.number, "params": dict(trial.params), "value": value})
            return value

        result = tune(cell.strategy, states, objective, n_trials=spec.n_trials, seed=spec.seed,
                      record={"split": ev.tune_split})
        return {"best_params": result.best_params, "best_value": result.best_value, "split": ev.tune_split,
                "n_trials": result.n_trials, "trials": trials}


def _item_scores(task: Any, predictions: list[dict[str, Any]], metric: str) -> list[float]:
    """The metric of each test item alone, in item order (what paired statistics compare)."""
    out = []
    for p in predictions:
        if "label" in p:
            out.append(float(p["prediction"] == p["label"]))
            continue
        m = task.metric()
        m.update([p["answer"]], [tuple(p["references"])])
        value = m.compute()
        value = value[metric] if isinstance(value, Mapping) else value
        out.append(float(value))
    return out


# -- the run directory -------------------------------------------------------------------------------------------
def prepare_run_dir(out: Path, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``config.yaml`` and ``run.json`` (config hash, git commit, versions) once; refuse another config."""
    import yaml

    from adamergex.io import read_json, write_json_atomic
    from adamergex.versions import package_versions

    out.mkdir(parents=True, exist_ok=True)
    digest = config_hash(raw)
    meta_path = out / "run.json"
    if meta_path.exists():
        meta = read_json(meta_path)
        if meta.get("config_hash") != digest:
            raise OutputExistsError(
                f"{out} holds a run of another config (hash {meta.get('config_hash')}, this one {digest}); use "
                "another --output, or the same config to resume it")
        return meta
    meta = {"config_hash": digest, "git_commit": _git_commit(),
            "versions": package_versions("adamergex", "torch", "transformers", "peft", "lightning", "optuna")}
    tmp = out / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(dict(raw), sort_keys=False))
    os.replace(tmp, out / "config.yaml")
    write_json_atomic(meta_path, meta)
    return meta


def _git_commit() -> str | None:
    import subprocess

    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def failed_row(cell: Cell, exc: BaseException) -> dict[str, Any]:
    """The row of a cell that raised: its error and the last frames of the traceback."""
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return {"cell": cell.id, "adapter_type": cell.adapter, "seed": cell.seed, "target": cell.target,
            "label": cell.label, "strategy": cell.strategy, "status": "failed",
            "error": f"{type(exc).__name__}: {exc}", "traceback": tail}


def run_local(cfg: AblationConfig, raw: Mapping[str, Any], out: Path, cache: AdapterCache, *,
              fail_fast: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every unfinished cell in this process, appending one row per cell; returns a summary.

    Finished cells (a row with status ``ok``) are skipped; failed ones are tried again.

    Raises:
        OutputExistsError: another run holds ``out``, or ``out`` holds a run of another config.
        Exception: the first cell's error, with ``fail_fast``.
    """
    from tqdm.auto import tqdm

    with run_lock(out):
        prepare_run_dir(out, raw)
        grid = cells(cfg)
        done = {cid for cid, row in read_rows(out).items() if row.get("status") == "ok"}
        todo = [c for c in grid if c.id not in done]
        session = Session(cfg, cache, progress=progress)
        failed: dict[str, str] = {}
        bar = tqdm(total=len(grid), initial=len(grid) - len(todo), desc="cells", disable=not progress, position=0)
        try:
            for cell in todo:
                bar.set_postfix_str(f"failed {len(failed)}, running {cell.id}", refresh=True)
                inner = tqdm(total=len(cell.roles(cfg.source)), desc="adapters", leave=False, position=1,
                             disable=not progress)
                try:
                    row = session.run_cell(cell, on_adapter=inner.update)
                except Exception as exc:
                    if fail_fast:
                        raise
                    row = failed_row(cell, exc)
                    failed[cell.id] = row["error"]
                finally:
                    inner.close()
                append_row(out, row)
                bar.update()
        finally:
            bar.close()
        return {"cells": len(grid), "ran": len(todo), "skipped": len(grid) - len(todo), "failed": failed,
                "trained": list(session.trained)}


def plan(cfg: AblationConfig, cache: AdapterCache, out: Path | None) -> dict[str, Any]:
    """What a run would do: cells (and those already finished in ``out``), adapters and which are cached."""
    grid = cells(cfg)
    done = {cid for cid, row in read_rows(out).items() if row.get("status") == "ok"} if out else set()
    jobs = adapter_jobs(cfg, [c for c in grid if c.id not in done])
    base = _planned_base(cfg)
    adapters = []
    head_key = None
    if cfg.head is not None and base is not None:
        inputs = head_inputs(cfg, base)
        assert inputs is not None
        head_key = key_of(inputs)
    for job in jobs:
        key = key_of(job_inputs(cfg, job, base, head_key)) if base is not None else None
        adapters.append({"adapter": job.name, "key": key, "cached": bool(key and cache.has(key)
                                                                        and (job.role == "task" or cfg.head is None
                                                                             or cache.has(head_key or "")))})
    steps = sum(next(a for a in cfg.adapters if a.type == j.adapter).task.max_steps if j.role == "task" else
                next(a for a in cfg.adapters if a.type == j.adapter).reference.max_steps
                for j, a in zip(jobs, adapters) if not a["cached"])
    return {"cells": [c.id for c in grid], "finished": sorted(done & {c.id for c in grid}), "adapters": adapters,
            "head": None if cfg.head is None else {"key": head_key, "cached": bool(head_key and cache.has(head_key))},
            "training_steps": steps, "evaluations": len(grid) - len(done),
            "tuning_trials": sum(c.tune.n_trials for c in grid if c.tune is not None and c.id not in done),
            "base_model_known": base is not None}


def _planned_base(cfg: AblationConfig) -> dict[str, Any] | None:
    """The base model's identity without loading it (``None``: a world model not built yet)."""
    m = cfg.model
    if m.world is not None:
        from adamergex.tasks.world.model import WorldCacheError, get_config, model_dir, verify_model_dir

        wcfg = get_config(m.world, world_seed=m.world_seed)
        try:
            verify_model_dir(model_dir(wcfg), wcfg)
        except WorldCacheError:
            return None
        return {"world": wcfg.config_hash(), "files": model_identity(model_dir(wcfg)), "dtype": m.dtype}
    if m.is_local:
        return {"files": model_identity(m.path), "dtype": m.dtype}  # type: ignore[arg-type]
    return {"hub": m.path, "revision": m.revision, "dtype": m.dtype}

