"""Cells spread over many workers and machines by Optuna's RDB storage (PostgreSQL, or SQLite on one machine).

One study per grid (named ``ablate-<config hash>``) holds one *enqueued* trial per cell, with the cell id as its
fixed parameter ``cell``. A worker claims a cell by popping a waiting trial: Optuna moves it from WAITING to
RUNNING with a conditional update, so two workers never pop the same trial. Workers started with the same
command on any machine share the study (and, through a shared directory, the adapter cache, whose per-key lock
makes concurrent trainers of one adapter train it once).

Exactly once, including races and crashes:

* Enqueueing is check-then-insert, so two workers starting together may enqueue a cell twice. A worker runs a
  popped trial only if no trial of the same cell with a *lower number* is waiting, running or complete (the
  cell's params are fixed at enqueue time, so every worker sees the same answer); a duplicate is told PRUNED.
* A running trial records a heartbeat (a thread, every ``heartbeat`` seconds). A worker killed midway stops
  beating; after ``grace`` seconds any worker marks its trial FAIL (:func:`optuna.storages.fail_stale_trials`)
  and enqueues the cell again.
* The finished row (predictions included) is stored on the trial (user attribute ``row``) and appended to the
  worker's ``RUN_DIR/results.jsonl``; when the grid is done each worker writes the rows it lacks, so every
  machine's run directory ends with the whole grid. A failed cell's row is stored too (the trial is COMPLETE):
  the study does not retry it; a local rerun on a run directory does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._cache import AdapterCache
from ._config import AblationConfig, config_hash
from ._grid import cells
from ._results import append_row, read_rows
from ._runner import Session, failed_row, prepare_run_dir

__all__ = ["run_worker", "study_name_for"]


def study_name_for(raw: Mapping[str, Any]) -> str:
    """``ablate-<config hash>``: workers of one config meet in one study."""
    return f"ablate-{config_hash(raw)}"


def _storage(url: str, heartbeat: int, grace: int) -> Any:
    """The grid's storage, opened as the tuner opens its own (serialised table creation, one-line errors)."""
    from adamergex._studies import open_storage

    return open_storage(url, heartbeat_interval=heartbeat, grace_period=grace,
                        engine_kwargs={"pool_pre_ping": True} if url.startswith("postgresql") else None)


def _beat(storage: Any, trial_id: int, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # a transient database error must not kill the cell; the next beat retries
            pass


def run_worker(cfg: AblationConfig, raw: Mapping[str, Any], out: Path, cache: AdapterCache, storage_url: str, *,
               progress: bool = False, heartbeat: int = 10, grace: int = 60, poll: float = 1.0,
               fail_fast: bool = False) -> dict[str, Any]:
    """Take cells from the shared study until every cell is complete; returns this worker's summary."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prepare_run_dir(out, raw)
    storage = _storage(storage_url, heartbeat, grace)
    study = optuna.create_study(study_name=study_name_for(raw), storage=storage, load_if_exists=True,
                                direction="maximize")
    ids = [c.id for c in cells(cfg)]
    by_id = {c.id: c for c in cells(cfg)}
    session = Session(cfg, cache, progress=progress)
    ran: list[str] = []
    duplicates = 0
    live_states = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        claimed = {t.params.get("cell", t.system_attrs.get("fixed_params", {}).get("cell"))
                   for t in trials if t.state in live_states}
        complete = {t.params.get("cell") for t in trials if t.state == TrialState.COMPLETE}
        for cid in ids:
            if cid not in claimed:
                study.enqueue_trial({"cell": cid}, skip_if_exists=False)
        if all(cid in complete for cid in ids):
            break
        if not any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            time.sleep(poll)  # every open cell is running on some worker: wait for it to finish (or go stale)
            continue
        trial = study.ask()
        fixed = storage.get_trial(trial._trial_id).system_attrs.get("fixed_params", {})
        cid = trial.suggest_categorical("cell", ids) if "cell" in fixed else None
        if cid is None:  # nothing was waiting: an ask() creates a fresh trial; give it back and wait
            study.tell(trial, state=TrialState.PRUNED)
            time.sleep(poll)
            continue
        earlier = [t for t in study.get_trials(deepcopy=False, states=live_states)
                   if t.number < trial.number and t.system_attrs.get("fixed_params", {}).get("cell") == cid]
        if earlier:
            trial.set_user_attr("duplicate_of", earlier[0].number)
            study.tell(trial, state=TrialState.PRUNED)
            duplicates += 1
            continue
        stop = threading.Event()
        beat = threading.Thread(target=_beat, args=(storage, trial._trial_id, stop, heartbeat / 2), daemon=True)
        beat.start()
        try:
            try:
                row = session.run_cell(by_id[cid])
            except Exception as exc:
                if fail_fast:
                    study.tell(trial, state=TrialState.FAIL)
                    raise
                row = failed_row(by_id[cid], exc)
        finally:
            stop.set()
            beat.join()
        row["worker"] = {"trial": trial.number}
        trial.set_user_attr("row", row)
        append_row(out, row)
        study.tell(trial, float(row.get("value", 0.0)))
        ran.append(cid)
    have = read_rows(out)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row = t.user_attrs.get("row")
        if row is not None and row["cell"] not in have:
            append_row(out, row)
            have[row["cell"]] = row
    return {"cells": len(ids), "ran": ran, "duplicates_skipped": duplicates, "trained": list(session.trained),
            "study": study.study_name}
