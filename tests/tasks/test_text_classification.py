from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("text_classification", languages=("en", "fr"), labels=("negative", "positive"))


def test_loads_files_with_integer_or_string_labels(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    en = task.load("en", "train", data_files=str(fixtures / "text_classification/en_train.jsonl"))
    fr = task.load("fr", "test", data_files=str(fixtures / "text_classification/fr_test.jsonl"))
    assert [task.format(r).label for r in en] == [0, 1, 1]
    assert [task.format(r).label for r in fr] == [0, 1]


def test_format_exact(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("fr", "test", data_files=str(fixtures / "text_classification/fr_test.jsonl"))
    assert task.num_labels == 2
    assert task.format(rows[1]) == Example(
        prompt="Un repas délicieux, merci !\nLabel:",
        target=" positive",
        choices=(" negative", " positive"),
        label=1,
        text="Un repas délicieux, merci !",
        text_pair=None,
    )


def test_pairs_with_custom_columns(fixtures: Path) -> None:
    task = get_task(
        "text_classification",
        languages=("de",),
        text_column="first",
        text_pair_column="second",
        label_column="gold",
        labels=("no", "yes"),
    )
    assert task.required_columns == ("first", "second", "gold")
    rows = task.load("de", "test", data_files=str(fixtures / "text_classification/de_pairs.jsonl"))
    assert task.format(rows[0]) == Example(
        prompt="Es regnet.\nDie Straße ist nass.\nLabel:",
        target=" yes",
        choices=(" no", " yes"),
        label=1,
        text="Es regnet.",
        text_pair="Die Straße ist nass.",
    )


def test_metric_perfect_and_constant_predictions(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "text_classification/en_train.jsonl"))
    gold = torch.tensor([task.format(r).label for r in rows])  # 0 1 1
    perfect = task.metric()
    perfect.update(gold.clone(), gold)
    assert perfect.compute().item() == pytest.approx(1.0)
    constant = task.metric()
    constant.update(torch.zeros_like(gold), gold)
    assert constant.compute().item() == pytest.approx(1 / 3)


def test_unknown_labels_are_refused(task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"label 'neutral' is not one of labels \['negative', 'positive'\]"):
        task.format({"text": "x", "label": "neutral"})
    with pytest.raises(ConfigError, match=r"class ids must be in \[0, 2\)"):
        task.format({"text": "x", "label": 2})
    assert task.format({"text": "x", "label": -1}).label is None


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="labels must be distinct"):
        get_task("text_classification", labels=("a", "a"))
    with pytest.raises(ConfigError, match=r"num_labels must equal the number of labels \(2\), got 3"):
        get_task("text_classification", labels=("a", "b"), num_labels=3)
    with pytest.raises(UnknownNameError, match="available: label, label_pair"):
        get_task("text_classification", template="fancy")


def test_labels_must_be_set_before_use(fixtures: Path) -> None:
    task = get_task("text_classification", languages=("en",))
    with pytest.raises(ConfigError, match="needs `labels`"):
        task.load("en", "train", data_files=str(fixtures / "text_classification/en_train.jsonl"))


def test_hub_is_refused_with_the_way_out(task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="reads local files only .* pass data_files"):
        task.load("en", "train")


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "text_classification/fr_test.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'de'; available: en, fr"):
        task.load("de", "test", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'holdout'"):
        task.load("fr", "holdout", data_files=path)
    with pytest.raises(ConfigError, match=r"lacks \['label'\]"):
        task.load("fr", "test", data_files=write_jsonl("no_label.jsonl", [{"text": "x"}]))
    with pytest.raises(UnknownNameError, match="has no languages; set `languages`"):
        get_task("text_classification", labels=("a", "b")).load("en", "test", data_files=path)
