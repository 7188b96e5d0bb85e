from __future__ import annotations

from pathlib import Path

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("reference_text", languages=("en", "sw"))


def test_loads_plain_text_one_document_per_line(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("sw", "train", data_files=str(fixtures / "reference_text/sw.txt"))
    assert len(rows) == 2
    assert task.format(rows[0]) == Example(prompt="Bandari ilikuwa na shughuli nyingi alfajiri.")


def test_loads_json_lines_with_a_text_column(task, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl("en.jsonl", [{"text": "One document."}, {"text": "Another."}])
    rows = task.load("en", "validation", data_files={"validation": path})
    assert [task.format(r).prompt for r in rows] == ["One document.", "Another."]


@pytest.mark.parametrize(
    "objective,is_encoder,expected",
    [("auto", True, "mlm"), ("auto", False, "clm"), ("clm", False, "clm"), ("mlm", True, "mlm")],
)
def test_objective_follows_the_model(objective: str, is_encoder: bool, expected: str) -> None:
    task = get_task("reference_text", languages=("en",), objective=objective)
    assert task.resolve_objective(is_encoder=is_encoder) == expected


def test_a_forced_objective_the_model_cannot_train_is_refused() -> None:
    task = get_task("reference_text", languages=("en",), objective="clm")
    with pytest.raises(ConfigError, match="objective='clm' cannot train an encoder; use objective='mlm' or 'auto'"):
        task.resolve_objective(is_encoder=True)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"objective must be one of \['auto', 'clm', 'mlm'\], got 'seq2seq'"):
        get_task("reference_text", objective="seq2seq")
    with pytest.raises(ConfigError, match="chunk_length"):
        get_task("reference_text", chunk_length=-4)


def test_hub_is_refused_with_the_way_out(task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="reads local files only .* pass data_files"):
        task.load("en", "train")


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "reference_text/en.txt")
    with pytest.raises(UnknownNameError, match="no language 'fr'; available: en, sw"):
        task.load("fr", "train", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        task.load("en", "dev", data_files=path)
    with pytest.raises(ConfigError, match=r"lacks \['text'\]"):
        task.load("en", "train", data_files=write_jsonl("bad.jsonl", [{"body": "x"}]))
    with pytest.raises(UnknownNameError, match="has no languages; set `languages`"):
        get_task("reference_text").load("en", "train", data_files=path)
