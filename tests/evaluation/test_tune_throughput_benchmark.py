"""The tuning-throughput benchmark runs on a tiny world model and finds both routes' scores identical."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_on_a_tiny_world_model_and_prints_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("tune_throughput", ROOT / "benchmarks/tune_throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.main(["--size", "tiny", "--pretrain-steps", "3", "--cache-dir", str(tmp_path), "--trials", "2",
                          "--limit", "6", "--rank", "2"])
    assert summary["scores_identical"] and summary["trials"] == 2
    assert summary["ratio"] > 0 and 0 <= summary["tuner_overhead"] <= 1
    out = capsys.readouterr().out
    assert "ratio tuner / naive trials per minute:" in out and "tuner overhead outside forward passes:" in out
