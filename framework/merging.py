"""Run a registered strategy on adapters by role, record provenance, and read/write the result.

:func:`merge` is the library entry point: it loads adapters given as paths, checks roles and parameters through
the strategy's declarations, runs it, optionally compresses a LoRA result to rank ``k`` (exact factored SVD,
truncation error reported), and records in the result's metadata the strategy, its parameters and the SHA-256
of every input. :func:`save_merge_output` writes a PEFT adapter directory (or, for stacking strategies, a
directory with ``composition.json`` and one PEFT adapter directory per member); :func:`load_merge_output` reads
either back. ``cli_merge`` and ``cli_strategies`` are the ``adamergex merge`` / ``adamergex strategies`` commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapter_state import AdapterState
from .errors import AdapterFormatError, ConfigError
from .io import atomic_directory, load_adapter, read_json, save_adapter
from .registry import ADAPTERS, STRATEGIES
from .strategy import ROLES, Composition, Strategy, StrategyConfig

__all__ = [
    "COMPOSITION_NAME",
    "MergeResult",
    "cli_merge",
    "cli_strategies",
    "load_merge_output",
    "merge",
    "save_merge_output",
    "strategy_table",
]

COMPOSITION_NAME = "composition.json"


@dataclass
class MergeResult:
    """What :func:`merge` returns: the merged state or composition plus its provenance record."""

    output: AdapterState | Composition
    provenance: dict[str, Any] = field(default_factory=dict)
    compression: dict[str, Any] | None = None
    """Per-module truncation errors when ``rank`` was given (LoRA only)."""


def _as_state(value: AdapterState | str | os.PathLike[str], role: str) -> AdapterState:
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
    states = {role: _as_state(value, role) for role, value in adapters.items()}
    cfg = strat.make_config(params)
    if rank is not None:  # refuse before any work is done
        if strat.output == "stack":
            raise ConfigError(f"rank applies to merged LoRA adapters; strategy {strat.name!r} returns a composition")
        kinds = sorted({s.kind for s in states.values()})
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
    provenance: dict[str, Any] = {
        "strategy": strat.name,
        "params": cfg.to_dict(),
        "inputs": {role: s.summary() for role, s in sorted(states.items())},
        "adamergex_version": _version(),
    }
    compression = None
    if rank is not None and isinstance(out, AdapterState):
        out, compression = ADAPTERS.get(out.kind).compress(out, rank)
        provenance["compression"] = {k: v for k, v in compression.items() if k != "per_module"}
    if isinstance(out, AdapterState):
        out.metadata["merge"] = {**out.metadata.get("merge", {}), **provenance}
        dropped = sorted({k for r, s in states.items() if r != "task" for k in s.saved_modules})
        if dropped:
            out.metadata["merge"]["dropped_saved_modules"] = dropped
        out.metadata.pop("source", None)
    return MergeResult(out, provenance, compression)


def _version() -> str:
    from . import __version__

    return __version__


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
                  "params": out.params, "provenance": provenance}
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
        return Composition(str(record.get("strategy", "")), adapters, head, dict(record.get("params") or {}))
    return load_adapter(path)


# -- CLI ----------------------------------------------------------------------------------------------------------
def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param must look like NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        params[name.strip()] = value
    return params


def cli_merge(argv: list[str]) -> int:
    """``adamergex merge``: merge adapters by role into ``--output`` (nothing is written on error)."""
    parser = argparse.ArgumentParser(
        prog="adamergex merge",
        description="Merge PEFT adapters with a registered strategy. Roles: "
        + "; ".join(f"--{r.replace('_', '-')}: {d}" for r, d in ROLES.items()),
    )
    parser.add_argument("--strategy", required=True, help="registered strategy name (see `adamergex strategies`)")
    parser.add_argument("--task", dest="task", help="task adapter directory (source language)")
    parser.add_argument("--ref-source", dest="ref_source", help="reference adapter directory, source language")
    parser.add_argument("--ref-target", dest="ref_target", help="reference adapter directory, target language")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="strategy parameter")
    parser.add_argument("--rank", type=int, default=None, help="compress a merged LoRA to this rank (exact SVD)")
    parser.add_argument("--output", required=True, help="output directory (PEFT adapter or composition)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    args = parser.parse_args(argv)
    strat = STRATEGIES.get(args.strategy)
    given = {r: getattr(args, r) for r in ROLES if getattr(args, r)}
    adapters = {r: p for r, p in given.items() if r in strat.roles or r in strat.optional_roles}
    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        from .errors import OutputExistsError

        raise OutputExistsError(f"output {out} already exists and is not empty; pass --overwrite to replace it")
    result = merge(strat, adapters, _parse_params(args.param), rank=args.rank)
    save_merge_output(result, out, overwrite=args.overwrite)
    summary: dict[str, Any] = {"strategy": strat.name, "output": str(out), "params": result.provenance["params"]}
    if result.compression is not None:
        summary["compression"] = {k: v for k, v in result.compression.items() if k != "per_module"}
    ignored = sorted(set(given) - set(adapters))
    if ignored:
        summary["ignored_roles"] = ignored
    print(json.dumps(summary, indent=2))
    return 0


def strategy_table(fmt: str = "markdown") -> str:
    """The strategy registry as a Markdown table (name, paper, roles, parameters) or JSON."""
    rows = []
    for name, strat in STRATEGIES.items():
        rows.append({
            "name": name,
            "output": strat.output,
            "roles": list(strat.roles),
            "optional_roles": list(strat.optional_roles),
            "paper": strat.paper,
            "summary": strat.summary,
            "parameters": strat.config.parameters(),
        })
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    lines = ["| strategy | paper | roles | parameters (default) | what it does |", "|---|---|---|---|---|"]
    for row in rows:
        roles = ", ".join(row["roles"] + [f"[{r}]" for r in row["optional_roles"]])
        params = ", ".join(f"`{p['name']}`={p['default']!r}" for p in row["parameters"]) or "none"
        lines.append(f"| `{row['name']}` | {row['paper']} | {roles} | {params} | {row['summary']} |")
    return "\n".join(lines)


def cli_strategies(argv: list[str]) -> int:
    """``adamergex strategies``: list the registry with roles, parameters and papers."""
    parser = argparse.ArgumentParser(prog="adamergex strategies", description="List registered merge strategies.")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    args = parser.parse_args(argv)
    if args.format != "text":
        print(strategy_table(args.format))
        return 0
    for name, strat in STRATEGIES.items():
        roles = ", ".join(list(strat.roles) + [f"[{r}]" for r in strat.optional_roles])
        print(f"{name}  ({strat.output}; roles: {roles})")
        print(f"    {strat.summary}")
        if strat.paper:
            print(f"    paper: {strat.paper}")
        for p in strat.config.parameters():
            rng = p["choices"] if p["choices"] else f"[{p['low']}, {p['high']}]"
            per_group = f"  (per group: --param {p['name']}@GROUP=...)" if p.get("groups") else ""
            print(f"    --param {p['name']}={p['default']!r}  {rng}  {p['help']}{per_group}")
    return 0
