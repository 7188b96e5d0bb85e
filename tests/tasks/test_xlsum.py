from __future__ import annotations

from pathlib import Path

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("xlsum")


def test_loads_fixtures(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    assert len(task.load("en", "train", data_files=str(fixtures / "xlsum/en_train.jsonl"))) == 1
    assert len(task.load("hi", "test", data_files=str(fixtures / "xlsum/hi_test.jsonl"))) == 1


def test_format_exact(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("zh", "test", data_files=str(fixtures / "xlsum/zh_test.jsonl"))
    assert task.format(rows[0]) == Example(
        prompt="Article: 市中心的新图书馆于周六正式开放，馆内藏书四万册。\nSummary:",
        target=" 市中心的新图书馆正式开放。",
        references=("市中心的新图书馆正式开放。",),
    )


def test_extract_answer_reads_the_first_line_of_the_continuation(task) -> None:  # type: ignore[no-untyped-def]
    assert task.extract_answer(" A library opened.\nArticle: another one") == "A library opened."


@pytest.mark.parametrize("language", ["en", "hi", "zh"])
def test_metric_perfect_and_constant_predictions(task, fixtures: Path, language: str) -> None:  # type: ignore[no-untyped-def]
    split = "train" if language == "en" else "test"
    rows = task.load(language, split, data_files=str(fixtures / f"xlsum/{language}_{split}.jsonl"))
    refs = [task.format(r).references for r in rows]
    perfect = task.metric()
    perfect.update([task.extract_answer(" " + r[0] + "\n") for r in refs], refs)
    assert perfect.compute()["rougeL_fmeasure"].item() == pytest.approx(1.0)
    unrelated = task.metric()
    unrelated.update(["zzz"] * len(refs), refs)
    assert unrelated.compute()["rougeL_fmeasure"].item() == pytest.approx(0.0)


def test_metric_partial_overlap(task) -> None:  # type: ignore[no-untyped-def]
    metric = task.metric()
    metric.update(["new library opened"], [("a new public library opened",)])
    # LCS 3 tokens: P = 3/3, R = 3/5, F = 0.75
    assert metric.compute()["rougeL_fmeasure"].item() == pytest.approx(0.75)


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "xlsum/hi_test.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'de'; available: en, fr, tr, hi, ar, vi, zh, es, ru, sw, th"):
        task.load("de", "test", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        task.load("hi", "dev", data_files=path)
    bad = write_jsonl("no_summary.jsonl", [{"id": "1", "text": "t"}])
    with pytest.raises(ConfigError, match=r"lacks \['summary'\]"):
        task.load("hi", "test", data_files=bad)


def test_hub_arguments(task, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.rows = [{"id": "1", "url": "u", "title": "t", "summary": "s", "text": "x"}]
    task.load("zh", "validation")
    task.load("en", "train")
    assert fake_hub.calls == [
        {"path": "csebuetnlp/xlsum", "name": "chinese_simplified", "split": "validation", "revision": "main"},
        {"path": "csebuetnlp/xlsum", "name": "english", "split": "train", "revision": "main"},
    ]
