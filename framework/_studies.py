"""Shared Optuna studies done right: storages opened and checked up front, an exact trial budget across workers,
per-trial sampler seeds, dead workers' trials failed by heartbeat, and a study's settings pinned at creation.

What :func:`adamergex.tuning.tune` relies on (private to the framework; the tuner is the public face):

- :func:`open_storage` parses and connects to a storage URL before any trial (a bad URL is one
  :class:`ConfigError` naming it, with its password redacted by :func:`redact_url`), and turns Optuna's
  heartbeat on: a running trial records a heartbeat every ``heartbeat_interval`` seconds, and a RUNNING trial
  whose heartbeat is older than ``grace_period`` belongs to a dead worker and is failed
  (``optuna.storages.fail_stale_trials``) before the next claim.
- :func:`claim_lock` serialises *claims* across workers: a PostgreSQL advisory lock, an ``flock`` beside an
  SQLite file, a thread lock in memory. Under it, a worker counts COMPLETE and RUNNING trials and starts one only
  while fewer than ``n_trials`` are claimed, so N workers end with exactly ``n_trials`` COMPLETE trials: a
  worker that finds the budget claimed but not yet complete waits, and takes over the claim of a trial that ends
  PRUNED or FAIL (pruned and failed trials are not budget).
- :class:`PerTrialSeededSampler` seeds TPE from ``(seed, trial number)``: the draw of trial *k* does not depend
  on which worker runs it, two workers never share a random stream, and a resumed study continues the sequence
  instead of repeating it.
- :func:`check_study_record` stores a study's settings (task, languages, split, metric, limit, data fingerprint,
  adapters' hashes...) at creation and refuses a continuation whose settings differ, naming each difference.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

_logger = logging.getLogger("adamergex.tuning")

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

__all__ = [
    "PerTrialSeededSampler",
    "check_study_record",
    "claim_lock",
    "data_fingerprint",
    "open_storage",
    "redact_url",
    "run_budget",
]

_STORAGE_HELP = "an SQLAlchemy URL such as sqlite:///study.db or postgresql+psycopg2://user:password@host/db"


def redact_url(url: str | None) -> str | None:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``; for writing or printing."""
    if url is None:
        return None
    url = re.sub(r"(?i)((?:^|[?&;])(?:password|sslpassword)=)[^&;]*", r"\1***", url)
    # scheme://user:password@host — the password is everything between the first ':' after '//' and the last '@'
    return re.sub(r"^([A-Za-z][\w+.-]*://[^:/@]*):[^/]*@", r"\1:***@", url)


