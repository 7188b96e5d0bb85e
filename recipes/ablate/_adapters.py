"""The adapters an ablation run used, read back from its rows and the adapter cache (for ``adamergex diagnose``).

Every finished row names its adapters by cache key (``adapters: {role: key}``); the cache entry's ``key.json``
holds what trained each one (task, language, seed, adapter type). :func:`run_adapters` turns the adapters of the
rows without a negative control into ``diagnose`` entries: reference-task adapters with role ``reference``, task
and upper-bound adapters with role ``task``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adamergex.errors import ConfigError

from ._cache import AdapterCache
from ._results import read_rows

__all__ = ["run_adapters"]


def run_adapters(run_dir: str | Path, cache: AdapterCache, adapter_type: str) -> list[dict[str, Any]]:
    """``[{role, task, language, seed, path, name}]`` for each ``adapter_type`` adapter of ``run_dir``'s ok rows.

    Raises:
        ConfigError: ``run_dir`` has no finished row of that adapter type, or a row names an adapter the cache
            does not hold (another ``--cache``, or pruned).
    """
    rows = [r for r in read_rows(Path(run_dir)).values()
            if r.get("status") == "ok" and r.get("adapter_type") == adapter_type and not r.get("control")]
    if not rows:
        raise ConfigError(f"--run {run_dir} has no finished row of adapter type {adapter_type!r}")
    reference_task = None
    entries: dict[str, dict[str, Any]] = {}
    for row in rows:
        for role, key in (row.get("adapters") or {}).items():
            if key in entries:
                continue
            if not cache.has(key):
                raise ConfigError(f"--run {run_dir}: cell {row['cell']} used adapter {key[:12]}, which the cache "
                                  f"{cache.root} does not hold (pass the run's --cache)")
            inputs = json.loads((cache.entry(key) / "key.json").read_text(encoding="utf-8"))["inputs"]
            if role.startswith("ref_"):
                reference_task = inputs["task"]["name"]
            entries[key] = {"task": inputs["task"]["name"], "language": inputs["language"], "seed": inputs["seed"],
                            "path": str(cache.entry(key) / "adapter"), "name": key[:12]}
    for e in entries.values():
        e["role"] = "reference" if e["task"] == reference_task else "task"
    return sorted(entries.values(), key=lambda e: (e["role"], e["task"], e["language"], e["seed"]))
