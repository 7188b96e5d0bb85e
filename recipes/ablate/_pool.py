"""Running a grid on one machine with a process pool: the adapters first, each cell as soon as its adapters exist.

:func:`run_pool` is :func:`~._runner.run_local` spread over ``workers`` processes (:mod:`adamergex.recipes._jobs`:
on Linux they fork after this process has loaded the base model, so none reloads it). Every adapter the unfinished
cells need is one job, :meth:`Session.adapter` (trained into the adapter cache, whose per-key locks keep two
processes from training one key); a cell is submitted once its adapters are all done and runs
:meth:`Session.run_cell` (merge and score: its adapters are loaded from the cache). Each finished cell is appended
to ``RUN_DIR/results.jsonl`` by this process alone. Every training is seeded, so rows and adapters do not depend
on ``workers``.

A cell whose inputs a strategy refuses (any :class:`~adamergex.errors.FrameworkError`, e.g. a log-space merge of
(IA)³ vectors with negative entries) is recorded as a failed row with its error and the grid goes on; any other
exception is a bug and stops the run (rows already appended stay; a rerun resumes).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from .. import _jobs
from .._checks import reference_check
from ._cache import AdapterCache
from ._config import parse_config
from ._grid import AdapterJob, Cell, adapter_jobs, cells
from ._results import append_row, read_rows, run_lock
from ._runner import Session, failed_row, prepare_run_dir

__all__ = ["run_pool"]


def _adapter_job(job: AdapterJob) -> dict[str, Any]:
    """Train (or load) one adapter in a worker; what the run records of it."""
    session: Session = _jobs.context()
    started = time.perf_counter()
    before = len(session.trained)
    state, key = session.adapter(job)
    training = (state.metadata or {}).get("training") or {}
    return {"key": key, "trained": len(session.trained) > before, "seconds": time.perf_counter() - started,
            "attempt": (training.get("attempts") or [{}])[-1],
            "reference_check": reference_check(state) if job.role == "reference" else None}


def _cell_job(cell: Cell) -> dict[str, Any]:
    """Merge and score one cell in a worker; its row (a failed row when a strategy refused the adapters)."""
    from adamergex.errors import FrameworkError

    session: Session = _jobs.context()
    try:
        return session.run_cell(cell)
    except FrameworkError as exc:
        return failed_row(cell, exc)


def _spawned_session(raw: Mapping[str, Any], cache: str, model_cache: str | None) -> Session:
    """A spawned worker's session (no fork: macOS, Windows): the base model this process loaded, read again."""
    return Session(parse_config(raw), AdapterCache(cache), model_cache=model_cache, rebuild="never")


def run_pool(session: Session, raw: Mapping[str, Any], out: Path, *, workers: int, threads: int | None,
             progress: bool = True) -> dict[str, Any]:
    """Run every unfinished cell of ``session.cfg`` (``raw`` is its mapping) on ``workers`` processes.

    Finished cells (an ``ok`` row in ``out``) are skipped, failed ones tried again; the adapters of every cell are
    still looked up (cache hits) so that the summary describes them all.

    Returns:
        ``{"cells", "ran", "skipped", "failed": {cell: error}, "adapters": {job name: {key, trained, seconds,
        attempt, reference_check}}, "seconds": {"training", "merging_and_evaluation", "jobs_wall"}}``;
        ``training`` and ``merging_and_evaluation`` are summed over the workers.

    Raises:
        OutputExistsError: another run holds ``out``, or ``out`` holds a run of another config.
    """
    from tqdm.auto import tqdm

    cfg = session.cfg
    with run_lock(out):
        prepare_run_dir(out, raw)
        grid = cells(cfg)
        done = {cid for cid, row in read_rows(out).items() if row.get("status") == "ok"}
        todo = [c for c in grid if c.id not in done]
        jobs = adapter_jobs(cfg, grid)
        needs = {c.id: set(c.roles(cfg.source).values()) for c in todo}
        session.base_identity()  # loads the base model here, before the pool forks
        session.head()
        seconds = {"training": 0.0, "merging_and_evaluation": 0.0}
        adapters: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        finished: set[AdapterJob] = set()
        started = time.perf_counter()
        build_args = (dict(raw), str(session.cache.root), session.model_cache)
        with _jobs.job_pool(session, workers=workers, threads=threads, build=_spawned_session,
                            build_args=build_args) as pool, \
                tqdm(total=len(jobs), desc="training adapters", disable=not progress) as train_bar, \
                tqdm(total=len(grid), initial=len(grid) - len(todo), desc="merging and evaluating",
                     disable=not progress) as cell_bar:
            pending: dict[Future[Any], Any] = {pool.submit(_adapter_job, job): job for job in jobs}
            waiting = list(todo)
            while pending:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    what = pending.pop(future)
                    if isinstance(what, AdapterJob):
                        adapters[what.name] = future.result()
                        seconds["training"] += adapters[what.name]["seconds"]
                        finished.add(what)
                        train_bar.update()
                        for cell in [c for c in waiting if needs[c.id] <= finished]:
                            waiting.remove(cell)
                            pending[pool.submit(_cell_job, cell)] = cell
                        continue
                    row = future.result()
                    append_row(out, row)
                    if row["status"] != "ok":
                        failed[row["cell"]] = row["error"]
                    else:
                        seconds["merging_and_evaluation"] += row["seconds"]
                    cell_bar.update()
        seconds["jobs_wall"] = time.perf_counter() - started
        return {"cells": len(grid), "ran": len(todo), "skipped": len(grid) - len(todo), "failed": failed,
                "adapters": adapters, "seconds": seconds}
