"""``adamergex report RUN_DIR``: tables and plots of an ablation, every number recomputed from the raw rows.

Definitions (``v[c]`` is a cell's score on the evaluation split, ``x[c, i]`` the score of test item ``i`` alone):

* **mean ± std**: over seeds, of ``v`` per strategy setting × adapter type × target; the target average is
  taken per seed first (a seed counts only when it has every target). Standard deviations are sample ones
  (``n − 1``; 0 for one seed). The best strategy per column (upper bound excluded: it is an oracle) is bold.
* **paired difference** against ``source_only``: ``d = mean over seeds and items of x[row] − x[source_only]`` on
  the same items (same ``examples_sha256``; cells whose items differ are not paired), per target and pooled
  over targets. Its 95% CI is a percentile bootstrap (``B`` resamples, seeded): seeds resampled with
  replacement, then items within each (seed, target) block. A row against itself is exactly 0, CI [0, 0].
* **negative controls** (``<setting>~<control>`` rows): the same paired difference, of each setting against its
  control on the same items (``d = x[setting] − x[setting~control]``); a language-specific gain has a CI above 0.
* **reference flags**: reference adapters whose held-out loss (``reference_checks`` of the rows) did not fall.
* **gap closed**: ``(mean v[row] − mean v[source_only]) / (mean v[upper_bound] − mean v[source_only])`` on the
  seed means; empty when the gap is not positive.

Files, in ``RUN_DIR/report/`` (each stamped with git commit, config hash, package versions and split):
``report.md`` (all tables), ``scores.csv``, ``scores.tex``, ``paired.csv``, ``paired.tex``, ``strategies.png``
(per adapter type, seed spread), ``t_curve.png`` (metric against ``t`` from grid cells and tuning trials),
``gap_closed.png`` (heat map per target).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adamergex.errors import ConfigError

__all__ = ["BOOTSTRAP", "gap_closed", "paired", "reference_flags", "summarise", "write_report"]

BOOTSTRAP = 2000
SOURCE, UPPER = "source_only", "upper_bound"


def _stats(values: Sequence[float]) -> dict[str, float]:
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def _ok(rows: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows.values() if r.get("status") == "ok"]


def _order(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    seen: dict[Any, None] = {}
    for r in rows:
        seen.setdefault(r[key], None)
    return list(seen)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(label, adapter type, target or "average"): {mean, std, n}}`` over seeds."""
    values: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in rows:
        values.setdefault((r["label"], r["adapter_type"], r["target"]), {})[r["seed"]] = float(r["value"])
    targets = _order(rows, "target")
    out = {k: _stats(list(v.values())) for k, v in values.items()}
    for label in _order(rows, "label"):
        for kind in _order(rows, "adapter_type"):
            per_target = [values.get((label, kind, t), {}) for t in targets]
            seeds = set.intersection(*(set(p) for p in per_target)) if per_target else set()
            if seeds:
                out[(label, kind, "average")] = _stats(
                    [math.fsum(p[s] for p in per_target) / len(per_target) for s in sorted(seeds)])
    return out


def gap_closed(summary: Mapping[tuple[str, str, str], Mapping[str, float]], label: str, kind: str,
               target: str) -> float | None:
    """Share of the source_only → upper_bound gap that ``label`` closes, on the seed means."""
    try:
        row, lo, hi = (summary[(x, kind, target)]["mean"] for x in (label, SOURCE, UPPER))
    except KeyError:
        return None
    return (row - lo) / (hi - lo) if hi - lo > 0 else None


def _blocks(rows: Sequence[Mapping[str, Any]], label: str, kind: str, targets: Sequence[str],
            baseline: str = SOURCE) -> dict[int, list[Any]]:
    """``{seed: [item differences per target]}`` of ``label`` against ``baseline``, paired on the same items."""
    index = {(r["label"], r["adapter_type"], r["target"], r["seed"]): r for r in rows}
    out: dict[int, list[Any]] = {}
    for (lab, k, target, seed), r in index.items():
        if lab != label or k != kind or target not in targets:
            continue
        base = index.get((baseline, kind, target, seed))
        if base is None or base.get("examples_sha256") != r.get("examples_sha256"):
            continue
        a, b = r["items"], base["items"]
        if len(a) != len(b) or not a:
            continue
        out.setdefault(seed, []).append([x - y for x, y in zip(a, b)])
    return out


