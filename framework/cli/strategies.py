"""``adamergex strategies``: the strategy registry with roles, parameters and papers (text, Markdown or JSON).

The README's strategy table is :func:`strategy_table`'s Markdown; a test keeps the two in sync.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["cli_strategies", "strategy_table"]


def _rows() -> list[dict[str, Any]]:
    from ..registry import ADAPTERS, STRATEGIES

    return [{
        "name": name,
        "output": strat.output,
        "output_by_adapter_type": {kind: strat.output_for(kind) for kind in ADAPTERS.names()},
        "roles": list(strat.roles),
        "optional_roles": list(strat.optional_roles),
        "paper": strat.paper,
        "summary": strat.summary,
        "parameters": strat.config.parameters(),
    } for name, strat in STRATEGIES.items()]


def strategy_table(fmt: str = "markdown") -> str:
    """The strategy registry as a Markdown table (name, paper, roles, parameters) or JSON."""
    rows = _rows()
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
    for row in _rows():
        roles = ", ".join(row["roles"] + [f"[{r}]" for r in row["optional_roles"]])
        output = row["output"]
        if output == "by_type":  # say which types get which
            by = row["output_by_adapter_type"]
            output = "; ".join(f"{o} for {', '.join(k for k in by if by[k] == o)}" for o in ("merge", "stack")
                               if o in by.values())
        print(f"{row['name']}  ({output}; roles: {roles})")
        print(f"    {row['summary']}")
        if row["paper"]:
            print(f"    paper: {row['paper']}")
        for p in row["parameters"]:
            rng = p["choices"] if p["choices"] else f"[{p['low']}, {p['high']}]"
            per_group = f"  (per group: --param {p['name']}@GROUP=...)" if p.get("groups") else ""
            print(f"    --param {p['name']}={p['default']!r}  {rng}  {p['help']}{per_group}")
    return 0
