from __future__ import annotations

from pathlib import Path

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("mgsm")


def test_loads_gsm8k_and_mgsm_fixtures(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    assert len(task.load("en", "train", data_files=str(fixtures / "mgsm/en_train.jsonl"))) == 2
    assert len(task.load("fr", "test", data_files=str(fixtures / "mgsm/fr_test.jsonl"))) == 2


def test_format_gsm8k_row_with_chain_of_thought(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "mgsm/en_train.jsonl"))
    assert task.format(rows[0]) == Example(
        prompt="Question: A shop sold 12 apples in the morning and twice as many in the afternoon. "
        "How many apples did it sell in total?\nStep-by-step answer:",
        target=" In the afternoon it sold 12*2 = 24 apples.\nIn total it sold 12+24 = 36 apples.\nThe answer is 36.",
        references=("36",),
    )
    assert task.format(rows[1]).references == ("3000",)  # "#### 3,000" normalised


def test_format_mgsm_row_direct(fixtures: Path) -> None:
    task = get_task("mgsm", template="direct")
    rows = task.load("fr", "test", data_files=str(fixtures / "mgsm/fr_test.jsonl"))
    assert task.format(rows[0]) == Example(
        prompt="Question: Julie a 5 crayons et en achète 7 de plus. Combien de crayons a-t-elle ?\nAnswer:",
        target=" 12",
        references=("12",),
    )


def test_extract_answer_reads_the_last_number_of_the_continuation_only(task) -> None:  # type: ignore[no-untyped-def]
    prompt = task.format({"question": "Julie a 5 crayons et en achète 7 de plus.", "answer_number": 12}).prompt
    assert "5" in prompt and "7" in prompt
    assert task.extract_answer(" She has 5 + 7 = 12 crayons.\nThe answer is 12.") == "12"
    assert task.extract_answer(" The total is 1,250.0 dollars") == "1250"
    assert task.extract_answer(" I do not know.") == ""  # the prompt's numbers are never seen
    # a new problem started by the model is not read
    assert task.extract_answer(" The answer is 8.\n\nQuestion: Tom has 30 pens.") == "8"
    assert task.extract_answer(" The answer is 8. Question: Tom has 30 pens.") == "8"


def test_metric_on_extracted_answers(task) -> None:  # type: ignore[no-untyped-def]
    refs = [("12",), ("24",), ("3000",), ("7",)]
    continuations = [" 5 + 7 = 12.", " 3 * 8 = 24", " 3,000 marbles", " 7.0"]
    perfect = task.metric()
    perfect.update([task.extract_answer(c) for c in continuations], refs)
    assert perfect.compute().item() == pytest.approx(1.0)
    constant = task.metric()
    constant.update(["12"] * 4, refs)
    assert constant.compute().item() == pytest.approx(0.25)


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "mgsm/fr_test.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'bn'; available: en, fr, de, zh, es, ru, sw, th"):
        task.load("bn", "test", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        task.load("fr", "dev", data_files=path)
    no_question = write_jsonl("no_question.jsonl", [{"answer_number": 3}])
    with pytest.raises(ConfigError, match=r"lacks \['question'\]"):
        task.load("fr", "test", data_files=no_question)
    no_answer = write_jsonl("no_answer.jsonl", [{"question": "How many?"}])
    with pytest.raises(ConfigError, match="needs column 'answer_number' .* or 'answer'"):
        task.load("fr", "test", data_files=no_answer)
    with pytest.raises(ConfigError, match="numeric 'answer_number'"):
        task.format({"question": "q", "answer": "no final line", "answer_number": None})


def test_hub_sources(task, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.rows = [{"question": "q", "answer": "a\n#### 1"}]
    task.load("en", "train")
    task.load("en", "validation")
    fake_hub.rows = [{"question": "q", "answer": None, "answer_number": 1, "equation_solution": None}]
    task.load("en", "test")
    task.load("sw", "test")
    gsm8k = {"path": "openai/gsm8k", "name": "main", "revision": "740312add88f781978c0658806c59bc2815b9866"}
    assert fake_hub.calls == [
        {**gsm8k, "split": "train[:-500]"},
        {**gsm8k, "split": "train[-500:]"},
        {"path": "juletxara/mgsm", "name": "en", "split": "test", "revision": "b2f13d426afe3be8d69a7e739b36724db8b66bbc"},
        {"path": "juletxara/mgsm", "name": "sw", "split": "test", "revision": "b2f13d426afe3be8d69a7e739b36724db8b66bbc"},
    ]
    with pytest.raises(UnknownNameError, match="no 'train' split for language 'sw' on the Hub; available: test"):
        task.hub_source("sw", "train")


def test_validation_examples_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="validation_examples must be a positive integer, got 0"):
        get_task("mgsm", validation_examples=0)
