"""The run directory's rows and lock, and the adapter cache, without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adamergex.errors import OutputExistsError
from adamergex.recipes.ablate import AdapterCache, append_row, key_of, read_rows
from adamergex.recipes.ablate._results import run_lock
from tests._adapters import make_state


def test_a_fragment_left_by_a_killed_writer_is_skipped_and_does_not_swallow_the_next_row(tmp_path: Path) -> None:
    append_row(tmp_path, {"cell": "a", "value": 1})
    with open(tmp_path / "results.jsonl", "ab") as fh:
        fh.write(b'{"cell": "b", "val')  # what a SIGKILL in the middle of a write could leave
    assert list(read_rows(tmp_path)) == ["a"]
    append_row(tmp_path, {"cell": "b", "value": 2})
    append_row(tmp_path, {"cell": "a", "value": 3})  # a later row of the same cell wins
    assert read_rows(tmp_path) == {"a": {"cell": "a", "value": 3}, "b": {"cell": "b", "value": 2}}


def test_a_second_run_on_one_directory_is_refused(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with pytest.raises(OutputExistsError, match="another adamergex ablate is running"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released
        pass


def test_cache_trains_a_key_once_and_ignores_leftovers(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path)
    inputs = {"what": "adapter", "seed": 0}
    key = key_of(inputs)
    assert key == key_of({"seed": 0, "what": "adapter"}) != key_of({**inputs, "seed": 1})  # canonical
    (tmp_path / key[:2]).mkdir()
    (tmp_path / key[:2] / f".{key}.tmp-killed").mkdir()  # a write killed midway
    calls = []
    state = make_state("lora", seed=1, rank=2, language="en", task="toy")

    def train() -> object:
        calls.append(1)
        return state

    first, trained = cache.get_or_train(key, inputs, train)
    again, trained_again = cache.get_or_train(key, inputs, train)
    assert trained and not trained_again and calls == [1]
    assert again.fingerprint() == state.fingerprint()
    record = json.loads((cache.entry(key) / "key.json").read_text())
    assert record["inputs"] == inputs and record["key"] == key
    assert [e["key"] for e in cache.entries()] == [key] and len(cache.leftovers()) == 1
    cache.remove(key)
    assert not cache.has(key) and cache.entries() == []
