"""``adamergex ablate CONFIG.yaml``: run a whole ablation grid (:mod:`adamergex.recipes.ablate`).

One process runs the cells in order (``--workers 1``, the default); ``--workers N`` starts N worker processes
that share an SQLite study in the run directory; ``--storage postgresql+psycopg2://...`` makes this process one
worker of a grid shared by every machine started with the same command (and a shared ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError

__all__ = ["cli_ablate"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adamergex ablate", description=cli_ablate.__doc__)
    p.add_argument("config", help="ablation YAML file (benchmarks/ablations/*.yaml are examples)")
    p.add_argument("--output", help="run directory (default: ablate-runs/<config name>); a rerun resumes it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set seeds=[0,1] --set model.path=/models/xlmr "
                        "(VALUE read as YAML; repeatable)")
    p.add_argument("--cache", help="adapter cache directory (default: $ADAMERGEX_ADAPTER_CACHE or "
                                   "~/.cache/adamergex/adapters)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--storage", help="Optuna RDB storage URL shared by workers on many machines "
                                     "(postgresql+psycopg2://user:password@host/db)")
    p.add_argument("--dry-run", action="store_true", help="print the grid, the adapters to train (and which are "
                                                          "cached) and the work; train nothing")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def cli_ablate(argv: list[str]) -> int:
    """Run an ablation grid from one YAML file: adapters through a cache, one result row per cell, resumable."""
    from ..recipes.ablate import AdapterCache, default_cache_dir, load_config, plan, run_local, run_worker

    args = _parser().parse_args(argv)
    if args.workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {args.workers}")
    if args.workers > 1 and args.storage:
        raise ConfigError("--workers starts its own SQLite study; with --storage start one process per worker")
    cfg, raw = load_config(args.config, args.overrides)
    out = Path(args.output or Path("ablate-runs") / Path(args.config).stem)
    cache = AdapterCache(args.cache or default_cache_dir())
    if args.dry_run:
        _print_plan(plan(cfg, cache, out if out.exists() else None), cache)
        return 0
    if args.storage:
        summary = run_worker(cfg, raw, out, cache, args.storage, progress=args.progress, fail_fast=args.fail_fast)
    elif args.workers > 1:
        summary = _spawn_workers(args, argv, out)
    else:
        summary = run_local(cfg, raw, out, cache, fail_fast=args.fail_fast, progress=args.progress)
    _print_summary(out, summary)
    return 0


def _spawn_workers(args: argparse.Namespace, argv: list[str], out: Path) -> dict[str, object]:
    """N processes of this command on one SQLite study in the run directory; waits for all of them."""
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(out / 'cells.db').resolve()}"
    rest = [a for i, a in enumerate(argv) if not (a.startswith("--workers") or (i and argv[i - 1] == "--workers"))]
    cmd = [sys.executable, "-c", "import sys; from adamergex.cli import main; sys.exit(main())", "ablate", *rest,
           "--output", str(out), "--storage", url, "--no-progress"]
    procs = [subprocess.Popen(cmd) for _ in range(args.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise ConfigError(f"worker processes exited with {codes}; see their messages above")
    return {"workers": args.workers, "storage": url}


def _print_plan(p: dict[str, object], cache: object) -> None:
    adapters = p["adapters"]
    assert isinstance(adapters, list)
    cached = sum(a["cached"] for a in adapters)
    print(f"cells: {len(p['cells'])} ({len(p['finished'])} finished)")  # type: ignore[arg-type]
    for cid in p["cells"]:  # type: ignore[attr-defined]
        print(f"  {'done ' if cid in p['finished'] else 'todo '} {cid}")  # type: ignore[operator]
    print(f"adapters: {len(adapters)} needed, {cached} cached, {len(adapters) - cached} to train")
    for a in adapters:
        print(f"  {'cached' if a['cached'] else 'train '} {a['adapter']} {a['key'][:16] if a['key'] else '(key known once the base model is built)'}")
    if p["head"]:
        print(f"shared head: {'cached' if p['head']['cached'] else 'to train'}")  # type: ignore[index]
    print(f"work: {p['training_steps']} training steps, {p['evaluations']} evaluations, "
          f"{p['tuning_trials']} tuning trials")


def _print_summary(out: Path, summary: dict[str, object]) -> None:
    from ..recipes.ablate import read_rows

    rows = read_rows(out)
    failed = {cid: r["error"] for cid, r in rows.items() if r.get("status") != "ok"}
    ok = len(rows) - len(failed)
    print(json.dumps({k: v for k, v in summary.items() if k != "failed"}, default=str))
    print(f"{ok} cells finished, {len(failed)} failed; rows in {out / 'results.jsonl'}; "
          f"`adamergex report {out}` writes the tables", file=sys.stderr)
    for cid, err in failed.items():
        print(f"  failed {cid}: {err}", file=sys.stderr)
