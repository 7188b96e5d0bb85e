from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("pawsx")


def test_loads_fixtures(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    assert len(task.load("en", "train", data_files=str(fixtures / "pawsx/en_train.jsonl"))) == 3
    assert len(task.load("de", "test", data_files=str(fixtures / "pawsx/de_test.jsonl"))) == 3


def test_format_exact(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("de", "test", data_files=str(fixtures / "pawsx/de_test.jsonl"))
    assert task.format(rows[1]) == Example(
        prompt="Sentence 1: Lena hat Tom im Park getroffen.\nSentence 2: Tom hat Lena im Kino getroffen.\n"
        "Question: Do Sentence 1 and Sentence 2 mean the same thing? Yes or No?\nAnswer:",
        target=" No",
        choices=(" No", " Yes"),
        label=0,
        text="Lena hat Tom im Park getroffen.",
        text_pair="Tom hat Lena im Kino getroffen.",
    )
    assert task.format(rows[0]).target == " Yes"


def test_metric_perfect_and_constant_predictions(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("de", "test", data_files=str(fixtures / "pawsx/de_test.jsonl"))
    gold = torch.tensor([task.format(r).label for r in rows])  # 1 0 0
    perfect = task.metric()
    perfect.update(gold.clone(), gold)
    assert perfect.compute().item() == pytest.approx(1.0)
    constant = task.metric()
    constant.update(torch.ones_like(gold), gold)
    assert constant.compute().item() == pytest.approx(1 / 3)


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "pawsx/de_test.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'ja'; available: en, fr, de, zh, es"):
        task.load("ja", "test", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        task.load("de", "dev", data_files=path)
    bad = write_jsonl("no_sentence2.jsonl", [{"id": 1, "sentence1": "a", "label": 1}])
    with pytest.raises(ConfigError, match=r"lacks \['sentence2'\]"):
        task.load("de", "test", data_files=bad)


def test_hub_arguments(task, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.rows = [{"id": 1, "sentence1": "a", "sentence2": "b", "label": 1}]
    task.load("zh", "validation")
    assert fake_hub.calls == [
        {"path": "google-research-datasets/paws-x", "name": "zh", "split": "validation", "revision": "4cd8187c404bda33cb1f62b49b001115862acf37"}
    ]
