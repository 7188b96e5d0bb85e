"""The run directory's ``results.jsonl``: one JSON row per finished cell, appended atomically, read deduplicated.

A row is appended with one ``write`` of the whole line on an ``O_APPEND`` descriptor, then ``fsync``'d, under an
exclusive ``fcntl.flock`` of the file, so concurrent writers never interleave. A process killed mid-write (SIGKILL)
can leave at most a final line without its newline: :func:`read_rows` ignores any line that does not parse
as a complete JSON object, and the next :func:`append_row` first ends such a fragment with a newline so that
the new row stays a line of its own. Rows are keyed by ``cell``; when a cell has several rows (a failed
attempt, then a finished one) the last one counts.

The runner itself holds ``RUN_DIR/.lock`` (:func:`run_lock`) for its whole run: a second run on the same
directory is refused at once instead of doing the same work twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from adamergex.errors import OutputExistsError

__all__ = ["RESULTS", "append_row", "read_rows", "run_lock"]

RESULTS = "results.jsonl"


def append_row(run_dir: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append ``row`` (which must have a ``cell``) as one line, atomically and durably."""
    line = (json.dumps(row, sort_keys=True, default=str) + "\n").encode()
    path = Path(run_dir) / RESULTS
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as fh:  # a fragment left by a killed writer must not swallow this row
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{cell id: its last complete row}`` in first-appearance order; fragments are skipped."""
    path = Path(run_dir) / RESULTS
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for raw in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("cell"), str):
            rows[row["cell"]] = row
    return rows


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``RUN_DIR/.lock`` exclusively; raise :class:`OutputExistsError` if another run holds it."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputExistsError(
                f"another adamergex ablate is running on {path} (it holds {path / '.lock'}); wait for it, or use "
                "another --output. Workers of one grid share it through --storage instead"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
