"""``adamergex ablate``: a whole ablation grid from one YAML file (GitHub issue #9).

Modules (private; import from here): ``_config`` (the YAML schema and its validation), ``_grid`` (cells,
the adapters they need and their cache keys), ``_cache`` (the adapter cache), ``_results`` (the run
directory's ``results.jsonl``), ``_runner`` (one process: models, training, merging, tuning, scoring; the
resumable loop), ``_pool`` (that loop on a process pool of one machine; ``adamergex demo`` runs on it),
``_distributed`` (workers on many machines through Optuna's RDB storage), ``_report`` (tables and plots
recomputed from the raw rows).

A run directory holds ``config.yaml`` (the config as run, overrides applied), ``run.json`` (config hash, git
commit, package versions) and ``results.jsonl`` (one row per finished cell, with per-item scores); ``adamergex
report RUN_DIR`` writes ``report/`` from them.
"""

from __future__ import annotations

from ._adapters import run_adapters
from ._cache import AdapterCache, default_cache_dir, key_of
from ._config import AblationConfig, apply_overrides, config_hash, load_config, parse_config
from ._distributed import run_worker, study_name_for
from ._grid import UPPER, AdapterJob, Cell, adapter_jobs, cells
from ._pool import run_pool
from ._report import write_report
from ._results import RESULTS, append_row, read_rows
from ._runner import Session, plan, run_local

__all__ = [
    "RESULTS",
    "UPPER",
    "AblationConfig",
    "AdapterCache",
    "AdapterJob",
    "Cell",
    "Session",
    "adapter_jobs",
    "append_row",
    "apply_overrides",
    "cells",
    "config_hash",
    "default_cache_dir",
    "key_of",
    "load_config",
    "parse_config",
    "plan",
    "read_rows",
    "run_adapters",
    "run_local",
    "run_pool",
    "run_worker",
    "study_name_for",
    "write_report",
]