def paired(rows: Sequence[Mapping[str, Any]], label: str, kind: str, targets: Sequence[str], *,
           resamples: int = BOOTSTRAP, seed: int = 0, baseline: str = SOURCE) -> dict[str, Any] | None:
    """Paired difference of ``label`` against ``baseline`` (default source_only) over ``targets``:
    ``{diff, low, high, seeds, items}`` (see the module docstring); ``None`` when no cell pairs."""
    import numpy as np

    blocks = _blocks(rows, label, kind, targets, baseline)
    if not blocks:
        return None
    seeds = sorted(blocks)
    arrays = [[np.asarray(d, dtype=np.float64) for d in blocks[s]] for s in seeds]
    diff = float(np.concatenate([a for per in arrays for a in per]).mean())
    rng = np.random.default_rng(seed)
    estimates = np.empty(resamples)
    for b in range(resamples):
        total, count = 0.0, 0
        for s in rng.integers(0, len(seeds), size=len(seeds)):
            for a in arrays[s]:
                pick = a[rng.integers(0, len(a), size=len(a))]
                total += float(pick.sum())
                count += len(a)
        estimates[b] = total / count
    low, high = np.percentile(estimates, [2.5, 97.5])
    return {"diff": diff, "low": float(min(low, diff)), "high": float(max(high, diff)), "seeds": len(seeds),
            "items": sum(len(a) for per in arrays for a in per)}


# -- writing -----------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _stamp(meta: Mapping[str, Any], split: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    return f"git {meta.get('git_commit') or 'unknown'}; config {meta.get('config_hash')}; split {split}; {versions}"


