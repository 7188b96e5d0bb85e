"""Run a registered strategy on adapters by role, record provenance, and read/write the result.

:func:`merge` is the library entry point: it loads adapters given as paths, checks roles and parameters through
the strategy's declarations, runs it, optionally compresses a LoRA result to rank ``k`` (exact factored SVD,
truncation error reported), and records in the result's metadata the strategy, its parameters and the SHA-256
of every input. :func:`save_merge_output` writes a PEFT adapter directory (or, for stacking strategies, a
directory with ``composition.json`` and one PEFT adapter directory per member); :func:`load_merge_output` reads
either back. The ``adamergex merge`` and ``adamergex strategies`` commands live in :mod:`adamergex.cli`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapter_state import AdapterState
from .errors import AdapterFormatError, ConfigError, NumericalError
from .io import atomic_directory, load_adapter, read_json, save_adapter
from .registry import ADAPTERS, STRATEGIES
from .strategy import Composition, Strategy, StrategyConfig
from .versions import package_versions

__all__ = [
    "COMPOSITION_NAME",
    "MergeResult",
    "as_state",
    "load_merge_output",
    "merge",
    "save_merge_output",
]

COMPOSITION_NAME = "composition.json"


@dataclass
class MergeResult:
    """What :func:`merge` returns: the merged state or composition plus its provenance record."""

    output: AdapterState | Composition
    provenance: dict[str, Any] = field(default_factory=dict)
    compression: dict[str, Any] | None = None
    """Per-module truncation errors when ``rank`` was given (LoRA only)."""


def as_state(value: AdapterState | str | os.PathLike[str], role: str) -> AdapterState:
    """``value`` as a state: a state as is, a path read as a PEFT adapter directory (errors name ``role``)."""
    if isinstance(value, AdapterState):
        return value
    try:
        return load_adapter(value)
    except AdapterFormatError as exc:
        raise AdapterFormatError(f"{role} adapter: {exc}") from None


def merge(
    strategy: str | Strategy,
    adapters: Mapping[str, AdapterState | str | os.PathLike[str]],
    params: Mapping[str, Any] | StrategyConfig | None = None,
    *,
    rank: int | None = None,
    threads: int | None = 1,
) -> MergeResult:
    """Merge ``adapters`` (role → state or PEFT directory) with ``strategy`` and record provenance.

    ``threads`` caps torch's intra-op threads for the merge (restored afterwards; ``None`` leaves them alone).
    Merging is memory-bound: a second thread gains little, and where cores are shared, OpenMP's waiting
    threads made element-wise passes 5–50× slower in ``benchmarks/merge_speed.py``.

    Raises:
        UnknownNameError: unknown strategy (lists the known ones).
        ConfigError: unknown/out-of-range parameter, missing or unexpected role, ``rank`` on a non-LoRA result.
        IncompatibleAdaptersError: adapters of different base models, types, modules or shapes.
        NumericalError: NaN/Inf tensors, (near-)zero (IA)³ divisors.
        AdapterFormatError: missing or corrupt adapter files (the role is named).
    """
    strat = STRATEGIES.get(strategy) if isinstance(strategy, str) else strategy
    states = {role: as_state(value, role) for role, value in adapters.items()}
    cfg = strat.make_config(params)
    if rank is not None:  # refuse before any work is done
        kinds = sorted({s.kind for s in states.values()})
        if any(strat.output_for(k, cfg) == "stack" for k in kinds):
            raise ConfigError(f"rank applies to merged LoRA adapters; strategy {strat.name!r} returns a composition "
                              f"for {', '.join(kinds)} adapters")
        if not all(hasattr(ADAPTERS.get(k), "compress") for k in kinds):
            raise ConfigError(f"rank applies to LoRA adapters only; the adapters are {kinds}")
    with _torch_threads(threads):
        return _merge(strat, states, cfg, rank)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _merge(strat: Strategy, states: dict[str, AdapterState], cfg: StrategyConfig, rank: int | None) -> MergeResult:
    out = strat(states, cfg)
    _check_finite(out, strat, cfg)  # before compression: an SVD of Inf/NaN is a LinAlgError, not an answer
    provenance: dict[str, Any] = {
        "strategy": strat.name,
        "params": cfg.to_dict(),
        "inputs": {role: s.summary() for role, s in sorted(states.items())},
        "adamergex_version": package_versions("adamergex")["adamergex"],
    }
    compression = None
    if rank is not None and isinstance(out, AdapterState):
        out, compression = ADAPTERS.get(out.kind).compress(out, rank)
        _check_finite(out, strat, cfg)
        provenance["compression"] = {k: v for k, v in compression.items() if k != "per_module"}
    if isinstance(out, AdapterState):
        out.metadata["merge"] = {**out.metadata.get("merge", {}), **provenance}
        dropped = sorted({k for r, s in states.items() if r != "task" for k in s.saved_modules})
        if dropped:
            out.metadata["merge"]["dropped_saved_modules"] = dropped
        out.metadata.pop("source", None)
    return MergeResult(out, provenance, compression)


def _check_finite(out: AdapterState | Composition, strat: Strategy, cfg: StrategyConfig) -> None:
    """Refuse a merge output holding NaN/Inf (the inputs are checked on load; parameters such as ``t=1e39``
    overflow float32 in the merge itself), naming the module and tensor and the parameters that produced it."""
    params = ", ".join(f"{k}={v}" for k, v in sorted(cfg.to_dict().items()))
    where = f"the merge output of strategy {strat.name!r} ({params or 'no parameters'})"
    try:
        if isinstance(out, AdapterState):
            out.check_finite(where)
        else:
            for name, member in out.adapters.items():
                member.check_finite(f"{where}, member {name!r}")
    except NumericalError as exc:
        raise NumericalError(f"{exc}; nothing was written: parameters this large overflow, use smaller ones") from None


def save_merge_output(result: MergeResult | AdapterState | Composition, directory: str | os.PathLike[str], *,
                      overwrite: bool = False) -> Path:
    """Write a merge output atomically: a PEFT adapter directory, or a composition directory."""
    out = result.output if isinstance(result, MergeResult) else result
    provenance = result.provenance if isinstance(result, MergeResult) else {}
    if isinstance(out, AdapterState):
        return save_adapter(out, directory, overwrite=overwrite)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        for name, state in out.adapters.items():
            save_adapter(state, tmp / name)
        record = {"strategy": out.strategy, "adapters": list(out.adapters), "head_from": out.head_from,
                  "params": out.params, "reason": out.reason, "provenance": provenance}
        (tmp / COMPOSITION_NAME).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return Path(directory)


def load_merge_output(directory: str | os.PathLike[str]) -> AdapterState | Composition:
    """Read what :func:`save_merge_output` wrote (a PEFT adapter directory or a composition)."""
    path = Path(directory)
    if (path / COMPOSITION_NAME).exists():
        record = read_json(path / COMPOSITION_NAME)
        try:
            names = [str(n) for n in record["adapters"]]
            head = str(record["head_from"])
        except KeyError as exc:
            raise AdapterFormatError(f"{path / COMPOSITION_NAME} lacks the key {exc}") from None
        adapters = {name: load_adapter(path / name) for name in names}
        if head not in adapters:
            raise AdapterFormatError(f"{path / COMPOSITION_NAME}: head_from {head!r} is not one of {names}")
        return Composition(str(record.get("strategy", "")), adapters, head, dict(record.get("params") or {}),
                           str(record.get("reason") or ""))
    return load_adapter(path)
