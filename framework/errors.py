"""One exception hierarchy for the whole framework.

Every error raised on user input subclasses :class:`FrameworkError` *and* the builtin it stands for, so callers
can catch either (``except KeyError`` still sees an unknown registry name). Messages state what must hold, then
what arrived, and name the file, module or option involved.
"""

from __future__ import annotations

__all__ = [
    "AdapterFormatError",
    "ConfigError",
    "FrameworkError",
    "IncompatibleAdaptersError",
    "NumericalError",
    "OutputExistsError",
    "OutputWriteError",
    "TrainingStalledError",
    "UnknownNameError",
]


class FrameworkError(Exception):
    """Base class of every error the framework raises on purpose."""


class UnknownNameError(FrameworkError, KeyError):
    """A registry lookup (strategy, adapter type, task, language, split...) found no such name."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class ConfigError(FrameworkError, ValueError):
    """An option or parameter is outside what it must be."""


class AdapterFormatError(FrameworkError, ValueError):
    """An adapter directory or state is missing files, corrupt, or not in the expected format."""


class IncompatibleAdaptersError(FrameworkError, ValueError):
    """Adapters that must be combined disagree (base model, type, target modules, shapes, ranks)."""


class NumericalError(FrameworkError, ValueError):
    """Tensors hold NaN/Inf, or an operation would divide by (near) zero."""


class OutputExistsError(FrameworkError, FileExistsError):
    """An output location already holds results and overwriting was not asked for."""


class OutputWriteError(FrameworkError, OSError):
    """An output could not be written (read-only or full file system, no permission); the path is named."""


class TrainingStalledError(FrameworkError, RuntimeError):
    """Training ended with a loss that did not fall (a dead adapter), after any retries."""
