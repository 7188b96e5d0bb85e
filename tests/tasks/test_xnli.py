from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("xnli")


def test_loads_fixtures_per_language_and_split(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    files = {"train": str(fixtures / "xnli/en_train.jsonl")}
    ds = task.load("en", "train", data_files=files)
    assert len(ds) == 4 and {"premise", "hypothesis", "label"} <= set(ds.column_names)
    assert len(task.load("fr", "test", data_files=str(fixtures / "xnli/fr_test.jsonl"))) == 3
    assert len(task.load("zh", "validation", data_files=str(fixtures / "xnli/zh_validation.jsonl"))) == 2
    assert len(task.load("en", "train", data_files=files, limit=2)) == 2


def test_format_gives_the_exact_prompt_choices_and_label(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "xnli/en_train.jsonl"))
    ex = task.format(rows[2])
    assert ex == Example(
        prompt="The bakery on the corner opens at six every morning.\n"
        "Question: The bakery never opens before noon. True, False or Neither?\nAnswer:",
        target=" False",
        choices=(" True", " Neither", " False"),
        label=2,
        text="The bakery on the corner opens at six every morning.",
        text_pair="The bakery never opens before noon.",
    )
    assert [task.format(r).target for r in rows] == [" True", " Neither", " False", " True"]


def test_label_order_is_the_hub_order(task) -> None:  # type: ignore[no-untyped-def]
    assert task.label_names == ("entailment", "neutral", "contradiction")
    assert task.num_labels == 3


def test_metric_perfect_and_constant_predictions(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "xnli/en_train.jsonl"))
    gold = torch.tensor([task.format(r).label for r in rows])  # 0 1 2 0
    perfect = task.metric()
    perfect.update(gold.clone(), gold)
    assert perfect.compute().item() == pytest.approx(1.0)
    constant = task.metric()
    constant.update(torch.zeros_like(gold), gold)
    assert constant.compute().item() == pytest.approx(0.5)


def test_out_of_range_label_is_refused(task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"labels in \[0, 3\)"):
        task.format({"premise": "a", "hypothesis": "b", "label": 3})


def test_unknown_language_lists_the_available_ones(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownNameError, match="no language 'xx'; available: en, fr, de"):
        task.load("xx", "test", data_files=str(fixtures / "xnli/fr_test.jsonl"))


def test_unknown_split_lists_the_canonical_ones(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownNameError, match="unknown split 'dev'; available: train, validation, test"):
        task.load("fr", "dev", data_files=str(fixtures / "xnli/fr_test.jsonl"))


def test_a_file_missing_a_column_names_it(task, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl("no_hypothesis.jsonl", [{"premise": "p", "label": 0}])
    with pytest.raises(ConfigError, match=r"lacks \['hypothesis'\]"):
        task.load("fr", "test", data_files=path)


def test_hub_arguments(task, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.rows = [{"premise": "p", "hypothesis": "h", "label": 1}]
    assert task.format(task.load("fr", "test")[0]).label == 1
    task.load("en", "train")
    assert fake_hub.calls == [
        {"path": "facebook/xnli", "name": "fr", "split": "test", "revision": task.revision},
        {"path": "facebook/xnli", "name": "en", "split": "train", "revision": task.revision},
    ]


def test_a_language_added_by_override_without_hub_config_is_named(fake_hub) -> None:  # type: ignore[no-untyped-def]
    task = get_task("xnli", languages=("en", "yo"))
    with pytest.raises(UnknownNameError, match="no Hub config for language 'yo'"):
        task.load("yo", "test")
    assert fake_hub.calls == []
