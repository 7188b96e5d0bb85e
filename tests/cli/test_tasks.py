"""`adamergex tasks [NAME]`: generated from the task registry and the task dataclasses' fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from adamergex.cli import COMMANDS, main
from adamergex.registry import TASKS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_registered_task_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert "tasks" in COMMANDS
    assert main(["tasks"]) == 0
    text = capsys.readouterr().out
    for name in TASKS.names():
        cls = TASKS.get(name)
        assert f"{name}  ({cls.kind}; metric: " in text
    assert main(["tasks", "--format", "json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == TASKS.names()


@pytest.mark.parametrize("name", TASKS.names())
def test_options_are_the_dataclass_fields(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", name, "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    cls = TASKS.get(name)
    fields = dataclasses.fields(cls)
    assert [o["name"] for o in row["options"]] == [f.name for f in fields]
    assert [o["type"] for o in row["options"]] == [str(f.type) for f in fields]
    defaults = [json.loads(json.dumps(getattr(cls(), f.name), default=str)) for f in fields]
    assert [o["default"] for o in row["options"]] == defaults
    assert all(o["help"] for o in row["options"]), [o["name"] for o in row["options"] if not o["help"]]
    assert row["kind"] == cls.kind and row["splits"] == ["train", "validation", "test"]
    assert row["dataset_id"] == (cls().dataset_id or None)


def test_one_task_in_full_with_the_options_the_issue_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "text_classification"]) == 0
    text = capsys.readouterr().out
    for option in ("labels: tuple[str, ...] = ()", "languages: tuple[str, ...] = ()", "template: str | None = None",
                   "text_template: str = '{text}'"):
        assert f"      {option}\n" in text
    assert "Verbalised class names in class-id order" in text
    assert main(["tasks", "reference_text"]) == 0
    text = capsys.readouterr().out
    for option in ("chunk_length: int = 512", "objective: Literal['clm', 'mlm', 'auto'] = 'auto'",
                   "packing: Literal['stream', 'lines', 'lines_packed'] = 'stream'"):
        assert f"      {option}\n" in text
    assert main(["tasks", "xnli", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("### `xnli` (classification)")
    assert "- dataset: facebook/xnli @ b8dd5d7af51114dbda02c0e3f6133f332186418e" in md
    assert "| `text_pair_template` | `str` | `'{text_pair}'` |" in md


def test_unknown_task_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "nope"]) == 2
    err = capsys.readouterr().err
    assert f"unknown task 'nope'; available: {', '.join(TASKS.names())}" in err


def test_readme_points_to_the_command() -> None:
    assert "`adamergex tasks`" in README.read_text()
