"""``adamergex demo``: the whole AdaMergeX pipeline on the embedded synthetic world (:mod:`adamergex.recipes.demo`).

Each field of :class:`~adamergex.recipes.demo.DemoConfig` is an option (:mod:`._options`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cli_demo"]


def _parser() -> argparse.ArgumentParser:
    from ..recipes.demo import DemoConfig
    from ._options import add_options

    parser = argparse.ArgumentParser(
        prog="adamergex demo", description="Run AdaMergeX end to end on the embedded synthetic world (CPU, offline)."
    )
    add_options(parser, DemoConfig)
    return parser


def cli_demo(argv: Sequence[str]) -> int:
    """``adamergex demo [options]``: run the demo and print its table (exit status 0)."""
    from ..recipes.demo import OUTPUT_FILES, DemoConfig, markdown, run_demo
    from ._options import config_values

    cfg = DemoConfig(**config_values(DemoConfig, _parser().parse_args(list(argv))))
    record = run_demo(cfg)
    print(markdown(record), end="")
    print(f"\nwrote {', '.join(str(Path(cfg.output) / n) for n in OUTPUT_FILES)} "
          f"in {record['seconds']['total']:.0f} s", file=sys.stderr)
    return 0
