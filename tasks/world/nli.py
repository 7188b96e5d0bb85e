"""``world_nli``: three-way entailment about the synthetic world (the XNLI of the embedded default).

A premise states two to four facts about two people (where they live, their job, whom they like, what they
have); the hypothesis is a yes/no question about one statement. Labels, in XNLI order:

* ``0`` entailment (``yes``): a premise fact restated, a negated other town or job (each person lives in one
  town and has one job), a comparative that holds (``more than 2`` given 3), or a bare plural (``has apples``);
* ``1`` neutral (``maybe``): a statement about the unmentioned third person, or about a relation the premise does
  not state for that person (``likes`` is not exclusive, so liking someone else is neutral too);
* ``2`` contradiction (``no``): a premise fact negated, another town, job or count, or a comparative that fails.

Labels are exactly balanced (split sizes that are multiples of three give a chance level of exactly 1/3). Rows:
``premise``, ``hypothesis``, ``label``, ``language``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from adamergex.errors import ConfigError
from adamergex.registry import TASKS
from adamergex.task import Example, TaskKind

from ._base import WorldTask
from .corpus import Setting, name
from .grammar import NP, Clause, Language, render
from .world import COLORS, JOBS, NOUNS, World

if TYPE_CHECKING:
    import torchmetrics

__all__ = ["WorldNliTask"]

ANSWERS: tuple[str, ...] = ("yes", "maybe", "no")
"""Answer words in label order: entailment, neutral, contradiction."""
_RELATIONS = ("live", "be", "like", "have")
Item = tuple[tuple[Clause, ...], Clause, int]


def _fact(p: str, relation: str, world: World, rng: random.Random, avoid: tuple[str, ...] = ()) -> Clause:
    me = name(p)
    if relation == "live":
        return Clause(me, "live", obl=name(rng.choice(world.towns)))
    if relation == "be":
        return Clause(me, "be", NP("kind", rng.choice(JOBS)))
    if relation == "like":
        return Clause(me, "like", name(rng.choice([q for q in world.names if q not in (p, *avoid)])))
    color = rng.choice(COLORS) if rng.random() < 0.5 else None
    return Clause(me, "have", NP("count", rng.choice(NOUNS), rng.randint(1, 9), color))


def _other_value(fact: Clause, world: World, rng: random.Random) -> Clause:
    """The fact with another town / job / count (the same kind of statement, now false)."""
    if fact.verb == "live":
        assert fact.obl is not None
        return dataclasses.replace(fact, obl=name(rng.choice([t for t in world.towns if t != fact.obl.word])))
    if fact.verb == "be":
        assert fact.obj is not None
        return dataclasses.replace(fact, obj=NP("kind", rng.choice([j for j in JOBS if j != fact.obj.word])))
    assert fact.verb == "have" and fact.obj is not None and isinstance(fact.obj.n, int)
    n = rng.choice([k for k in range(1, 10) if k != fact.obj.n])
    return dataclasses.replace(fact, obj=dataclasses.replace(fact.obj, n=n))


def _entailed(fact: Clause, world: World, rng: random.Random) -> Clause:
    move = rng.random()
    if fact.verb in ("live", "be") and move < 0.5:
        return dataclasses.replace(_other_value(fact, world, rng), neg=True)
    if fact.verb == "have" and move < 0.75:
        assert fact.obj is not None and isinstance(fact.obj.n, int)
        n, obj = fact.obj.n, fact.obj
        options = [dataclasses.replace(obj, n=None), dataclasses.replace(obj, n=n + rng.randint(1, 3), cmp="fewer")]
        if n > 1:
            options.append(dataclasses.replace(obj, n=rng.randint(1, n - 1), cmp="more"))
        return dataclasses.replace(fact, obj=rng.choice(options))
    return fact


def _contradicted(fact: Clause, world: World, rng: random.Random) -> Clause:
    move = rng.random()
    if fact.verb == "like" or move < 0.35:
        return dataclasses.replace(fact, neg=True)
    if fact.verb == "have" and move < 0.7:
        assert fact.obj is not None and isinstance(fact.obj.n, int)
        n, obj = fact.obj.n, fact.obj
        options = [
            dataclasses.replace(obj, n=None),  # negated below: "does not have apples"
            dataclasses.replace(obj, n=rng.randint(n, n + 3), cmp="more"),
            dataclasses.replace(obj, n=rng.randint(1, n), cmp="fewer"),
        ]
        new = rng.choice(options)
        return dataclasses.replace(fact, obj=new, neg=new.n is None)
    return _other_value(fact, world, rng)


def _neutral(facts: dict[tuple[str, str], Clause], people: tuple[str, str, str], world: World,
             rng: random.Random) -> Clause:
    p1, p2, p3 = people
    move = rng.random()
    if move < 0.4:
        hyp = _fact(p3, rng.choice(_RELATIONS), world, rng)
    else:
        p = rng.choice((p1, p2))
        stated = {rel for (who, rel) in facts if who == p}
        free = [r for r in _RELATIONS if r not in stated]
        if move < 0.7 and "like" in stated:
            liked = facts[(p, "like")].obj
            assert liked is not None
            hyp = _fact(p, "like", world, rng, avoid=(liked.word,))
        else:  # a person has at most two stated relations, so at least two are free
            hyp = _fact(p, rng.choice(free), world, rng)
    return dataclasses.replace(hyp, neg=rng.random() < 0.3)


@TASKS.register("world_nli")
@dataclass(frozen=True)
class WorldNliTask(WorldTask):
    """Entailment as classification: decoders score `` yes`` / `` maybe`` / `` no`` after
    ``<premise> question : <hypothesis> ? answer :``; encoders read (premise, hypothesis)."""

    name: ClassVar[str] = "world_nli"
    kind: ClassVar[TaskKind] = "classification"
    required_columns: ClassVar[tuple[str, ...]] = ("premise", "hypothesis", "label", "language")
    label_names: ClassVar[tuple[str, ...]] = ("entailment", "neutral", "contradiction")

    num_labels: int = 3
    train_size: int = 3000
    """Examples in ``train`` (per language)."""
    difficulty: Literal["simple", "full"] = "full"
    """``full``: every hypothesis kind listed in the module docstring. ``simple``: every premise fact uses one
    relation (two or three people, all where they live, say); the hypothesis restates a fact (entailment),
    negates it (contradiction), or states another relation of a mentioned person (neutral). ``adamergex demo``
    trains ``simple``: on two CPU cores a small model does not learn ``full`` in a few hundred steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.difficulty not in ("simple", "full"):
            raise ConfigError(f"world_nli: difficulty must be 'simple' or 'full', got {self.difficulty!r}")

    def draw(self, setting: Setting, rng: random.Random, index: int) -> Item:
        world = setting.world
        label = index % 3
        people: tuple[str, str, str] = tuple(rng.sample(world.names, 3))  # type: ignore[assignment]
        facts: dict[tuple[str, str], Clause] = {}
        for p in people[:2]:
            for rel in rng.sample(_RELATIONS, rng.choice((1, 2))):
                facts[(p, rel)] = _fact(p, rel, world, rng, avoid=(people[2],))
        premise = list(facts.values())
        rng.shuffle(premise)
        if self.difficulty == "simple":
            # one relation for the whole premise; neutral asks about another relation of a mentioned person
            rel = rng.choice(_RELATIONS)
            premise = [_fact(p, rel, world, rng) for p in people[: rng.choice((2, 3))]]
            fact = rng.choice(premise)
            if label == 1:
                other = rng.choice([r for r in _RELATIONS if r != rel])
                hyp = dataclasses.replace(_fact(fact.subj.word, other, world, rng), neg=rng.random() < 0.3)
            else:
                hyp = dataclasses.replace(fact, neg=label == 2)
        elif label == 1:
            hyp = _neutral(facts, people, world, rng)
        else:
            fact = rng.choice(premise)
            hyp = (_entailed if label == 0 else _contradicted)(fact, world, rng)
        return tuple(premise), dataclasses.replace(hyp, question=True), label

    def row(self, item: Item, setting: Setting, lang: Language) -> dict[str, Any]:
        premise, hyp, label = item
        return {"premise": render(premise, lang), "hypothesis": render(hyp, lang), "label": label}

    def format(self, example: Mapping[str, Any]) -> Example:
        language = self.language_of(example)
        choices = tuple(" " + self.prompt_word(w, language) for w in ANSWERS)
        label = int(example["label"])
        return Example(
            prompt=self.frame(example["premise"], example["hypothesis"], language),
            target=choices[label],
            choices=choices,
            label=label,
            text=example["premise"],
            text_pair=example["hypothesis"],
        )

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=self.num_labels, average="micro")
