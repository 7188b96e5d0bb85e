"""``world_reference``: the reference task, causal language modelling on encyclopedia articles about the world.

Each example is one article (see :func:`~adamergex.tasks.world.corpus.encyclopedia`): true statements about a
person or a town, with negations, comparatives, events and quiz lines, so that every word and construction the
other world tasks use occurs in every language. The base model is pretrained on the ``train`` split of all
languages; the reference adapters of AdaMergeX train on one language each. Rows: ``text``, ``language``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.errors import ConfigError
from adamergex.registry import TASKS
from adamergex.task import Example, TaskKind

from ._base import WorldTask
from .corpus import Setting, encyclopedia
from .grammar import Language
from .world import rng_for

if TYPE_CHECKING:
    import torchmetrics

__all__ = ["WorldReferenceTask"]


@TASKS.register("world_reference")
@dataclass(frozen=True)
class WorldReferenceTask(WorldTask):
    """Encyclopedia text for causal language modelling (``Example.prompt`` is the raw article)."""

    name: ClassVar[str] = "world_reference"
    kind: ClassVar[TaskKind] = "language_modeling"
    required_columns: ClassVar[tuple[str, ...]] = ("text", "language")

    train_size: int = 800
    """Articles in ``train`` (per language)."""
    validation_size: int = 100
    """Articles in ``validation``."""
    test_size: int = 100
    """Articles in ``test``."""
    keep: float = 0.7
    """Probability that an article keeps each statement about its subject."""
    chronicles: float = 0.3
    """Share of articles that are chronicle entries (statements about one day, then questions answered from
    them) rather than encyclopedia articles: the reference text's source of in-context reading."""
    chunk_length: int = 128
    """Tokens per training chunk (articles are packed end to end, as for the other reference tasks)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.chunk_length, bool) or not isinstance(self.chunk_length, int) or self.chunk_length <= 0:
            raise ConfigError(f"world_reference: chunk_length must be a positive integer, got {self.chunk_length!r}")
        if not 0.0 <= self.chronicles <= 1.0:
            raise ConfigError(f"world_reference: chronicles must be in [0, 1], got {self.chronicles!r}")
        if not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"world_reference: keep must be in (0, 1], got {self.keep!r}")

    def draw(self, setting: Setting, rng: random.Random, index: int) -> int:
        return rng.getrandbits(64)  # the article's own seed: the same article in every language

    def row(self, item: int, setting: Setting, lang: Language) -> dict[str, Any]:
        return {"text": encyclopedia(setting, lang, rng_for("article", item), keep=self.keep, chronicles=self.chronicles)}

    def format(self, example: Mapping[str, Any]) -> Example:
        return Example(prompt=str(example["text"]))

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.text import Perplexity

        return Perplexity(ignore_index=-100)

    def chance(self, language: str, split: str) -> float:
        """Not defined for language modelling."""
        raise ConfigError("world_reference is a language-modelling task: it has no chance accuracy")
