"""The whole demo on the tiny preset, end to end (base model built into a temporary cache)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from adamergex.cli import main
from adamergex.errors import OutputExistsError, UnknownNameError
from adamergex.registry import STRATEGIES
from adamergex.tasks.world.demo import DemoConfig, run_demo


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_demo_runs_end_to_end_and_refuses_to_overwrite(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    started = time.perf_counter()
    assert main(["demo", "--size", "tiny", "--seeds", "0,1", "--output", str(out), "--no-progress"]) == 0
    elapsed = time.perf_counter() - started
    assert elapsed < 60, f"the tiny demo took {elapsed:.0f} s"
    table = capsys.readouterr().out
    record = json.loads((out / "results.json").read_text())
    assert record["split"] == "test" and record["task"] == "world_nli" and record["target_language"] == "lex"
    assert record["git_sha"] is None or len(record["git_sha"]) == 40
    assert record["strategies"] == STRATEGIES.names()
    assert record["chance"] == pytest.approx(1 / 3)
    assert record["base_model"]["built_now"]
    for kind in ("lora", "ia3"):
        rows = record["per_seed"][kind]
        assert set(rows) == {*STRATEGIES.names(), "upper_bound"}
        for values in rows.values():
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
        summary = record["summary"][kind]["rows"]
        assert summary["source_only"]["n"] == 2 and summary["source_only"]["std"] >= 0.0
        assert len(record["training"]) == 2 * 2 * 4  # types × seeds × (task, ref_source, ref_target, upper)
    for name in [*STRATEGIES.names(), "upper_bound"]:
        assert f"| {name} |" in table
    assert (out / "results.md").read_text() == table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # existing results are kept unless --overwrite
    assert main(["demo", "--size", "tiny", "--seeds", "0", "--output", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(OutputExistsError):
        run_demo(DemoConfig(size="tiny", seeds=(0,), output=str(out), progress=False))
    assert json.loads((out / "results.json").read_text()) == record


def test_demo_bad_names_list_what_exists(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", "tiny", "--target", "xx", "--output", str(tmp_path / "o")]) == 2
    assert "unknown target language 'xx'; available: lex, sov, morph" in capsys.readouterr().err
    assert main(["demo", "--size", "tiny", "--task", "nope", "--output", str(tmp_path / "o")]) == 2
    assert "unknown demo task 'nope'; available: world_arith, world_nli, world_qa" in capsys.readouterr().err
    assert main(["demo", "--size", "tiny", "--target", "src", "--output", str(tmp_path / "o")]) == 2
    assert "src" in capsys.readouterr().err
    assert main(["demo", "--seeds", "0,x", "--output", str(tmp_path / "o")]) == 2
    assert "--seeds must be comma-separated integer(s)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(UnknownNameError, match="available: default, tiny"):
        DemoConfig(size="huge")
    with pytest.raises(UnknownNameError, match="available: lora, ia3"):
        DemoConfig(adapters=("lora", "prefix"))