def _scrub(message: str, url: str) -> str:
    """An error message with the URL's password taken out (drivers may echo the connection string)."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        password = make_url(url).password
        if password:
            message = message.replace(str(password), "***")
    return message.replace(url, str(redact_url(url)))


def open_storage(url: str, *, heartbeat_interval: int = 60, grace_period: int | None = None,
                 engine_kwargs: dict[str, Any] | None = None) -> RDBStorage:
    """Open (creating its tables) the Optuna RDB storage at ``url``, with heartbeats on.

    Args:
        url: SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg2://...``).
        heartbeat_interval: Seconds between a running trial's heartbeats.
        grace_period: Seconds without a heartbeat after which a RUNNING trial counts as dead
            (default ``2 * heartbeat_interval``).
        engine_kwargs: Passed to SQLAlchemy's ``create_engine`` through Optuna (e.g. ``pool_pre_ping``).

    Raises:
        ConfigError: a URL that does not parse, names an unknown or uninstalled driver, or cannot be reached;
            the message names the URL with its password redacted.
    """
    import sqlalchemy.exc
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import make_url

    shown = redact_url(url)
    if heartbeat_interval < 1:
        raise ConfigError(f"heartbeat interval must be at least 1 second, got {heartbeat_interval}")
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:  # NoSuchModuleError is an ArgumentError
        extra = " (install adamergex[postgres])" if url.startswith("postgres") else ""
        raise ConfigError(f"--storage {shown!r}: no database driver for it{extra}: {_scrub(str(exc), url)}") from None
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"--storage must be {_STORAGE_HELP}; got {shown!r}") from None
    try:
        # Optuna creates its tables on first open; two workers opening a fresh PostgreSQL database at once race in
        # that DDL (one fails on pg_type's unique index), so opening is serialised by the same kind of lock
        # claims use.
        with claim_lock(url, "(schema)") as lock, lock(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat options are "experimental" in Optuna
            return RDBStorage(url, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period or 2 * heartbeat_interval, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        first = _scrub(str(getattr(exc, "orig", None) or exc), url).strip().splitlines()
        raise ConfigError(f"cannot open --storage {shown!r}: {first[0] if first else type(exc).__name__}") from None


# -- claims ------------------------------------------------------------------------------------------------------
_THREAD_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def claim_lock(url: str | None, study_name: str) -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """Yield a function returning a context manager that holds the study's claim lock across workers.

    PostgreSQL: ``pg_advisory_lock`` on one held connection; SQLite file: ``fcntl.flock`` on ``FILE.lock``;
    anything else (in memory, other servers): a lock shared by the threads of this process only.
    """
    key = zlib.crc32(f"adamergex-claim:{study_name}".encode()) - 2**31  # a signed 32-bit advisory lock key
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower() if url else ""
    if url is not None and dialect.startswith("postgres"):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

        @contextlib.contextmanager
        def pg() -> Iterator[None]:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

        try:
            yield pg
        finally:
            conn.close()
            engine.dispose()
        return
    path = _sqlite_path(url) if dialect == "sqlite" else None
    if path is not None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: fall back to this process's threads
            path = None
    if path is not None:
        lock_file = open(f"{path}.lock", "a+b")  # noqa: SIM115 - held for the whole run

        @contextlib.contextmanager
        def flocked() -> Iterator[None]:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

        try:
            yield flocked
        finally:
            lock_file.close()
        return
    lock = _THREAD_LOCKS.setdefault(f"{url}|{study_name}", threading.Lock())

    @contextlib.contextmanager
    def threaded() -> Iterator[None]:
        with lock:
            yield

    yield threaded


def _sqlite_path(url: str | None) -> str | None:
    """The database file of an ``sqlite:///FILE`` URL (``None`` for in-memory databases)."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database if url else None
    return database if database and database != ":memory:" and not database.startswith("file::memory") else None


