"""Facts about the world as clauses, and the encyclopedia documents built from them.

:class:`Setting` bundles the world and the languages of one seed (built once per process). The encyclopedia is
the reference corpus: for each person and town a short article of true statements (facts, negated facts,
comparatives, events, and quiz lines ``question : ... ? answer : ... .``), so that every word and construction
the tasks use occurs in every language's reference text.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from .grammar import NP, Clause, Language, make_languages, render
from .world import JOBS, NOUNS, World, make_world

__all__ = ["Setting", "encyclopedia", "get_setting", "quiz_line"]


@dataclass(frozen=True)
class Setting:
    """The world of one seed and its four languages."""

    seed: int
    world: World
    languages: dict[str, Language]

    def language(self, code: str) -> Language:
        """The language ``code`` (callers check the code against the task first)."""
        return self.languages[code]


@functools.lru_cache(maxsize=8)
def get_setting(seed: int) -> Setting:
    """The world and languages of ``seed`` (cached per process; both are pure functions of the seed)."""
    langs = make_languages(seed)
    reserved = frozenset(w for lang in langs.values() for w in lang.lexicon.values())
    world = make_world(seed, reserved=reserved)
    return Setting(seed, world, langs)


def name(word: str) -> NP:
    """A noun phrase naming a person or town."""
    return NP("name", word)


def quiz_line(question: Clause, answer: str, lang: Language) -> str:
    """``question : <question> answer : <answer> .`` in ``lang`` (``answer`` a template word, name or digits)."""
    return f"{lang.word('question')} : {render(question, lang)} {lang.word('answer')} : {lang.word(answer)} ."


def _person_article(world: World, p_index: int, rng: random.Random) -> list[tuple[Clause, str | None]]:
    """Statements (clause, quiz answer or None for a plain statement) about one person, in random order."""
    p = world.people[p_index]
    me = name(p.name)
    other_town = rng.choice([t for t in world.towns if t != p.town])
    other_job = rng.choice([j for j in JOBS if j != p.job])
    stranger = rng.choice([q.name for q in world.people if q.name not in (p.name, p.likes)])
    item = rng.choice(p.items)
    out: list[tuple[Clause, str | None]] = [
        (Clause(me, "be", NP("kind", p.job)), None),
        (Clause(me, "live", obl=name(p.town), now=rng.random() < 0.3), None),
        (Clause(me, "like", name(p.likes)), None),
        (Clause(me, "be", NP("kind", other_job), neg=True), None),
        (Clause(me, "live", obl=name(other_town), neg=True), None),
    ]
    out += [(Clause(me, "have", NP("count", it.noun, it.count, it.color)), None) for it in p.items]
    if item.count > 1:
        out.append((Clause(me, "have", NP("count", item.noun, rng.randint(1, item.count - 1), cmp="more")), None))
    out.append((Clause(me, "have", NP("count", item.noun, item.count + rng.randint(1, 3), cmp="fewer")), None))
    missing = rng.choice([n for n in NOUNS if all(it.noun != n for it in p.items)])
    out.append((Clause(me, "have", NP("count", missing), neg=True), None))
    # events: things that happened to the person (no running totals: arithmetic is left to the tasks)
    out.append((Clause(me, rng.choice(("buy", "find")), NP("count", rng.choice(NOUNS), rng.randint(1, 5))), None))
    out.append((Clause(me, "lose", NP("count", rng.choice(NOUNS), rng.randint(1, 5))), None))
    out.append((Clause(me, "give", NP("count", item.noun, rng.randint(1, 5)), obl=name(p.likes)), None))
    # quiz lines
    out += [
        (Clause(me, "live", obl=name(p.town), question=True), "yes"),
        (Clause(me, "live", obl=name(other_town), question=True), "no"),
        (Clause(me, "be", NP("kind", other_job), question=True), "no"),
        (Clause(me, "like", name(stranger), question=True), "maybe"),
        (Clause(me, "have", NP("count", item.noun, "how_many", item.color), question=True), str(item.count)),
        (Clause(me, "live", obl=NP("which", "town"), question=True), p.town),
        (Clause(NP("who"), "be", NP("kind", p.job), question=True), p.name),
    ]
    rng.shuffle(out)
    return out


def _town_article(world: World, t_index: int, rng: random.Random) -> list[tuple[Clause, str | None]]:
    town = world.towns[t_index]
    residents = [p.name for p in world.people if p.town == town]
    out: list[tuple[Clause, str | None]] = [(Clause(name(town), "be", NP("kind", "town")), None)]
    out += [(Clause(name(r), "live", obl=name(town)), None) for r in residents]
    if residents:
        out.append((Clause(NP("who"), "live", obl=name(town), question=True), rng.choice(residents)))
    return out


def _chronicle(world: World, rng: random.Random) -> list[tuple[Clause, str | None]]:
    """A day in the chronicle: where some people were, what they were doing and what they had that day (true
    of that day only, so not the encyclopedia's facts), then questions answered from those lines."""
    people = rng.sample(world.names, 3)
    towns = rng.sample(world.towns, 3)
    jobs = rng.sample(JOBS, 3)
    statements: list[tuple[Clause, str | None]] = []
    quiz: list[tuple[Clause, str | None]] = []
    for p, town, job in zip(people, towns, jobs):
        noun, count = rng.choice(NOUNS), rng.randint(1, 9)
        statements += [
            (Clause(name(p), "live", obl=name(town), now=True), None),
            (Clause(name(p), "be", NP("kind", job), now=True), None),
            (Clause(name(p), "have", NP("count", noun, count), now=True), None),
        ]
        quiz += [
            (Clause(NP("who"), "live", obl=name(town), now=True, question=True), p),
            (Clause(name(p), "live", obl=NP("which", "town"), now=True, question=True), town),
            (Clause(NP("who"), "be", NP("kind", job), now=True, question=True), p),
            (Clause(name(p), "have", NP("count", noun, "how_many"), now=True, question=True), str(count)),
        ]
    rng.shuffle(statements)
    return statements + rng.sample(quiz, 3)


def encyclopedia(
    setting: Setting, lang: Language, rng: random.Random, *, keep: float = 0.7, chronicles: float = 0.0
) -> str:
    """One article in ``lang``: with probability ``chronicles`` a chronicle entry (statements true of one day,
    then questions answered from them), else an encyclopedia article about a random person (or, one time in
    five, a town) that keeps each of its statements with probability ``keep``."""
    world = setting.world
    if rng.random() < chronicles:
        kept = _chronicle(world, rng)
    else:
        if rng.random() < 0.2:
            statements = _town_article(world, rng.randrange(len(world.towns)), rng)
        else:
            statements = _person_article(world, rng.randrange(len(world.people)), rng)
        kept = [s for s in statements if rng.random() < keep] or statements[:1]
    return " ".join(render(c, lang) if a is None else quiz_line(c, a, lang) for c, a in kept)
