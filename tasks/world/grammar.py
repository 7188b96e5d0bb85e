"""The languages of the synthetic world and the grammar that renders statements in them.

A statement is a :class:`Clause` (subject, verb, object, oblique, negation, question) built from :class:`NP` noun
phrases. Each :class:`Language` renders it; the four languages differ from the source in known, increasing ways:

=========  ==============================================================================================
``src``    The source: English words, SVO order, prepositions, English plurals and do-support negation.
``lex``    (a) New lexicon only: every source word form is relabelled one-to-one by an invented word.
           Same order, same characters; ``lex`` is ``src`` with its words swapped.
``sov``    (b) New lexicon and head-final order: subject-object-verb, postpositions, the verb group
           reversed (``live not does``), comparatives and articles after their head.
``morph``  (c) New lexicon, ``sov`` order, suffix morphology and a disjoint script: nouns take plural and
           case suffixes (accusative, locative, dative) instead of prepositions, verbs take negation and
           present suffixes instead of ``does``/``not``, there are no articles, and every letter is written
           in Cyrillic (names of people and towns are transliterated).
=========  ==============================================================================================

Digits and the punctuation ``. ? :`` are shared by every language, as in real scripts. Lexicons, the script
mapping and the invented words are all drawn from the world seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .world import COLORS, JOBS, NOUNS, rng_for

__all__ = [
    "LANGUAGES",
    "SOURCE_FORMS",
    "TEMPLATE_WORDS",
    "Clause",
    "Language",
    "NP",
    "make_languages",
    "render",
]

LANGUAGES: tuple[str, ...] = ("src", "lex", "sov", "morph")
"""Language codes: the source first, then the targets in order of increasing distance."""

VERBS: dict[str, tuple[str, str]] = {
    # lemma: (3rd person singular present, base form after "does not")
    "live": ("lives", "live"),
    "like": ("likes", "like"),
    "have": ("has", "have"),
    "be": ("is", "be"),
    "buy": ("buys", "buy"),
    "find": ("finds", "find"),
    "give": ("gives", "give"),
    "lose": ("loses", "lose"),
}
OBLIQUE: dict[str, Literal["loc", "dat"]] = {"live": "loc", "give": "dat"}
"""Verbs taking an oblique noun phrase, and its case (``in`` / ``to`` in the source)."""
PREPOSITIONS: dict[str, str] = {"loc": "in", "dat": "to"}
TEMPLATE_WORDS: tuple[str, ...] = ("question", "answer", "yes", "maybe", "no")
"""Words prompts are built from (rendered in each language)."""
_FUNCTION = ("a", "does", "not", "in", "to", "than", "more", "fewer", "how", "many", "which", "who", "now", "town")

SOURCE_FORMS: frozenset[str] = frozenset(
    [f for forms in VERBS.values() for f in forms if f != "be"]
    + [n for noun in NOUNS for n in (noun, noun + "s")]
    + list(COLORS) + list(JOBS) + list(_FUNCTION) + list(TEMPLATE_WORDS)
)
"""Every word form the source renders (the set the target lexicons relabel)."""

# Lemmas and suffixes of the morphological language (stems are invented per world seed).
_MORPH_LEMMAS = (
    tuple(VERBS) + NOUNS + ("town",) + COLORS + JOBS
    + ("than", "more", "fewer", "how_many", "which", "who", "now") + TEMPLATE_WORDS
)
_MORPH_SUFFIXES = ("PL", "ACC", "LOC", "DAT", "NEG", "PRS")
_PUNCT = frozenset(".?:")
_CYRILLIC = tuple(chr(c) for c in range(0x430, 0x450))


@dataclass(frozen=True)
class NP:
    """A noun phrase.

    ``kind``: ``name`` (a person or town, ``word`` is the name), ``count`` (``n`` things of noun ``word``,
    ``n`` an int, ``None`` for a bare plural or ``"how_many"``, optional ``color`` and comparative ``cmp``:
    "more than n" / "fewer than n"), ``kind`` (a predicate noun: job or ``town``), ``which`` (``which town``) or
    ``who``.
    """

    kind: Literal["name", "count", "kind", "which", "who"]
    word: str = ""
    n: int | Literal["how_many"] | None = None
    color: str | None = None
    cmp: Literal["more", "fewer"] | None = None


@dataclass(frozen=True)
class Clause:
    """One statement or question: ``subj verb [obj] [oblique] [now]``, possibly negated."""

    subj: NP
    verb: str
    obj: NP | None = None
    obl: NP | None = None
    neg: bool = False
    now: bool = False
    question: bool = False

    def __post_init__(self) -> None:
        if self.verb not in VERBS:
            raise ValueError(f"verb must be one of {sorted(VERBS)}, got {self.verb!r}")
        if (self.obl is not None) != (self.verb in OBLIQUE):
            raise ValueError(f"verb {self.verb!r} takes an oblique iff it is one of {sorted(OBLIQUE)}")


@dataclass(frozen=True)
class Language:
    """How one language renders clauses: its word order, morphology, lexicon and script."""

    code: str
    description: str
    order: Literal["svo", "sov"]
    morphology: bool
    lexicon: Mapping[str, str]
    """``src``/``lex``/``sov``: source word form → word. ``morph``: lemma or suffix (``PL``...) → Latin stem,
    written out through :attr:`script`."""
    script: Mapping[str, str] = field(default_factory=dict)
    """Latin letter → letter of this language's script (empty: Latin)."""

    def write(self, text: str) -> str:
        """``text`` in this language's script (digits and punctuation unchanged)."""
        return "".join(self.script.get(ch, ch) for ch in text) if self.script else text

    def word(self, source_word: str) -> str:
        """A template word (``question``, ``yes``...) or a name, as written in this language."""
        return self.write(self.lexicon.get(source_word, source_word))

    def words(self) -> frozenset[str]:
        """Every word of the lexicon as written (stems and suffixes for ``morph``)."""
        return frozenset(self.write(w) for w in self.lexicon.values())


