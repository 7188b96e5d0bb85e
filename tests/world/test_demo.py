"""The whole demo on the tiny preset, end to end (base model built into a temporary cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adamergex.cli import main
from adamergex.registry import STRATEGIES


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_demo_runs_end_to_end_and_refuses_to_overwrite(cache: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "demo"
    assert main(["demo", "--size", "tiny", "--output", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    record = json.loads((out / "results.json").read_text())
    assert record["split"] == "test" and record["target_language"] == "lex"
    assert record["git_sha"] is None or len(record["git_sha"]) == 40
    for kind in ("lora", "ia3"):
        rows = record["per_seed"][kind]
        assert set(STRATEGIES.names()) <= set(rows)
        for values in rows.values():
            assert values and all(0.0 <= v <= 1.0 for v in values)
    for name in STRATEGIES.names():
        assert f"| {name} |" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["demo", "--size", "tiny", "--output", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_demo_bad_names_list_what_exists(cache: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["demo", "--size", "tiny", "--target", "xx", "--output", str(tmp_path / "o")]) == 2
    assert "unknown target language 'xx'; available: lex, sov, morph" in capsys.readouterr().err
    assert main(["demo", "--size", "tiny", "--task", "nope", "--output", str(tmp_path / "o")]) == 2
    assert "unknown demo task 'nope'; available: world_arith, world_nli, world_qa" in capsys.readouterr().err
    assert main(["demo", "--size", "tiny", "--target", "src", "--output", str(tmp_path / "o")]) == 2
    assert "src" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
