"""The ``adamergex`` command line: one module per command in this package, and the table that routes to them.

Command ``NAME`` is ``cli_NAME(argv)`` in :mod:`adamergex.cli.NAME`, taking the arguments after the command name
and returning an exit status; ``_options`` builds options from config dataclasses and their field docstrings.
Modules are imported only when their command runs, so ``adamergex --help`` stays fast. The library never imports
this package (a test checks it): everything a command does is a library call it makes.

To add a command: write ``cli/NAME.py`` with ``cli_NAME(argv) -> int`` and add one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NoReturn

from ..errors import FrameworkError

__all__ = ["COMMANDS", "console", "main"]

COMMANDS: dict[str, str] = {
    "ablate": "run a whole ablation grid (adapters cached, resumable, many workers) from one YAML file",
    "cache": "list or prune the adapter cache of adamergex ablate",
    "demo": "run the whole AdaMergeX pipeline on the embedded synthetic world",
    "diagnose": "measure whether language divergences agree across tasks (AdaMergeX's assumption)",
    "evaluate": "score an adapter (or merge output) per language on a task",
    "merge": "merge adapters with a registered strategy into a PEFT adapter directory",
    "report": "write tables (Markdown, CSV, LaTeX) and plots of an adamergex ablate run",
    "strategies": "list registered strategies with roles, parameters and papers",
    "tasks": "list registered tasks with kinds, data, metrics and options (tasks NAME: one in full)",
    "train": "train a PEFT adapter on a task and language with Lightning",
    "tune": "tune a strategy's merge parameters with Optuna on a validation split",
}
"""Command name → one-line help; ``adamergex.cli.NAME:cli_NAME`` runs it."""


def _usage() -> str:
    lines = ["usage: adamergex COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, help_ in sorted(COMMANDS.items())]
    lines += ["", "Run `adamergex COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command named by ``argv[0]``; framework errors print one line and exit with status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"adamergex: unknown command {name!r}; available: {', '.join(sorted(COMMANDS))}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{name}")
    fn = getattr(module, f"cli_{name}")
    try:
        return int(fn(rest) or 0)
    except FrameworkError as exc:
        if os.environ.get("ADAMERGEX_DEBUG"):
            raise
        print(f"adamergex {name}: error: {exc}", file=sys.stderr)
        return 2


def console() -> NoReturn:
    """The ``adamergex`` console script: :func:`main`, then exit without tearing the interpreter down.

    Unloading torch, transformers and Lightning module by module takes 1–3 s after every command and does nothing
    a finished command needs (its outputs are written atomically and closed). So: wait for non-daemon threads,
    run the ``atexit`` handlers (logging, multiprocessing, temporary files), flush the standard streams, and
    leave with ``os._exit``. Library callers use :func:`main`, which returns normally.
    """
    import atexit
    import threading

    code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what a normal exit runs, minus module teardown and the final collection
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``): nothing left to deliver
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
