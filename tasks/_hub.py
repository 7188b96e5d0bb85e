"""Where one (language, canonical split) of a task lives on the Hugging Face Hub, and the one call that loads it.

Tasks describe their Hub layout as data (:class:`HubSource`) through a pure ``hub_source(language, split)`` method,
so the mapping is tested without the network; :func:`load_source` is the only place that calls
``datasets.load_dataset`` for the built-in tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adamergex.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    import datasets

__all__ = ["HubSource", "load_source", "missing_split"]


@dataclass(frozen=True)
class HubSource:
    """Arguments of one ``datasets.load_dataset`` call."""

    dataset_id: str
    """Hub dataset id, e.g. ``facebook/xnli``."""
    config: str | None
    """Dataset configuration (subset) name, e.g. ``fr`` or ``xquad.de``."""
    split: str
    """Hub split expression, slices allowed (``train[:-500]``)."""
    revision: str | None
    """Pinned commit sha or tag."""
    skip: int = 0
    """Streamed sources only: documents skipped before :attr:`take`."""
    take: int | None = None
    """When set, stream the split and keep ``take`` documents after ``skip`` (avoids downloading a whole dump)."""


def load_source(source: HubSource) -> datasets.Dataset:
    """Load ``source`` from the Hub (network). Streamed sources are materialised in memory."""
    import datasets

    if source.take is None:
        ds = datasets.load_dataset(source.dataset_id, source.config, split=source.split, revision=source.revision)
        return ds
    stream = datasets.load_dataset(
        source.dataset_id, source.config, split=source.split, revision=source.revision, streaming=True
    )
    rows = list(stream.skip(source.skip).take(source.take))
    if not rows:
        raise ConfigError(
            f"{source.dataset_id} ({source.config}/{source.split}) has no documents after skipping {source.skip}; "
            "lower the number of documents asked for"
        )
    return datasets.Dataset.from_list(rows)


def missing_split(task: str, language: str, split: str, available: Mapping[str, object]) -> UnknownNameError:
    """The error for a canonical split that exists in general but not for ``language`` of ``task``."""
    known = ", ".join(available) or "(none)"
    return UnknownNameError(
        f"task {task!r} has no {split!r} split for language {language!r} on the Hub; available: {known} "
        "(pass data_files to use local data instead)"
    )
