"""Each target language differs from the source in exactly the designed ways (see tasks/world/grammar.py)."""

from __future__ import annotations

import re

import pytest

from adamergex.tasks.world.corpus import get_setting
from adamergex.tasks.world.grammar import LANGUAGES, NP, SOURCE_FORMS, VERBS, Clause, is_shared_token, render
from adamergex.tasks.world.nli import WorldNliTask
from adamergex.tasks.world.world import make_world

LATIN = set("abcdefghijklmnopqrstuvwxyz")


def _clauses(n: int = 300) -> list[Clause]:
    """Premises and hypotheses of NLI items: every construction (negation, comparatives, questions, obliques)."""
    task = WorldNliTask(train_size=n, validation_size=3, test_size=3)
    out: list[Clause] = []
    for premise, hyp, _ in task.items("train"):
        out += [*premise, hyp]
    return out


def _lexical(tokens: list[str], names: set[str]) -> list[str]:
    return [t for t in tokens if not is_shared_token(t) and t not in names]


def test_same_seed_same_world_and_languages() -> None:
    a, b = make_world(3), make_world(3)
    assert a == b
    assert make_world(4) != a
    s3 = get_setting(3)
    assert s3.languages["lex"].lexicon != get_setting(4).languages["lex"].lexicon


def test_target_lexicons_are_disjoint_from_the_source_and_each_other() -> None:
    langs = get_setting(0).languages
    src = set(SOURCE_FORMS)
    words = {code: set(langs[code].lexicon.values()) for code in ("lex", "sov")}
    words["morph"] = set(langs["morph"].words())
    for code, ws in words.items():
        assert not ws & src, code
    assert not words["lex"] & words["sov"]
    # relabelling is one-to-one: every source form gets its own word
    for code in ("lex", "sov"):
        assert set(langs[code].lexicon) == src
        assert len(set(langs[code].lexicon.values())) == len(src)


def test_lex_is_the_source_with_its_words_relabelled() -> None:
    langs = get_setting(0).languages
    lex = langs["lex"]
    for c in _clauses():
        src_tokens = render(c, langs["src"]).split()
        assert render(c, lex).split() == [lex.lexicon.get(t, t) for t in src_tokens]


def test_sov_relabels_the_source_words_and_puts_the_verb_last() -> None:
    langs = get_setting(0).languages
    sov = langs["sov"]
    verb_forms = {sov.lexicon[f] for forms in VERBS.values() for f in forms if f != "be"}
    aux = {sov.lexicon["not"], sov.lexicon["does"]}
    for c in _clauses():
        src_tokens = render(c, langs["src"]).split()
        sov_tokens = render(c, sov).split()
        assert sorted(sov_tokens) == sorted(sov.lexicon.get(t, t) for t in src_tokens)
        final = sov_tokens[-2]  # before "." / "?"
        assert final in verb_forms | aux, (sov_tokens, c)
        # a negated clause ends "verb not does" (or "not is"): the verb group is reversed
        if c.neg and c.verb != "be":
            assert sov_tokens[-4:-1] == [sov.lexicon[VERBS[c.verb][1]], sov.lexicon["not"], sov.lexicon["does"]]
        if c.obj is not None and c.obj.kind == "name":
            assert sov_tokens.index(c.obj.word) < len(sov_tokens) - 2  # the object precedes the verb


def test_morph_has_its_own_script_suffixes_and_verb_final_order() -> None:
    setting = get_setting(0)
    src, morph = setting.languages["src"], setting.languages["morph"]
    prs = morph.write(morph.lexicon["PRS"])
    neg = morph.write(morph.lexicon["NEG"])
    stems = {morph.write(morph.lexicon[v]) for v in VERBS}
    for c in _clauses():
        text = render(c, morph)
        letters = {ch for ch in text if ch.isalpha()}
        assert not letters & LATIN, text
        tokens = text.split()
        verb = tokens[-2]
        assert verb.endswith(prs) and any(verb.startswith(s) for s in stems), text
        if c.neg:
            assert verb[: -len(prs)].endswith(neg), text
        # morph has no function words for "does", "not", "in", "to", "a": fewer tokens than the source
        assert len(tokens) <= len(render(c, src).split())


def test_digits_are_shared_and_every_language_writes_the_same_numbers() -> None:
    langs = get_setting(0).languages
    for c in _clauses():
        numbers = {code: re.findall(r"\d+", render(c, langs[code])) for code in LANGUAGES}
        assert all(sorted(v) == sorted(numbers["src"]) for v in numbers.values()), numbers


def test_names_are_shared_and_transliterated_in_morph() -> None:
    setting = get_setting(0)
    langs = setting.languages
    name = setting.world.names[0]
    c = Clause(NP("name", name), "be", NP("kind", "baker"))
    for code in ("src", "lex", "sov"):
        assert render(c, langs[code]).split()[0] == name
    assert render(c, langs["morph"]).split()[0] == langs["morph"].write(name) != name
    assert set(setting.world.names).isdisjoint(w for lang in langs.values() for w in lang.lexicon.values())


@pytest.mark.parametrize("code", LANGUAGES)
def test_rendering_uses_only_its_lexicon_names_digits_and_punctuation(code: str) -> None:
    setting = get_setting(0)
    lang = setting.languages[code]
    names = set(setting.world.names) | set(setting.world.towns)
    if code == "morph":
        return  # inflected words: covered by the script and suffix test
    allowed = set(lang.lexicon.values())
    for c in _clauses(100):
        assert set(_lexical(render(c, lang).split(), names)) <= allowed
