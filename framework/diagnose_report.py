"""The record of :func:`adamergex.diagnose.diagnose` as a Markdown table and a plot, and all three written out.

:func:`write_report` renders ``diagnose.json``, ``diagnose.md`` and ``diagnose.png`` into temporary files beside
their targets and renames them into place only once all three are rendered, so an error leaves no partial report
(and a crash between the renames leaves each file either old or new, never half-written).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import OutputExistsError

__all__ = ["FILES", "plot", "side_label", "to_markdown", "write_report"]

FILES = ("diagnose.json", "diagnose.md", "diagnose.png")
_COLOURS = {"signal": "C0", "null_language": "C1", "null_seed": "C2", "same_task_seeds": "C3"}
_STYLES = {"task_vs_reference": "-", "task_vs_task": "--", "reference_vs_reference": ":", "same_task": "-."}
_READING = (
    "How to read it: `signal` is the cosine between two tasks' divergences to the same target language "
    "(`T1_l − T1_src` against `T2_l − T2_src`; `task_vs_reference` is the pair AdaMergeX relies on). AdaMergeX's "
    "assumption is that it is 1: one language vector serves every task. `null_language` is the same cosine with "
    "different target languages and `null_seed` with a seed-to-seed difference in place of a language divergence; "
    "a signal no higher than these baselines means the divergence carries no task-independent language direction "
    "this measurement can see. `same_task_seeds` is one task's divergence against itself from disjoint seeds: how "
    "reproducible a single-seed divergence is (the signal uses seed means where several seeds are given, so it is "
    "less noisy than that). A cosine is `n/a` where a divergence is "
    "zero or below the resolution (see `resolution` in diagnose.json)."
)


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def side_label(side: Mapping[str, Any]) -> str:
    """``nli fr−en`` for a language divergence (seeds added when recorded), ``nli fr: seed 0−1`` for a seed one."""
    seeds = [str(s) for s in side["seeds"]] if any(s is not None for s in side["seeds"]) else []
    if side["language"] == side["minus"]:
        return f"{side['task']} {side['language']}: seed {side['seeds'][0]}−{side['minus_seeds'][0]}"
    text = f"{side['task']} {side['language']}−{side['minus']}"
    return text + (f" (seeds {','.join(seeds)})" if seeds else "")


def _row_name(row: Mapping[str, Any]) -> str:
    return f"{row['type']} ({row['pair']})" if row.get("pair") else str(row["type"])


def to_markdown(record: Mapping[str, Any]) -> str:
    """Per component: the summary table (pooled statistics per comparison type), the per-group means, and every
    comparison's pooled cosine with the divergences' relative sizes ``δ``."""
    by = "layer" if record["grouping"] == "layer" else "module"
    lines = ["# Language divergences across tasks (`adamergex diagnose`)", "",
             f"Adapter type `{record['kind']}`, base model `{record['base_model']}`, source language "
             f"`{record['source_language']}`, {len(record['adapters'])} adapters (SHA-256 fingerprints in "
             f"diagnose.json); tasks: " + ", ".join(f"`{t}` ({r})" for t, r in record["tasks"].items())
             + f"; languages: {', '.join(record['languages'])}.", "", _READING, ""]
    for component, part in record["components"].items():
        lines += [f"## `{component}`: {part['space']}", "",
                  "| comparison | n | pooled cosine: mean | std | min | max |", "|---|---:|---:|---:|---:|---:|"]
        for row in part["summary"]:
            if "missing" in row:
                lines.append(f"| {row['type']} | 0 | not available: {row['missing']} | | | |")
                continue
            p = row["pooled"]
            lines.append(f"| {_row_name(row)} | {row['n']} | {_num(p['mean'])} | {_num(p['std'])} | "
                         f"{_num(p['min'])} | {_num(p['max'])} |")
        present = [r for r in part["summary"] if "missing" not in r]
        lines += ["", f"Mean cosine per {by} (modules per {by} in diagnose.json):", "",
                  f"| {by} | " + " | ".join(_row_name(r) for r in present) + " |",
                  "|---|" + "---:|" * len(present)]
        for g in record["groups"]:
            lines.append(f"| {g} | " + " | ".join(_num(r["per_group"][g]["mean"]) for r in present) + " |")
        lines += ["", "Every comparison (pooled; δ: the divergence's size relative to the adapters it separates):", "",
                  "| comparison | a | b | cosine | δ_a | δ_b |", "|---|---|---|---:|---:|---:|"]
        for c in part["comparisons"]:
            p = c["pooled"]
            lines.append(f"| {_row_name(c)} | {side_label(c['a'])} | {side_label(c['b'])} | {_num(p['cosine'])} | "
                         f"{_num(p['relative_a'], 3)} | {_num(p['relative_b'], 3)} |")
        lines.append("")
    return "\n".join(lines)


def plot(record: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Per component, the mean cosine per group of every comparison type with its min–max band, and the pooled
    value (mean, min–max bar) at the right; PNG through matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(record["groups"])
    parts = list(record["components"].items())
    width = min(7.0 + 0.35 * len(groups), 19.0)  # room for the legend on the right
    fig, axes = plt.subplots(len(parts), 1, figsize=(width, 3.6 * len(parts)), squeeze=False)
    x = list(range(len(groups)))
    for ax, (component, part) in zip(axes[:, 0], parts):
        for row in part["summary"]:
            if "missing" in row:
                continue
            colour, style = _COLOURS.get(row["type"], "C7"), _STYLES.get(row["pair"], "-")
            mean = [float("nan") if row["per_group"][g]["mean"] is None else row["per_group"][g]["mean"] for g in groups]
            lo = [float("nan") if row["per_group"][g]["min"] is None else row["per_group"][g]["min"] for g in groups]
            hi = [float("nan") if row["per_group"][g]["max"] is None else row["per_group"][g]["max"] for g in groups]
            ax.plot(x, mean, style, color=colour, marker="o", markersize=3, label=f"{_row_name(row)} (n={row['n']})")
            ax.fill_between(x, lo, hi, color=colour, alpha=0.12, linewidth=0)
            p = row["pooled"]
            if p["mean"] is not None:
                ax.errorbar([len(groups) + 0.5], [p["mean"]], yerr=[[p["mean"] - p["min"]], [p["max"] - p["mean"]]],
                            color=colour, marker="s", capsize=3)
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_xticks(x + [len(groups) + 0.5], groups + ["pooled"], rotation=90 if len(groups) > 12 else 0,
                      fontsize=7 if len(groups) > 12 else None)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("cosine")
        ax.set_xlabel(record["grouping"])
        ax.set_title(f"{record['kind']} {component}: divergences from {record['source_language']}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _temp_beside(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be read by others
    return Path(tmp)


def write_report(record: Mapping[str, Any], directory: str | os.PathLike[str], *,
                 overwrite: bool = False) -> dict[str, Path]:
    """Write ``diagnose.json``, ``diagnose.md`` and ``diagnose.png`` into ``directory`` (created if needed).

    Raises:
        OutputExistsError: one of the three files exists and ``overwrite`` is false (nothing is written).
    """
    directory = Path(directory)
    targets = {name: directory / name for name in FILES}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"output {', '.join(existing)} already exists; pass --overwrite to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name in FILES:
            temps[name] = _temp_beside(targets[name])
        temps["diagnose.json"].write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                                          encoding="utf-8")
        temps["diagnose.md"].write_text(to_markdown(record), encoding="utf-8")
        plot(record, temps["diagnose.png"])
        for name in FILES:
            os.replace(temps[name], targets[name])
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return targets
