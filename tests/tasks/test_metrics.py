"""The shared generation metrics: numbers, extractive QA, ROUGE-L in any script."""

from __future__ import annotations

import pytest

from adamergex.errors import ConfigError
from adamergex.tasks._metrics import (
    ExtractiveQAScore,
    NumericExactMatch,
    _rouge_tokenize,
    last_number,
    normalize_number,
    rouge_l,
)


@pytest.mark.parametrize(
    "text,expected",
    [("12", "12"), ("12.0", "12"), ("1,234", "1234"), ("-3", "-3"), ("0.50", "0.5"), (" 7 ", "7"), ("abc", None)],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("3 apples and 4 pears make 7.", "7"),
        ("The answer is 1,250.", "1250"),
        ("It costs 12.0 euros", "12"),
        ("no digits here", ""),
        ("drop to -5 degrees", "-5"),
    ],
)
def test_last_number(text: str, expected: str) -> None:
    assert last_number(text) == expected


def test_numeric_exact_match_scores_fractions() -> None:
    metric = NumericExactMatch()
    metric.update(["12", "1,000", "5"], [("12",), ("1000",), ("6",)])
    metric.update(["7.0"], ["7"])  # a bare string reference counts as one answer
    assert metric.compute().item() == pytest.approx(0.75)


def test_numeric_exact_match_refuses_mismatched_batches() -> None:
    with pytest.raises(ConfigError, match="same length"):
        NumericExactMatch().update(["1"], [("1",), ("2",)])


def test_extractive_qa_score_is_in_unit_range() -> None:
    metric = ExtractiveQAScore()
    metric.update(["in 1854", "the museum"], [("1854", "in 1854"), ("a museum",)])
    scores = metric.compute()
    # "the museum" and "a museum" normalise alike (articles removed): both exact
    assert scores["exact_match"].item() == pytest.approx(1.0)
    assert scores["f1"].item() == pytest.approx(1.0)
    metric.update(["1962"], [("1854",)])
    assert metric.compute()["exact_match"].item() == pytest.approx(2 / 3)


def test_rouge_tokenizer_keeps_every_script() -> None:
    assert _rouge_tokenize("Bonjour, le monde!") == ["Bonjour", "le", "monde"]
    assert _rouge_tokenize("नई रेल सेवा") == ["नई", "रेल", "सेवा"]  # vowel signs stay inside words
    assert _rouge_tokenize("新图书馆 open") == ["新", "图", "书", "馆", "open"]
    assert _rouge_tokenize("Привет, мир") == ["Привет", "мир"]


def test_rouge_l_scores_non_latin_text() -> None:
    metric = rouge_l()
    metric.update(["市中心的新图书馆正式开放。"], [["市中心的新图书馆正式开放。"]])
    assert metric.compute()["rougeL_fmeasure"].item() == pytest.approx(1.0)
    other = rouge_l()
    other.update(["новая библиотека"], [["новая библиотека открылась"]])
    assert other.compute()["rougeL_fmeasure"].item() == pytest.approx(0.8)