def _tables(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    summary = summarise(rows)
    labels, kinds, targets = _order(rows, "label"), _order(rows, "adapter_type"), _order(rows, "target")
    columns = [(k, t) for k in kinds for t in [*targets, "average"]]
    best = {}
    for col in columns:
        cands = [(summary[(lab, *col)]["mean"], lab) for lab in labels if lab != UPPER and (lab, *col) in summary]
        if cands:
            top = max(c[0] for c in cands)
            best[col] = {lab for v, lab in cands if v == top}
    pairs = []
    for kind in kinds:
        for label in labels:
            if label == UPPER:
                continue
            for target in [*targets, "pooled"]:
                res = paired(rows, label, kind, targets if target == "pooled" else [target])
                if res is not None:
                    closed = gap_closed(summary, label, kind, "average" if target == "pooled" else target)
                    pairs.append({"strategy": label, "adapter_type": kind, "target": target, **res,
                                  "gap_closed": closed})
    controls = []
    for kind in kinds:
        for label in labels:
            base, sep, control = label.rpartition("~")
            if not sep or base not in labels:
                continue
            for target in [*targets, "pooled"]:
                res = paired(rows, base, kind, targets if target == "pooled" else [target], baseline=label)
                if res is not None:
                    controls.append({"strategy": base, "control": control, "adapter_type": kind, "target": target,
                                     **res})
    return {"summary": summary, "labels": labels, "kinds": kinds, "targets": targets, "columns": columns,
            "best": best, "paired": pairs, "controls": controls, "flags": reference_flags(rows)}


def reference_flags(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Reference adapters (one entry per adapter cache key) whose held-out loss did not fall, was not measured
    (``fell`` ``None``) or was still falling at the end (``converged`` ``False``), from the rows'
    ``reference_checks``; sorted by adapter."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        for role, check in (r.get("reference_checks") or {}).items():
            key = (r.get("adapters") or {}).get(role, "")
            if (check.get("fell") is not True or check.get("converged") is False) and key not in seen:
                language = r["target"] if role == "ref_target" and not r.get("control") else None
                seen[key] = {"adapter": key, "adapter_type": r["adapter_type"], "seed": r["seed"], "role": role,
                             "language": language, **check}
    return sorted(seen.values(), key=lambda f: (f["adapter_type"], f["seed"], f["role"], f["adapter"]))


def _markdown(t: Mapping[str, Any], metric: str, stamp: str, name: str) -> str:
    cols = t["columns"]
    lines = [f"# {name}: {metric} (%), mean ± std over seeds", "", f"<sub>{stamp}</sub>", "",
             "| strategy | " + " | ".join(f"{k} {tg}" for k, tg in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for lab in t["labels"]:
        cells = []
        for col in cols:
            s = t["summary"].get((lab, *col))
            text = "" if s is None else f"{_pct(s['mean'])} ± {_pct(s['std'])}"
            cells.append(f"**{text}**" if s is not None and lab in t["best"].get(col, ()) else text)
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    lines += ["", "Best per column in bold (upper_bound excluded).", "",
              "## Paired difference against source_only (points, 95% bootstrap CI over seeds and items)", "",
              "| strategy | adapter | target | Δ | 95% CI | gap closed | seeds | items |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for p in t["paired"]:
        closed = "" if p["gap_closed"] is None else f"{100 * p['gap_closed']:.0f}%"
        lines.append(f"| {p['strategy']} | {p['adapter_type']} | {p['target']} | {100 * p['diff']:+.1f} | "
                     f"[{100 * p['low']:+.1f}, {100 * p['high']:+.1f}] | {closed} | {p['seeds']} | {p['items']} |")
    if t.get("controls"):
        lines += ["", "## Each strategy against its negative control (points, paired, 95% bootstrap CI)", "",
                  "Δ = strategy − the same merge with the control's reference roles (wrong_language: another "
                  "language's ref_target; swapped: ref_source and ref_target exchanged; source_both: ref_source on "
                  "both sides). A language-specific gain has Δ > 0 with a CI above 0.", "",
                  "| strategy | control | adapter | target | Δ | 95% CI | seeds | items |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for c in t["controls"]:
            lines.append(f"| {c['strategy']} | {c['control']} | {c['adapter_type']} | {c['target']} | "
                         f"{100 * c['diff']:+.1f} | [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}] | {c['seeds']} | "
                         f"{c['items']} |")
    flags = t.get("flags") or []
    lines += ["", "## Reference adapters", ""]
    if not flags:
        lines.append("Every reference adapter's held-out loss fell during training.")
    else:
        lines += ["**Flagged**: reference adapters whose held-out loss did not fall (or was not measured: train "
                  "them with `val_split` and `val_at_start`), or was still falling in its last validation interval "
                  "(`val_every`: a budget too short to converge); their language vector is weak evidence.", "",
                  "| adapter type | seed | role | held-out loss before | after | converged | adapter |",
                  "|---|---:|---|---:|---:|---|---|"]
        fmt = lambda x: "not measured" if x is None else f"{x:.4f}"  # noqa: E731
        for f in flags:
            converged = {True: "yes", False: "no"}.get(f.get("converged"), "not measured")
            lines.append(f"| {f['adapter_type']} | {f['seed']} | {f['role']} | {fmt(f['val_loss_start'])} | "
                         f"{fmt(f['val_loss_end'])} | {converged} | {f['adapter'][:12]} |")
    return "\n".join(lines) + "\n"


def _csv(header: Sequence[str], body: Sequence[Sequence[Any]], stamp: str) -> str:
    buf = io.StringIO()
    buf.write(f"# {stamp}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(body)
    return buf.getvalue()


def _latex(header: Sequence[str], body: Sequence[Sequence[str]], stamp: str) -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
    lines = [f"% {stamp}", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _save(fig: Any, path: Path, stamp: str) -> None:
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.005, stamp, fontsize=5, color="grey", ha="left", va="bottom")
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130, metadata={"Description": stamp})
    plt.close(fig)
    os.replace(tmp, path)


def _plots(rows: Sequence[Mapping[str, Any]], t: Mapping[str, Any], metric: str, out: Path, stamp: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, kinds, targets = t["labels"], t["kinds"], t["targets"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(max(5, 0.9 * len(labels) + 2) * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for j, lab in enumerate(labels):
            seeds = [100 * float(r["value"]) for r in rows if r["label"] == lab and r["adapter_type"] == kind]
            s = t["summary"].get((lab, kind, "average"))
            if s is not None:
                ax.bar(j, 100 * s["mean"], 0.7, yerr=100 * s["std"], capsize=3, color="C0" if lab != UPPER else "C2")
            ax.scatter([j] * len(seeds), seeds, s=8, color="black", zorder=3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{kind}: mean over targets ± std over seeds (dots: cells)", fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save(fig, out / "strategies.png", stamp)

    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for strategy in sorted({r["strategy"] for r in rows}):
            pts = sorted((float(r["params"]["t"]), 100 * float(r["value"])) for r in rows
                         if r["adapter_type"] == kind and r["strategy"] == strategy and isinstance(r.get("params"), dict)
                         and isinstance(r["params"].get("t"), (int, float)) and "tune" not in r)
            if pts:
                xs = sorted({p[0] for p in pts})
                ax.plot(xs, [np.mean([v for x0, v in pts if x0 == x]) for x in xs], marker="o",
                        label=f"{strategy} ({t_split(rows)})")
            trials = [(float(tr["params"]["t"]), 100 * float(tr["value"])) for r in rows
                      if r["adapter_type"] == kind and r["strategy"] == strategy and "tune" in r
                      for tr in r["tune"]["trials"] if isinstance(tr["params"].get("t"), (int, float))]
            if trials:
                ax.scatter(*zip(*trials), s=10, marker="x", label=f"{strategy} tuning trials ({rows_tune_split(rows)})")
        for lab, style in ((SOURCE, "--"), (UPPER, ":")):
            s = t["summary"].get((lab, kind, "average"))
            if s is not None:
                ax.axhline(100 * s["mean"], linestyle=style, color="grey", linewidth=1, label=lab)
        ax.set_xlabel("t")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{kind}: metric against t", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save(fig, out / "t_curve.png", stamp)

    shown = [lab for lab in labels if lab not in (SOURCE, UPPER)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(1.2 * len(targets) + 3 * len(kinds), 0.45 * len(shown) + 2),
                             squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        grid = np.array([[gap_closed(t["summary"], lab, kind, tg) if gap_closed(t["summary"], lab, kind, tg) is not None
                          else np.nan for tg in targets] for lab in shown] or [[np.nan] * len(targets)], dtype=float)
        im = ax.imshow(100 * grid, cmap="RdYlGn", vmin=-100, vmax=100, aspect="auto")
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels(targets)
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels(shown, fontsize=7)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}%", ha="center", va="center", fontsize=7)
        ax.set_title(f"{kind}: gap closed", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _save(fig, out / "gap_closed.png", stamp)


def t_split(rows: Sequence[Mapping[str, Any]]) -> str:
    """The evaluation split of the rows."""
    return str(rows[0].get("split", "test")) if rows else "test"


def rows_tune_split(rows: Sequence[Mapping[str, Any]]) -> str:
    """The split tuning trials were scored on."""
    return next((str(r["tune"]["split"]) for r in rows if "tune" in r), "validation")


def write_report(run_dir: str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write the report files of ``run_dir`` (default into ``run_dir/report``); returns the computed tables.

    Raises:
        ConfigError: the run directory has no finished cell.
    """
    from adamergex.io import read_json

    from ._results import read_rows

    run = Path(run_dir)
    rows = _ok(read_rows(run))
    if not rows:
        raise ConfigError(f"{run / 'results.jsonl'} has no finished cell; run `adamergex ablate` first")
    meta = read_json(run / "run.json") if (run / "run.json").exists() else {}
    name = run.name
    metric = rows[0]["metric"]
    stamp = _stamp(meta, t_split(rows))
    t = _tables(rows)
    out = Path(output) if output is not None else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    header = ["strategy", *(f"{k} {tg}" for k, tg in t["columns"])]
    body = [[lab, *("" if (lab, *c) not in t["summary"] else
                    f"{_pct(t['summary'][(lab, *c)]['mean'])} ± {_pct(t['summary'][(lab, *c)]['std'])}"
                    for c in t["columns"])] for lab in t["labels"]]
    csv_body = [[lab, k, tg, *(("", "", "") if (lab, k, tg) not in t["summary"] else
                                (t["summary"][(lab, k, tg)]["mean"], t["summary"][(lab, k, tg)]["std"],
                                 t["summary"][(lab, k, tg)]["n"]))]
                for lab in t["labels"] for k, tg in t["columns"]]
    pair_body = [[p["strategy"], p["adapter_type"], p["target"], p["diff"], p["low"], p["high"],
                  "" if p["gap_closed"] is None else p["gap_closed"], p["seeds"], p["items"]] for p in t["paired"]]
    pair_header = ["strategy", "adapter_type", "target", "diff", "ci_low", "ci_high", "gap_closed", "seeds", "items"]
    _write_text(out / "report.md", _markdown(t, metric, stamp, name))
    _write_text(out / "scores.csv", _csv(["strategy", "adapter_type", "target", "mean", "std", "n"], csv_body, stamp))
    _write_text(out / "scores.tex", _latex(header, body, stamp))
    _write_text(out / "paired.csv", _csv(pair_header, pair_body, stamp))
    _write_text(out / "paired.tex", _latex(pair_header, [[p[0], p[1], p[2], f"{100 * p[3]:+.1f}", f"{100 * p[4]:+.1f}",
                                                          f"{100 * p[5]:+.1f}", "" if p[6] == "" else f"{100 * p[6]:.0f}%",
                                                          str(p[7]), str(p[8])] for p in pair_body], stamp))
    _plots(rows, t, metric, out, stamp)
    _write_text(out / "tables.json", json.dumps(
        {"summary": [{"strategy": k[0], "adapter_type": k[1], "target": k[2], **v} for k, v in t["summary"].items()],
         "paired": t["paired"], "controls": t["controls"], "reference_flags": t["flags"], "stamp": stamp},
        indent=2, sort_keys=True) + "\n")
    return t
