"""``adamergex merge``: merge adapters by role with a registered strategy into ``--output``.

Needs torch and safetensors only (no PEFT, no transformers): a test checks the imports, and
``benchmarks/merge_speed.py`` times the command against a bare ``import torch, safetensors``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._outputs import check_apart, check_replaceable
from ..errors import ConfigError
from ..strategy import ROLES

__all__ = ["cli_merge", "parse_params"]


def parse_params(items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` items into ``{name: value}``; the strategy's config parses each value by its type."""
    params: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param must look like NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        params[name.strip()] = value
    return params


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output directory that a previous adamergex command wrote")
    return parser


def cli_merge(argv: list[str]) -> int:
    """``adamergex merge``: merge adapters by role into ``--output`` (nothing is written on error)."""
    args = _parser().parse_args(argv)
    from ..merging import merge, save_merge_output
    from ..registry import STRATEGIES

    strat = STRATEGIES.get(args.strategy)
    given = {r: getattr(args, r) for r in ROLES if getattr(args, r)}
    adapters = strat.select(given)
    out = Path(args.output)
    # Before any work: never onto an input, and --overwrite replaces only a previous adamergex output (#12).
    check_apart(out, {f"--{r.replace('_', '-')}": v for r, v in given.items()}, kind="directory")
    check_replaceable(out, overwrite=args.overwrite)
    result = merge(strat, adapters, parse_params(args.param), rank=args.rank)
    save_merge_output(result, out, overwrite=args.overwrite)
    summary: dict[str, Any] = {"strategy": strat.name, "output": str(out), "params": result.provenance["params"]}
    if result.compression is not None:
        summary["compression"] = {k: v for k, v in result.compression.items() if k != "per_module"}
    ignored = sorted(set(given) - set(adapters))
    if ignored:
        summary["ignored_roles"] = ignored
    print(json.dumps(summary, indent=2))
    return 0
