"""Shared parts of the reference tasks: raw text made into ``Example(prompt=text)`` for language modelling.

AdaMergeX (arXiv 2402.18913) trains one *reference* adapter per language on a task every language shares, language
modelling, so that the difference between two reference adapters isolates the language. These bases hold what the
reference tasks have in common; each registered task is a module of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from adamergex.errors import ConfigError
from adamergex.task import Example, Task, TaskKind

from . import _hub
from ._common import PAPER_LANGUAGES

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["PACKINGS", "TextReferenceTask", "WikipediaReferenceTask", "check_mlm_probability"]

PACKINGS = ("stream", "lines", "lines_packed")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_mlm_probability(value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a masking rate in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"mlm_probability must be in (0, 1), got {value!r}")


@dataclass(frozen=True)
class TextReferenceTask(Task):
    """Language modelling on raw text: ``format`` returns ``Example(prompt=text)``; training packs it as
    ``packing`` says."""

    kind: ClassVar[TaskKind] = "language_modeling"
    required_columns: ClassVar[tuple[str, ...]] = ("text",)

    chunk_length: int = 512
    """Tokens per training item (chunk), special tokens included."""
    packing: Literal["stream", "lines", "lines_packed"] = "stream"
    """How text becomes items: ``stream`` packs every line (document) end to end, EOS (SEP for masked LM) between,
    and cuts full ``chunk_length`` chunks (a line may span two); ``lines`` makes one item per non-empty line,
    truncated to ``chunk_length`` and padded (padding ignored by the loss), for sentence- or verse-aligned
    corpora; ``lines_packed`` gathers whole lines, in order, into items of at most ``chunk_length`` (never
    splitting a line; lines in one item attend to each other, as in ``stream``), then pads."""

    def __post_init__(self) -> None:
        _check_positive("chunk_length", self.chunk_length)
        if self.packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {list(PACKINGS)}, got {self.packing!r}")

    def format(self, example: Mapping[str, Any]) -> Example:
        text = example["text"]
        if not isinstance(text, str):
            raise ConfigError(f"task {self.name!r} needs 'text' to be a string, got {type(text).__name__}")
        return Example(prompt=text)

    def metric(self) -> torchmetrics.Metric:
        """Perplexity over the predicted positions (labels of -100 are ignored: padding, unmasked MLM tokens)."""
        from torchmetrics.text import Perplexity

        return Perplexity(ignore_index=-100)


@dataclass(frozen=True)
class WikipediaReferenceTask(TextReferenceTask):
    """Wikipedia articles of each language (``wikimedia/wikipedia``, configs ``<dump>.<lang>``: ``id``, ``url``,
    ``title``, ``text``).

    The Hub has only a ``train`` split per language, and a dump runs to gigabytes, so the canonical splits are
    consecutive slices streamed from its start: ``train`` holds the first ``train_documents`` articles,
    ``validation`` the next ``eval_documents`` and ``test`` the ``eval_documents`` after those.
    """

    dataset_id: str = "wikimedia/wikipedia"
    revision: str | None = "b04c8d1ceb2f5cd4588862100d08de323dccfbaa"
    languages: tuple[str, ...] = ("en", *PAPER_LANGUAGES)
    dump: str = "20231101"
    """Wikipedia dump date, the first half of the config name (``20231101.fr``)."""
    train_documents: int = 10_000
    """Articles in ``train``."""
    eval_documents: int = 500
    """Articles in each of ``validation`` and ``test``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("train_documents", self.train_documents)
        _check_positive("eval_documents", self.eval_documents)

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """The streamed slice of ``<dump>.<language>`` that forms ``split``."""
        self.check_language(language)
        self.check_split(split)
        skip = {
            "train": 0,
            "validation": self.train_documents,
            "test": self.train_documents + self.eval_documents,
        }[split]
        take = self.train_documents if split == "train" else self.eval_documents
        config = f"{self.dump}.{language}"
        return _hub.HubSource(self.dataset_id, config, "train", self.revision, skip=skip, take=take)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))
