"""``world_arith``: arithmetic word problems about the synthetic world, with a numeric answer (the world's MGSM).

A person starts with some things, then buys, finds, loses or gives some away (one to ``max_steps`` events); a
sentence about someone else's things may be mixed in as a distractor. The question asks how many the person has
now, and the answer is a number (digits are shared by every language). Rows: ``story``, ``question``,
``answer`` (digits), ``language``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.errors import ConfigError
from adamergex.registry import TASKS
from adamergex.task import Example, TaskKind

from ._base import WorldTask
from .corpus import Setting, name
from .grammar import NP, Clause, Language, render
from .world import COLORS, NOUNS

if TYPE_CHECKING:
    import torchmetrics

__all__ = ["WorldArithTask"]

Item = tuple[tuple[Clause, ...], Clause, int]
_FIRST_NUMBER = re.compile(r"-?\d+")


@TASKS.register("world_arith")
@dataclass(frozen=True)
class WorldArithTask(WorldTask):
    """Word problems as generation: greedy decoding after ``<story> question : <p> has how many <things> now ?
    answer :``; the answer is the first number of the continuation, scored by numeric exact match."""

    name: ClassVar[str] = "world_arith"
    kind: ClassVar[TaskKind] = "generation"
    required_columns: ClassVar[tuple[str, ...]] = ("story", "question", "answer", "language")

    max_new_tokens: int = 4
    max_steps: int = 1
    """Most events (buy, find, lose, give) after the starting amount."""
    distractor: float = 0.5
    """Probability of a sentence about another person's things."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ConfigError(f"world_arith: max_steps must be a positive integer, got {self.max_steps!r}")
        if not 0.0 <= self.distractor <= 1.0:
            raise ConfigError(f"world_arith: distractor must be in [0, 1], got {self.distractor!r}")

    def draw(self, setting: Setting, rng: random.Random, index: int) -> Item:
        p, q = rng.sample(setting.world.names, 2)
        noun = rng.choice(NOUNS)
        color = rng.choice(COLORS) if rng.random() < 0.3 else None
        count = rng.randint(1, 9)
        story = [Clause(name(p), "have", NP("count", noun, count, color))]
        for _ in range(rng.randint(1, self.max_steps)):
            verb = rng.choice(("buy", "find") if count == 0 else ("buy", "find", "lose", "give"))
            k = rng.randint(1, 5) if verb in ("buy", "find") else rng.randint(1, min(count, 5))
            things = NP("count", noun, k, color)
            story.append(Clause(name(p), verb, things, obl=name(q) if verb == "give" else None))
            count += k if verb in ("buy", "find") else -k
        if rng.random() < self.distractor:
            other = Clause(name(q), "have", NP("count", noun, rng.randint(1, 9), color))
            story.insert(rng.randint(0, len(story)), other)
        question = Clause(name(p), "have", NP("count", noun, "how_many", color), now=True, question=True)
        return tuple(story), question, count

    def row(self, item: Item, setting: Setting, lang: Language) -> dict[str, Any]:
        story, question, answer = item
        return {"story": render(story, lang), "question": render(question, lang), "answer": str(answer)}

    def format(self, example: Mapping[str, Any]) -> Example:
        language = self.language_of(example)
        answer = str(example["answer"]).strip()
        return Example(
            prompt=self.frame(example["story"], example["question"], language),
            target=" " + answer,
            references=(answer,),
        )

    def extract_answer(self, continuation: str) -> str:
        """The first number of the continuation's first sentence (``""`` when there is none)."""
        match = _FIRST_NUMBER.search(continuation.split(" .", 1)[0])
        return match.group(0) if match else ""

    def metric(self) -> torchmetrics.Metric:
        from .._metrics import NumericExactMatch

        return NumericExactMatch()