# -- invented words ----------------------------------------------------------------------------------------------
_PHONOLOGIES = {
    # consonants, vowels, syllable shapes: the three invented lexicons sound different from each other and from
    # the CV names of world.py (a closed syllable always ends the word, so words rarely look like names).
    "lex": ("bdgklmnprstvz", "aeiou", ("CV", "CVC")),
    "sov": ("cfhjkpqrswxy", "aeiouy", ("CV", "CVC", "VC")),
    "morph": ("bcdfghklmnprstvz", "aeiou", ("CV", "CVC")),
}


def _invent(rng_key: str, seed: int, count: int, taken: set[str], *, syllables: tuple[int, ...]) -> list[str]:
    consonants, vowels, shapes = _PHONOLOGIES[rng_key]
    rng = rng_for("lexicon", rng_key, seed, count, syllables)
    out: list[str] = []
    while len(out) < count:
        word = ""
        for _ in range(rng.choice(syllables)):
            shape = rng.choice(shapes)
            word += "".join(rng.choice(consonants if c == "C" else vowels) for c in shape)
        if word not in taken:
            taken.add(word)
            out.append(word)
    return out


def make_languages(seed: int) -> dict[str, Language]:
    """The four languages of world ``seed`` (see module docstring), keyed by code."""
    forms = sorted(SOURCE_FORMS)
    taken: set[str] = set(forms)
    langs = {
        "src": Language("src", "source: English words, SVO", "svo", False, {f: f for f in forms}),
    }
    short = [f for f in forms if len(f) <= 3]
    long_ = [f for f in forms if len(f) > 3]
    for code, order, desc in (
        ("lex", "svo", "(a) new lexicon, source word order"),
        ("sov", "sov", "(b) new lexicon, SOV head-final order"),
    ):
        words = _invent(code, seed, len(short), taken, syllables=(1,)) + _invent(
            code, seed, len(long_), taken, syllables=(2, 3)
        )
        langs[code] = Language(code, desc, order, False, dict(zip(short + long_, words)))  # type: ignore[arg-type]
    stems = _invent("morph", seed, len(_MORPH_LEMMAS), set(), syllables=(1, 2))
    suffixes = _invent("morph", seed + 1, len(_MORPH_SUFFIXES), set(stems), syllables=(1,))
    letters = list(_CYRILLIC)
    rng_for("script", seed).shuffle(letters)
    script = dict(zip("abcdefghijklmnopqrstuvwxyz", letters))
    lexicon = dict(zip(_MORPH_LEMMAS, stems)) | dict(zip(_MORPH_SUFFIXES, suffixes))
    langs["morph"] = Language(
        "morph", "(c) new lexicon, SOV, suffix morphology, Cyrillic script", "sov", True, lexicon, script
    )
    return langs


