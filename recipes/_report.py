"""Summaries, tables and the bar chart of ``adamergex demo`` (pure functions of its per-seed scores and rows)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["markdown", "summarise", "write"]


def summarise(
    per_seed: Mapping[str, Mapping[str, Sequence[float]]], rows: Sequence[Mapping[str, Any]], *, target: str
) -> dict[str, Any]:
    """Per adapter type and row of ``per_seed`` (the rows scored on every seed): mean, sample standard deviation
    and ``n`` over seeds, recomputed from the run's ``rows`` by the ablation report
    (:func:`adamergex.recipes.ablate._report.summarise`), min and max, and the share of the gap
    ``upper_bound − source_only`` that the row closes, ``(row − source_only) / (upper_bound − source_only)`` on
    the means (``None`` without a source_only row or when the gap is not positive)."""
    from .ablate._report import SOURCE, UPPER, gap_closed
    from .ablate._report import summarise as summarise_rows

    stats = summarise_rows([r for r in rows if r.get("status") == "ok" and r["target"] == target
                            and r["label"] in per_seed.get(r["adapter_type"], {})])
    out: dict[str, Any] = {}
    for kind, values in per_seed.items():
        baseline = SOURCE if SOURCE in values else None
        table: dict[str, dict[str, Any]] = {}
        for row, v in values.items():
            closed = gap_closed(stats, row, kind, target) if baseline else None
            table[row] = {**stats[(row, kind, target)], "min": min(v), "max": max(v), "gap_closed": closed}
        gap = table[UPPER]["mean"] - table[SOURCE]["mean"] if baseline and UPPER in table else None
        out[kind] = {"rows": table, "baseline": baseline, "upper": UPPER, "gap": gap}
    return out


def _rows(record: Mapping[str, Any]) -> list[str]:
    """Every strategy of the run, then the upper bound: also rows a strategy refused for some adapter type."""
    summary = record["summary"]
    return [*record["strategies"], next(iter(summary.values()))["upper"]]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(record: Mapping[str, Any]) -> str:
    """The results table (strategy × adapter type, mean ± sample std over seeds, share of the gap closed)."""
    summary = record["summary"]
    kinds = list(summary)
    rows = _rows(record)
    lines = [
        f"# adamergex demo: {record['task']} {record['source_language']} → {record['target_language']}",
        "",
        f"{record['metric']} (%) on the {record['target_language']} `{record['split']}` split, mean ± sample std "
        f"over seeds {', '.join(map(str, record['config']['seeds']))}; chance {_pct(record['chance'])}. "
        "'gap closed' is (strategy − source_only) / (upper_bound − source_only) on the means.",
        "",
        "| strategy | " + " | ".join(f"{k} | {k} gap closed" for k in kinds) + " |",
        "|---|" + "---:|---:|" * len(kinds),
    ]
    for row in rows:
        cells = []
        for k in kinds:
            s = summary[k]["rows"].get(row)
            if s is None:  # the strategy refused this type's adapters (see not_applicable in results.json)
                cells += ["n/a", ""]
                continue
            closed = "" if s["gap_closed"] is None else f"{100 * s['gap_closed']:.0f}%"
            cells += [f"{_pct(s['mean'])} ± {_pct(s['std'])}", closed]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    for k in kinds:
        gap = summary[k]["gap"]
        if gap is not None:
            lines.append(f"- {k}: gap between source_only and upper_bound {_pct(gap)} points")
    reasons = {row: msg for per_seed in record.get("not_applicable", {}).values() for row, msg in per_seed.items()}
    for row, msg in sorted(reasons.items()):
        lines.append(f"- n/a {row}: {msg}")
    flagged = sorted(name for name, t in record.get("training", {}).items() if t.get("held_out_fell") is False)
    if flagged:
        lines.append(f"- **flagged**: reference adapters whose held-out loss did not fall: {', '.join(flagged)}")
    lines += [
        "",
        f"Base model `{record['base_model']['config_hash']}` ({'built now' if record['base_model']['built_now'] else 'cached'}); "
        f"git {record['git_sha'] or 'unknown'}; {record['seconds']['total']:.0f} s in total.",
    ]
    return "\n".join(lines) + "\n"


def _plot(record: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = record["summary"]
    kinds = list(summary)
    rows = _rows(record)
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2, 4))
    for i, k in enumerate(kinds):
        stats = [summary[k]["rows"].get(r) for r in rows]  # None: not applicable to this type, no bar
        means = [100 * s["mean"] if s else math.nan for s in stats]
        stds = [100 * s["std"] if s else 0.0 for s in stats]
        xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=k)
    ax.axhline(100 * record["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=20, ha="right")
    ax.set_ylabel(f"{record['metric']} (%)")
    ax.set_title(f"{record['task']}: {record['source_language']} → {record['target_language']} "
                 f"({record['split']}, {len(record['config']['seeds'])} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(directory: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``directory`` (each file atomically, with
    modes that follow the umask; :func:`adamergex.io.atomic_file`)."""
    from adamergex.io import atomic_file

    out = Path(directory)
    payloads = {
        "results.json": (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode(),
        "results.md": markdown(record).encode(),
    }
    for name, data in payloads.items():
        with atomic_file(out / name) as tmp:
            tmp.write_bytes(data)
    with atomic_file(out / "results.png") as tmp:
        _plot(record, tmp)