def run_budget(
    study: optuna.Study,
    n_trials: int,
    run_trial: Callable[[optuna.Trial], float],
    lock: Callable[[], contextlib.AbstractContextManager[None]],
    *,
    storage: RDBStorage | None,
    poll: float = 1.0,
) -> int:
    """Run trials of ``study`` until it holds exactly ``n_trials`` COMPLETE trials; returns how many ran here.

    Under ``lock``: stale trials of dead workers are failed, COMPLETE + RUNNING trials are counted, and a trial is
    started (``study.ask``) only while that count is below ``n_trials``. When the budget is claimed but not yet
    complete, this worker polls every ``poll`` seconds: a claim that ends PRUNED or FAIL is taken over.
    ``run_trial`` returns the value or raises ``optuna.TrialPruned``; any other exception fails the trial and
    propagates (as in ``study.optimize``).
    """
    import optuna
    from optuna.trial import TrialState

    ran, waited = 0, False
    while True:
        trial = None
        with lock():
            if storage is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # fail_stale_trials is "experimental" in Optuna
                    optuna.storages.fail_stale_trials(study)
            claimed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            complete = sum(t.state == TrialState.COMPLETE for t in claimed)
            if complete >= n_trials:
                return ran
            if len(claimed) < n_trials:
                with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": beaten here
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = study.ask()
                if storage is not None:  # beat at once, so a worker killed before its first beat is still seen
                    storage.record_heartbeat(trial._trial_id)
        if trial is None:
            if not waited:
                running = sorted(t.number for t in claimed if t.state == TrialState.RUNNING)
                _logger.info(f"the budget of {n_trials} trials is claimed; waiting for trials {running} of other "
                             "workers (a trial that is pruned or fails is taken over; a dead worker's trial after "
                             "the heartbeat grace period)")
                waited = True
            time.sleep(poll)
            continue
        ran += 1
        with _heartbeat(storage, trial):
            try:
                value = run_trial(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
        study.tell(trial, value)


@contextlib.contextmanager
def _heartbeat(storage: RDBStorage | None, trial: optuna.Trial) -> Iterator[None]:
    """Record ``trial``'s heartbeat every interval while the block runs (what ``study.optimize`` does)."""
    interval = storage.get_heartbeat_interval() if storage is not None else None
    if storage is None or interval is None:
        yield
        return
    trial_id = trial._trial_id  # Optuna's heartbeat API is keyed by the storage's trial id
    stop = threading.Event()
    rdb = storage

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; a dead process stops beating
                rdb.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"adamergex-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# -- sampling ----------------------------------------------------------------------------------------------------
def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` in a study seeded ``seed`` (independent streams per trial)."""
    import numpy as np

    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, number]).generate_state(1)[0])


def _sampler_base() -> type:
    import optuna

    return optuna.samplers.BaseSampler


class PerTrialSeededSampler(_sampler_base()):  # type: ignore[misc]
    """TPE whose random state is re-seeded before each trial from ``(seed, trial number)``.

    One shared seed gives every worker the same stream, so two workers started together draw the same values
    and a resumed run repeats the first run's draws. Seeding per trial number keeps runs reproducible (trial
    *k* of a study draws the same given the same history) while no two trials share a stream.
    """

    def __init__(self, seed: int = 0, **tpe_options: Any) -> None:
        import optuna

        self._seed = int(seed)
        self._options = tpe_options
        self._inner: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=self._seed, **tpe_options)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        import optuna

        self._inner = optuna.samplers.TPESampler(seed=trial_seed(self._seed, trial.number), **self._options)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)


# -- what a study was created with -------------------------------------------------------------------------------
_RECORD_KEY = "adamergex_settings"


def check_study_record(study: optuna.Study, facts: Mapping[str, Any], *, where: str) -> None:
    """Store ``facts`` on a new study; refuse to continue a study created with other ones, naming each.

    ``facts`` must be JSON-able; they are compared in their JSON form (tuples and lists alike).

    Raises:
        ConfigError: ``study`` was created with facts that differ from ``facts`` (each differing key is named
            with the study's value and this run's).
    """
    current = json.loads(json.dumps(dict(facts), sort_keys=True, default=str))
    stored = study.user_attrs.get(_RECORD_KEY)
    if stored is None:
        legacy = study.user_attrs.get("inputs")  # studies written before settings were recorded
        if legacy is not None and legacy != current.get("inputs"):
            stored = {"inputs": legacy}
        elif study.trials and legacy is None:
            stored = None  # an Optuna study made elsewhere: adopt it with this run's settings
    if stored is not None:
        keys = sorted(set(stored) | set(current))
        diffs = [f"{k}={stored.get(k)!r} in the study, {current.get(k)!r} in this run"
                 for k in keys if stored.get(k) != current.get(k)]
        if diffs:
            raise ConfigError(
                f"study {study.study_name!r} in {where} was created with other settings: " + "; ".join(diffs)
                + ". Continue it with the study's settings, or pick another --study-name or --storage"
            )
        return
    study.set_user_attr(_RECORD_KEY, current)
    for key, value in current.items():  # also one attribute per fact, for optuna-dashboard and friends
        study.set_user_attr(key, value)


def data_fingerprint(task: Any, languages: Sequence[str], split: str,
                     data_files: Mapping[str, Any] | None) -> dict[str, Any]:
    """What identifies the data a study scores on: the SHA-256 of every local file read for ``split``, or the
    task's settings (dataset ids and pinned revisions) for Hub data."""
    import dataclasses

    settings = json.dumps(dataclasses.asdict(task), sort_keys=True, default=str)
    out: dict[str, Any] = {"task_settings": hashlib.sha256(settings.encode()).hexdigest()}
    if data_files:
        files: dict[str, Any] = {}
        for lang in languages:
            given = data_files.get(lang)
            if given is None:
                continue
            chosen = given if isinstance(given, (str, os.PathLike)) else given.get(split)
            paths = [chosen] if isinstance(chosen, (str, os.PathLike)) else list(chosen or [])
            files[lang] = [_file_sha256(Path(p)) for p in paths]
        out["files"] = files
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ConfigError(f"data file {path} cannot be read: {exc.strerror or exc}") from None
    return h.hexdigest()