# -- rendering -----------------------------------------------------------------------------------------------------
def _source_np(np: NP, order: str) -> list[str]:
    head_final = order == "sov"
    if np.kind in ("name",):
        return [np.word]
    if np.kind == "who":
        return ["who"]
    if np.kind == "which":
        return ["which", np.word]
    if np.kind == "kind":
        return [np.word, "a"] if head_final else ["a", np.word]
    out: list[str] = []
    if np.cmp is not None:
        assert isinstance(np.n, int), "a comparative needs a number"
        out += [str(np.n), "than", np.cmp] if head_final else [np.cmp, "than", str(np.n)]
    elif np.n == "how_many":
        out += ["how", "many"]
    elif np.n is not None:
        out.append(str(np.n))
    if np.color is not None:
        out.append(np.color)
    out.append(np.word if np.n == 1 and np.cmp is None else np.word + "s")
    return out


def _source_tokens(c: Clause, order: str) -> list[str]:
    third, base = VERBS[c.verb]
    if c.neg:
        verb = [third, "not"] if c.verb == "be" else ["does", "not", base]
    else:
        verb = [third]
    subj = _source_np(c.subj, order)
    obj = _source_np(c.obj, order) if c.obj is not None else []
    obl: list[str] = []
    if c.obl is not None:
        prep = PREPOSITIONS[OBLIQUE[c.verb]]
        obl = _source_np(c.obl, order) + [prep] if order == "sov" else [prep] + _source_np(c.obl, order)
    now = ["now"] if c.now else []
    end = ["?" if c.question else "."]
    if order == "sov":
        return subj + now + obl + obj + verb[::-1] + end
    return subj + verb + obj + obl + now + end


def _morph_np(np: NP, case: str | None, lx: Mapping[str, str]) -> list[str]:
    suffix = lx[case] if case else ""
    if np.kind == "name":
        return [np.word + suffix]
    if np.kind == "who":
        return [lx["who"] + suffix]
    if np.kind == "which":
        return [lx["which"], lx[np.word] + suffix]
    if np.kind == "kind":
        return [lx[np.word]]
    out: list[str] = []
    if np.cmp is not None:
        out += [str(np.n), lx["than"], lx[np.cmp]]
    elif np.n == "how_many":
        out.append(lx["how_many"])
    elif np.n is not None:
        out.append(str(np.n))
    if np.color is not None:
        out.append(lx[np.color])
    plural = "" if np.n == 1 and np.cmp is None else lx["PL"]
    out.append(lx[np.word] + plural + suffix)
    return out


def _morph_tokens(c: Clause, lx: Mapping[str, str]) -> list[str]:
    subj = _morph_np(c.subj, None, lx)
    obj = _morph_np(c.obj, None if c.verb == "be" else "ACC", lx) if c.obj is not None else []
    obl = _morph_np(c.obl, OBLIQUE[c.verb].upper(), lx) if c.obl is not None else []
    verb = [lx[c.verb] + (lx["NEG"] if c.neg else "") + lx["PRS"]]
    now = [lx["now"]] if c.now else []
    return subj + now + obl + obj + verb + ["?" if c.question else "."]


def render(clauses: Clause | Iterable[Clause], lang: Language) -> str:
    """``clauses`` as one line of text in ``lang`` (tokens separated by single spaces)."""
    if isinstance(clauses, Clause):
        clauses = [clauses]
    tokens: list[str] = []
    for c in clauses:
        if lang.morphology:
            tokens += [lang.write(t) for t in _morph_tokens(c, lang.lexicon)]
        else:
            tokens += [lang.lexicon.get(t, t) for t in _source_tokens(c, lang.order)]
    return " ".join(tokens)


def is_shared_token(token: str) -> bool:
    """Digits and punctuation: the tokens every language writes the same way."""
    return token.isdigit() or token in _PUNCT
