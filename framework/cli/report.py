"""``adamergex report RUN_DIR``: tables (Markdown, CSV, LaTeX) and plots of an ``adamergex ablate`` run.

Every number is recomputed from the run's raw rows (``results.jsonl``); see
:mod:`adamergex.recipes.ablate._report` for the definitions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["cli_report"]


def cli_report(argv: list[str]) -> int:
    """Write RUN_DIR/report/: report.md, scores.csv/.tex, paired.csv/.tex and three PNG plots; print report.md."""
    from ..recipes.ablate import write_report

    p = argparse.ArgumentParser(prog="adamergex report", description=cli_report.__doc__)
    p.add_argument("run_dir", help="run directory of adamergex ablate")
    p.add_argument("--output", help="report directory (default: RUN_DIR/report)")
    args = p.parse_args(argv)
    write_report(args.run_dir, output=args.output)
    out = Path(args.output or Path(args.run_dir) / "report")
    print((out / "report.md").read_text(), end="")
    print(f"wrote {out}", file=sys.stderr)
    return 0
