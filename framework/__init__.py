"""adamergex: cross-lingual transfer by merging parameter-efficient adapters (AdaMergeX and baselines).

Public entry points live in submodules (``adamergex.io``, ``adamergex.merging``, ``adamergex.training``,
``adamergex.evaluation``...); importing the package itself is cheap.
"""

from __future__ import annotations

from .adapter_state import AdapterState
from .errors import (
    AdapterFormatError,
    ConfigError,
    FrameworkError,
    IncompatibleAdaptersError,
    NumericalError,
    OutputExistsError,
    UnknownNameError,
)
from .registry import ADAPTERS, STRATEGIES, TASKS

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "STRATEGIES",
    "TASKS",
    "AdapterFormatError",
    "AdapterState",
    "ConfigError",
    "FrameworkError",
    "IncompatibleAdaptersError",
    "NumericalError",
    "OutputExistsError",
    "UnknownNameError",
    "__version__",
]
