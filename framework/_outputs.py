"""Where a command may write: never onto its inputs, and ``--overwrite`` only over what adamergex itself wrote.

Two checks every writing command makes before any work (issue #12, item 6):

- :func:`check_apart`: the output (resolved: symlinks and ``..`` followed) is not an input, does not contain
  one, and does not lie inside one. Replacing ``--output`` would otherwise delete the inputs.
- :func:`check_replaceable`: an existing output is replaced only with ``--overwrite``, and only when it is a
  previous adamergex output, recognised by the files adamergex writes (``adamergex.json`` beside a PEFT adapter,
  ``composition.json``, an evaluation's JSON, the demo's ``results.json``). Anything else is refused, naming
  what is there, so a mistyped ``--output ~`` cannot delete a home directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import ConfigError, OutputExistsError

__all__ = ["check_apart", "check_replaceable", "is_adapter_output", "is_evaluation_output", "listing"]


def check_apart(output: str | os.PathLike[str], inputs: Mapping[str, str | os.PathLike[str] | None], *,
                option: str = "--output", inside_only: bool = False, kind: str | None = None) -> None:
    """Refuse an ``output`` that is, contains or lies inside one of ``inputs`` (label → path; ``None`` and
    paths that do not exist, such as Hub ids, are skipped). ``inside_only`` checks "is or lies inside" only,
    for commands that write named files into their output and delete nothing else. ``kind`` (``"file"`` or
    ``"directory"``) is checked first: an existing output of the other kind is refused.

    Raises:
        ConfigError: naming the option, the input's label and both paths.
    """
    if kind is not None:
        _check_kind(Path(output), kind, option)
    out = Path(output).expanduser().resolve()
    for label, given in inputs.items():
        if given is None or not os.path.exists(given):
            continue
        path = Path(given).expanduser().resolve()
        if out == path:
            raise ConfigError(f"{option} {output} is the {label} input ({given}); write the output elsewhere")
        if out.is_relative_to(path):
            raise ConfigError(f"{option} {output} lies inside the {label} input ({given}); write the output elsewhere")
        if not inside_only and path.is_relative_to(out):
            raise ConfigError(
                f"{option} {output} contains the {label} input ({given}); replacing it would delete the input, "
                "write the output elsewhere"
            )


def listing(path: Path, limit: int = 6) -> str:
    """The first entries of directory ``path``, for error messages."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def is_adapter_output(path: Path) -> bool:
    """A directory adamergex wrote: a PEFT adapter with ``adamergex.json``, or a merge composition."""
    return (path / "adamergex.json").is_file() or (path / "composition.json").is_file()


def is_evaluation_output(path: Path) -> bool:
    """A JSON file ``adamergex evaluate --output`` wrote (an object with ``scores`` and ``record``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and {"scores", "record"} <= set(data)


def check_replaceable(output: str | os.PathLike[str], *, overwrite: bool, kind: str = "directory",
                      ours: Callable[[Path], bool] = is_adapter_output, what: str = "an adamergex output",
                      option: str = "--output") -> None:
    """Refuse to write ``output`` over something that is not to be replaced (checked before any work).

    ``kind`` is what the output must be (``"directory"`` or ``"file"``); ``ours`` recognises a previous
    adamergex output, the only thing ``overwrite`` replaces.

    Raises:
        ConfigError: ``output`` exists as the wrong kind (a file where a directory is written, or the reverse).
        OutputExistsError: ``output`` holds something and ``overwrite`` is false, or holds something adamergex
            did not write (its entries are named).
    """
    path = Path(output)
    if not path.exists():
        return
    _check_kind(path, kind, option)
    if kind == "directory" and not any(path.iterdir()):
        return
    if not overwrite:
        held = " and is not empty" if kind == "directory" else ""
        raise OutputExistsError(f"output {output} already exists{held}; pass --overwrite to replace it")
    if not ours(path):
        held = f"it holds {listing(path)}" if path.is_dir() else "it is not one"
        raise OutputExistsError(
            f"{option} {output} is not {what} ({held}); --overwrite replaces only what adamergex wrote. "
            "Remove it yourself or pick another --output"
        )


def _check_kind(path: Path, kind: str, option: str) -> None:
    if kind == "directory" and path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; it must be a directory (or not exist yet)")
    if kind == "file" and path.is_dir():
        raise ConfigError(f"{option} {path} is a directory; it must be a file path (e.g. {path / 'results.json'})")
