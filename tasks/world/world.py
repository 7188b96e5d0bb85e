"""The synthetic world: people, towns, jobs, possessions and events, all drawn from one seed.

A :class:`World` is pure data. :func:`make_world` builds it deterministically from ``seed`` (Python's
``random.Random`` seeded with an integer, so the same seed gives the same world on every platform and in every
process). Facts about the world are :class:`~adamergex.tasks.world.grammar.Clause` values, which each language of
:mod:`~adamergex.tasks.world.grammar` renders in its own way.

Names of people and towns are proper nouns: they are shared by every language (the ``morph`` language
transliterates them into its own script), and they are generated so that no name is also a word of any lexicon.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

__all__ = [
    "COLORS",
    "JOBS",
    "NOUNS",
    "Item",
    "Person",
    "World",
    "make_world",
    "rng_for",
]

NOUNS: tuple[str, ...] = ("apple", "stone", "book", "coin", "cup", "key", "shell", "hat", "ring", "egg")
"""Countable things people own, buy, find, give and lose (source-language lemmas)."""
COLORS: tuple[str, ...] = ("red", "blue", "green", "white", "black", "yellow")
"""Colours things can have."""
JOBS: tuple[str, ...] = ("baker", "farmer", "smith", "singer", "hunter", "weaver", "sailor", "potter")
"""Jobs people have (exclusive: one job per person)."""

# Syllables names are built from; kept apart from the lexicon phonologies of grammar.py, and checked anyway.
_NAME_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_NAME_VOWELS = ("a", "e", "i", "o", "u")


def rng_for(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from ``parts`` through SHA-256: independent streams per purpose, identical in
    every process (no dependence on ``PYTHONHASHSEED``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Item:
    """A possession: ``count`` things of kind ``noun``, optionally of one ``color``."""

    noun: str
    count: int
    color: str | None = None


@dataclass(frozen=True)
class Person:
    """One person and the facts the encyclopedia states about them."""

    name: str
    town: str
    job: str
    likes: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class World:
    """Everything there is: people (with their facts) and towns."""

    seed: int
    people: tuple[Person, ...]
    towns: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the people, in world order."""
        return tuple(p.name for p in self.people)

    def person(self, name: str) -> Person:
        """The person called ``name``."""
        for p in self.people:
            if p.name == name:
                return p
        raise KeyError(name)


def _names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        syllables = rng.choice((2, 2, 3))
        name = "".join(rng.choice(_NAME_ONSETS) + rng.choice(_NAME_VOWELS) for _ in range(syllables))
        if rng.random() < 0.4:
            name += rng.choice(("n", "r", "l", "s"))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def make_world(seed: int, *, people: int = 24, towns: int = 8, reserved: frozenset[str] = frozenset()) -> World:
    """Build the world of ``seed`` with ``people`` people and ``towns`` towns.

    ``reserved`` holds words names must not collide with (the lexicons of every language).
    """
    if people < 4 or towns < 2:
        raise ValueError(f"a world needs at least 4 people and 2 towns, got {people} and {towns}")
    rng = rng_for("world", seed)
    taken = set(reserved)
    names = _names(rng, people, taken)
    town_names = _names(rng, towns, taken)
    persons = []
    for i, name in enumerate(names):
        nouns = rng.sample(NOUNS, rng.choice((2, 3)))
        items = tuple(
            Item(noun, rng.randint(1, 9), rng.choice(COLORS) if rng.random() < 0.5 else None) for noun in nouns
        )
        others = [n for j, n in enumerate(names) if j != i]
        persons.append(Person(name, rng.choice(town_names), rng.choice(JOBS), rng.choice(others), items))
    return World(seed=seed, people=tuple(persons), towns=tuple(town_names))
