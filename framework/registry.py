"""Generic name → object registries: ``STRATEGIES``, ``ADAPTERS`` and ``TASKS``.

Contract:

* Names are lowercase snake_case (``^[a-z][a-z0-9_]*$``), one word shared by the registry, the module file and
  YAML configs. A malformed or duplicate name is refused at registration.
* A registry is *populated lazily*: the first lookup imports its home package (``adamergex.strategies``...) so
  that ``import adamergex`` stays cheap, then loads third-party plugins from its Python entry-point group
  (``adamergex.strategies``, ``adamergex.adapters``, ``adamergex.tasks``). An entry point names a module (whose
  import registers) or a callable (called with no arguments).
* An unknown name raises :class:`~adamergex.errors.UnknownNameError` listing every known name.
* :meth:`Registry.scoped` registers throwaway entries for the duration of a ``with`` block (tests, notebooks).
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import ConfigError, UnknownNameError

__all__ = ["ADAPTERS", "NAME_PATTERN", "STRATEGIES", "TASKS", "Registry"]

T = TypeVar("T")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """A mapping from lowercase names to registered objects of one kind.

    Args:
        kind: What the entries are, used in messages ("strategy", "adapter type", "task").
        home: Module imported on first lookup so that the built-in entries register themselves.
        entry_point_group: Entry-point group scanned once, after ``home``, for third-party plugins.
    """

    def __init__(self, kind: str, home: str | None = None, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._home = home
        self._group = entry_point_group
        self._entries: dict[str, T] = {}
        self._populated = False
        self._populating = False

    # -- registration -------------------------------------------------------------------------------------
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; refuses malformed and duplicate names."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ConfigError(
                f"{self.kind} names must be lowercase snake_case matching {NAME_PATTERN.pattern}, got {name!r}"
            )
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[name] = obj
        return obj

    def remove(self, name: str) -> None:
        """Unregister ``name`` (used by :meth:`scoped`)."""
        self._entries.pop(name, None)

    @contextlib.contextmanager
    def scoped(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the duration of the block only."""
        self._populate()
        self.add(name, obj)
        try:
            yield obj
        finally:
            self.remove(name)

    # -- lookup ---------------------------------------------------------------------------------------------
    def _populate(self) -> None:
        if self._populated or self._populating:
            return
        self._populating = True
        try:
            if self._home is not None:
                importlib.import_module(self._home)
            if self._group is not None:
                for ep in entry_points(group=self._group):
                    loaded = ep.load()
                    if callable(loaded) and not isinstance(loaded, type(importlib)):
                        loaded()
            self._populated = True
        finally:
            self._populating = False

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name lists the known ones."""
        self._populate()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; available: {known}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._populate()
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._populate()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs sorted by name."""
        return [(n, self._entries[n]) for n in self.names()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco


# Populated by their home packages; typed loosely here because framework/ never imports strategies or tasks.
STRATEGIES: Registry[Any] = Registry("strategy", "adamergex.strategies", "adamergex.strategies")
ADAPTERS: Registry[Any] = Registry("adapter type", "adamergex.adapters", "adamergex.adapters")
TASKS: Registry[Any] = Registry("task", "adamergex.tasks", "adamergex.tasks")
