"""Installed versions of the packages a result depends on, recorded with trained adapters and evaluations."""

from __future__ import annotations

import functools

__all__ = ["package_versions"]


def package_versions(*names: str) -> dict[str, str]:
    """``{name: installed version}`` of the distributions ``names`` (``adamergex`` included); a fresh dict."""
    return dict(_versions(tuple(names)))


@functools.cache  # metadata lookups cost ~30 ms each, and versions do not change within a process
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = []
    for name in names:
        if name == "adamergex":
            out.append((name, __version__))
            continue
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "not installed"))
    return tuple(out)
