"""Fixtures for the task tests: offline Hub, fixture paths, a recording stand-in for ``datasets.load_dataset``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"


@pytest.fixture
def fixtures() -> Path:
    """``tests/fixtures/tasks``: one folder per task, files named ``<lang>_<split>.jsonl``."""
    return FIXTURES


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, Sequence[dict[str, Any]]], str]:
    """Write rows to ``tmp_path/<name>`` as JSON Lines and return the path."""

    def write(name: str, rows: Sequence[dict[str, Any]]) -> str:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    return write


class FakeHub:
    """Records the arguments of each ``datasets.load_dataset`` call and answers with :attr:`rows`."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = [{"text": f"doc {i}"} for i in range(2)]

    def load_dataset(self, path: str, name: str | None = None, **kwargs: Any) -> Any:
        import datasets

        self.calls.append({"path": path, "name": name, **kwargs})
        ds = datasets.Dataset.from_list(self.rows)
        return ds.to_iterable_dataset() if kwargs.get("streaming") else ds


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """Replace ``datasets.load_dataset`` by a :class:`FakeHub`, so the Hub path of a task runs offline.

    Set ``fake_hub.rows`` to rows in the task's schema to run ``Task.load`` end to end.
    """
    import datasets

    hub = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    yield hub
