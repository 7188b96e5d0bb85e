from __future__ import annotations

from pathlib import Path

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("xquad")


def test_loads_squad_and_xquad_fixtures(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    assert len(task.load("en", "train", data_files=str(fixtures / "xquad/en_train.jsonl"))) == 2
    assert len(task.load("es", "test", data_files=str(fixtures / "xquad/es_test.jsonl"))) == 2


def test_format_exact(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "xquad/en_train.jsonl"))
    assert task.format(rows[0]) == Example(
        prompt="The lighthouse was built in 1854 on a rocky island. It was automated in 1962 and now serves as a "
        "museum.\nQuestion: When was the lighthouse built?\nAnswer:",
        target=" 1854",
        references=("1854", "in 1854"),
    )


def test_extract_answer_reads_the_first_line_of_the_continuation(task) -> None:  # type: ignore[no-untyped-def]
    assert task.extract_answer(" en 1962\nQuestion: ¿Cuándo fue construido?") == "en 1962"


def test_metric_perfect_and_constant_predictions(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("es", "test", data_files=str(fixtures / "xquad/es_test.jsonl"))
    refs = [task.format(r).references for r in rows]  # ("1854",), ("en 1962",)
    perfect = task.metric()
    perfect.update([task.extract_answer(" 1854\n"), task.extract_answer(" en 1962")], refs)
    assert {k: v.item() for k, v in perfect.compute().items()} == pytest.approx({"exact_match": 1.0, "f1": 1.0})
    constant = task.metric()
    constant.update(["1854", "1854"], refs)
    scores = constant.compute()
    assert scores["exact_match"].item() == pytest.approx(0.5)
    assert scores["f1"].item() == pytest.approx(0.5)
    partial = task.metric()
    partial.update(["1962"], [("en 1962",)])  # one of two reference tokens: P=1, R=1/2
    assert partial.compute()["f1"].item() == pytest.approx(2 / 3)


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "xquad/es_test.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'fr'; available: en, de, tr, hi, el, ar, vi, zh, es, ru, th"):
        task.load("fr", "test", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        task.load("es", "dev", data_files=path)
    bad = write_jsonl("no_answers.jsonl", [{"id": "x", "context": "c", "question": "q"}])
    with pytest.raises(ConfigError, match=r"lacks \['answers'\]"):
        task.load("es", "test", data_files=bad)
    with pytest.raises(ConfigError, match="at least one text"):
        task.format({"context": "c", "question": "q", "answers": {"text": [], "answer_start": []}})


def test_hub_sources(task, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.rows = [{"id": "1", "context": "c", "question": "q", "answers": {"text": ["a"], "answer_start": [0]}}]
    task.load("en", "train")
    task.load("en", "test")
    task.load("zh", "test")
    xquad = {"path": "google/xquad", "split": "validation", "revision": "51adfef1c1287aab1d2d91b5bead9bcfb9c68583"}
    assert fake_hub.calls == [
        {"path": "rajpurkar/squad", "name": "plain_text", "split": "train", "revision": "7b6d24c440a36b6815f21b70d25016731768db1f"},
        {**xquad, "name": "xquad.en"},
        {**xquad, "name": "xquad.zh"},
    ]
    with pytest.raises(UnknownNameError, match="no 'validation' split for language 'zh'"):
        task.hub_source("zh", "validation")
