"""Small helpers shared by the task modules: gold labels and per-language config lookups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adamergex.errors import ConfigError, UnknownNameError

__all__ = ["PAPER_LANGUAGES", "config_for", "gold_label"]

# Target languages of AdaMergeX (arXiv 2402.18913); each task keeps those its dataset has, after English.
PAPER_LANGUAGES: tuple[str, ...] = ("fr", "de", "tr", "hi", "el", "ar", "vi", "zh", "es", "ru", "sw", "th")


def gold_label(value: Any, num_labels: int, *, task: str) -> int | None:
    """The class id of a raw label: ``None`` for a hidden label (``-1`` or missing), else an int in range."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == -1):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"task {task!r} needs integer labels in [0, {num_labels}), got {value!r}")
    if not 0 <= value < num_labels:
        raise ConfigError(f"task {task!r} needs labels in [0, {num_labels}) (or -1 for hidden), got {value}")
    return value


def config_for(task: str, language: str, configs: Mapping[str, str]) -> str:
    """The Hub config name of ``language``; an unknown language lists those with a config."""
    if language not in configs:
        raise UnknownNameError(
            f"task {task!r} has no Hub config for language {language!r}; known: {', '.join(sorted(configs))}"
        )
    return configs[language]
