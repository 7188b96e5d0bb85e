"""``world_qa``: short-answer questions about a context (the world's XQuAD).

The context states where two or three people live, their jobs and whom they like; the question asks who lives in
a town, who has a job, who likes someone, or which town someone lives in. Every question has exactly one answer
in the context, a name written in the example's language (``morph`` transliterates it, and its context shows the
name with case suffixes, while the answer is the bare name). Rows: ``context``, ``question``, ``answer``,
``language``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.registry import TASKS
from adamergex.task import Example, TaskKind

from ._base import WorldTask
from .corpus import Setting, name
from .grammar import NP, Clause, Language, render
from .world import JOBS

if TYPE_CHECKING:
    import torchmetrics

__all__ = ["WorldQaTask"]

Item = tuple[tuple[Clause, ...], Clause, str]


@TASKS.register("world_qa")
@dataclass(frozen=True)
class WorldQaTask(WorldTask):
    """Short answers as generation: greedy decoding after ``<context> question : <question> ? answer :``; the
    answer is the first word of the continuation, scored by exact match (SQuAD normalisation)."""

    name: ClassVar[str] = "world_qa"
    kind: ClassVar[TaskKind] = "generation"
    required_columns: ClassVar[tuple[str, ...]] = ("context", "question", "answer", "language")

    max_new_tokens: int = 6

    def draw(self, setting: Setting, rng: random.Random, index: int) -> Item:
        world = setting.world
        people = rng.sample(world.names, rng.choice((2, 3)))
        # distinct values per relation, so that every question has exactly one answer
        towns = rng.sample(world.towns, len(people))
        jobs = rng.sample(JOBS, len(people))
        liked = rng.sample([n for n in world.names if n not in people], len(people))
        facts: list[Clause] = []
        answerable: list[tuple[Clause, str]] = []
        for p, town, job, friend in zip(people, towns, jobs, liked):
            for rel in rng.sample(("live", "be", "like"), 2):
                if rel == "live":
                    facts.append(Clause(name(p), "live", obl=name(town)))
                    answerable.append((Clause(NP("who"), "live", obl=name(town), question=True), p))
                    answerable.append((Clause(name(p), "live", obl=NP("which", "town"), question=True), town))
                elif rel == "be":
                    facts.append(Clause(name(p), "be", NP("kind", job)))
                    answerable.append((Clause(NP("who"), "be", NP("kind", job), question=True), p))
                else:
                    facts.append(Clause(name(p), "like", name(friend)))
                    answerable.append((Clause(NP("who"), "like", name(friend), question=True), p))
        rng.shuffle(facts)
        question, answer = rng.choice(answerable)
        return tuple(facts), question, answer

    def row(self, item: Item, setting: Setting, lang: Language) -> dict[str, Any]:
        facts, question, answer = item
        return {"context": render(facts, lang), "question": render(question, lang), "answer": lang.word(answer)}

    def format(self, example: Mapping[str, Any]) -> Example:
        language = self.language_of(example)
        answer = str(example["answer"]).strip()
        return Example(
            prompt=self.frame(example["context"], example["question"], language),
            target=" " + answer,
            references=(answer,),
        )

    def extract_answer(self, continuation: str) -> str:
        """The first word of the continuation (``""`` when it is empty)."""
        words = continuation.split()
        return words[0].strip(".?:") if words else ""

    def metric(self) -> torchmetrics.Metric:
        from .._metrics import ExtractiveQAScore

        return ExtractiveQAScore()
