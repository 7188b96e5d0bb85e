from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("xcopa")


def test_loads_copa_and_xcopa_fixtures(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    assert len(task.load("en", "train", data_files=str(fixtures / "xcopa/en_train.jsonl"))) == 3
    assert len(task.load("tr", "test", data_files=str(fixtures / "xcopa/tr_test.jsonl"))) == 2
    assert len(task.load("zh", "validation", data_files={"validation": str(fixtures / "xcopa/zh_validation.jsonl")})) == 2


def test_format_cause_and_effect(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "xcopa/en_train.jsonl"))
    assert task.format(rows[0]) == Example(
        prompt="The ice on the pond melted because",
        target=" the weather turned warm.",
        choices=(" the weather turned warm.", " the pond was deep."),
        label=0,
    )
    effect = task.format(rows[1])
    assert effect.prompt == "I forgot my umbrella at home therefore"
    assert effect.choices == (" i bought a new hat.", " i got wet in the rain.")
    assert effect.label == 1 and effect.target == effect.choices[1]


def test_format_strips_non_latin_final_punctuation(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("zh", "validation", data_files=str(fixtures / "xcopa/zh_validation.jsonl"))
    ex = task.format(rows[0])
    assert ex.prompt == "我的手机没电了 because"
    assert ex.choices == (" 我忘了给它充电。", " 我买了新手机壳。")


def test_hidden_label_gives_no_target(task) -> None:  # type: ignore[no-untyped-def]
    ex = task.format({"premise": "A.", "choice1": "B.", "choice2": "C.", "question": "cause", "label": -1})
    assert ex.label is None and ex.target == ""


def test_unknown_question_is_refused(task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="'question' must be one of \\['cause', 'effect'\\], got 'why'"):
        task.format({"premise": "A.", "choice1": "B.", "choice2": "C.", "question": "why", "label": 0})


def test_metric_perfect_and_constant_predictions(task) -> None:  # type: ignore[no-untyped-def]
    gold = torch.tensor([0, 1, 1, 1])
    perfect = task.metric()
    perfect.update(gold.clone(), gold)
    assert perfect.compute().item() == pytest.approx(1.0)
    constant = task.metric()
    constant.update(torch.zeros_like(gold), gold)
    assert constant.compute().item() == pytest.approx(0.25)


def test_unknown_language_and_split(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "xcopa/tr_test.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'fr'; available: en, tr, vi, zh, sw, th"):
        task.load("fr", "test", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'eval'"):
        task.load("tr", "eval", data_files=path)


def test_a_file_missing_a_column_names_it(task, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl("no_question.jsonl", [{"premise": "A.", "choice1": "B.", "choice2": "C.", "label": 0}])
    with pytest.raises(ConfigError, match=r"lacks \['question'\]"):
        task.load("tr", "test", data_files=path)


def test_hub_sources(task) -> None:  # type: ignore[no-untyped-def]
    src = task.hub_source("en", "train")
    assert (src.dataset_id, src.config, src.split, src.revision) == (
        "aps/super_glue",
        "copa",
        "train",
        "3de24cf8022e94f4ee4b9d55a6f539891524d646",
    )
    src = task.hub_source("th", "test")
    assert (src.dataset_id, src.config, src.split) == ("cambridgeltl/xcopa", "th", "test")


def test_splits_missing_on_the_hub_are_named(task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownNameError, match="no 'test' split for language 'en' on the Hub; available: train, validation"):
        task.hub_source("en", "test")
    with pytest.raises(UnknownNameError, match="no 'train' split for language 'sw'"):
        task.hub_source("sw", "train")


def test_load_hub_calls_load_dataset_with_the_pinned_revision(task, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.rows = [{"premise": "A.", "choice1": "B.", "choice2": "C.", "question": "effect", "label": 1}]
    ds = task.load("vi", "validation")
    assert task.format(ds[0]).prompt == "A therefore"
    assert fake_hub.calls == [
        {"path": "cambridgeltl/xcopa", "name": "vi", "split": "validation", "revision": task.revision}
    ]
