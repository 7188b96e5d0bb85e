"""The whole demo on the tiny preset, end to end (base model built into a temporary cache), and the ablation
config it runs."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

import yaml

from adamergex.cli import main
from adamergex.errors import OutputExistsError, UnknownNameError
from adamergex.registry import STRATEGIES
from adamergex.recipes.ablate import AdapterCache, apply_overrides, cells, parse_config, read_rows
from adamergex.recipes.demo import DemoConfig, ablation_config, run_demo

WORLD = Path(__file__).resolve().parents[2] / "benchmarks" / "ablations" / "world.yaml"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ADAMERGEX_ADAPTER_CACHE", raising=False)
    return tmp_path / "cache"


def _trained(record: dict[str, Any]) -> dict[str, Any]:
    """Each adapter's training outcome (learning rate, steps, losses, cache key), without its wall time and
    without whether it came from the cache."""
    return {name: {k: v for k, v in run.items() if k not in ("seconds", "cached")}
            for name, run in record["training"].items()}


def _all_trained(record: dict[str, Any]) -> bool:
    """Whether this run trained every adapter itself (none came from the adapter cache)."""
    return record["adapter_cache"]["from_cache"] == 0 and not any(t["cached"] for t in record["training"].values())


def test_tiny_demo_runs_end_to_end_and_refuses_to_overwrite(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    started = time.perf_counter()
    assert main(["demo", "--size", "tiny", "--seeds", "0,1", "--output", str(out), "--no-progress",
                 "--workers", "2"]) == 0
    elapsed = time.perf_counter() - started
    assert elapsed < 60, f"the tiny demo took {elapsed:.0f} s"
    table = capsys.readouterr().out
    record = json.loads((out / "results.json").read_text())
    assert record["split"] == "test" and record["task"] == "world_nli" and record["target_language"] == "lex"
    assert record["git_sha"] is None or len(record["git_sha"]) == 40
    assert record["strategies"] == STRATEGIES.names()
    assert record["chance"] == pytest.approx(1 / 3)
    assert record["base_model"]["built_now"]
    assert record["workers"] == {"processes": 2, "threads_each": 1}
    for kind in ("lora", "ia3"):
        rows = record["per_seed"][kind]
        refused = {row for key, per_row in record["not_applicable"].items() if key.startswith(f"{kind}/")
                   for row in per_row}
        # every strategy is either scored on every seed or reported as not applicable, with its reason
        assert set(rows) | refused == {*STRATEGIES.names(), "upper_bound"} and not set(rows) & refused
        assert {"source_only", "adamergex", "upper_bound"} <= set(rows)
        for values in rows.values():
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
        summary = record["summary"][kind]["rows"]
        assert summary["source_only"]["n"] == 2 and summary["source_only"]["std"] >= 0.0
        assert len(record["training"]) == 2 * 2 * 4  # types × seeds × (task, ref_source, ref_target, upper)
    for name in [*STRATEGIES.names(), "upper_bound"]:
        assert f"| {name} |" in table
    assert (out / "results.md").read_text() == table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the runner's rows are the record's source: one ok or refused row per cell, in OUTPUT/run
    grid = cells(ablation_config(DemoConfig(size="tiny", seeds=(0, 1)))[0])
    rows = read_rows(out / "run")
    assert record["run_dir"] == str(out / "run") and set(rows) == {c.id for c in grid}
    assert {r["value"] for r in rows.values() if r["label"] == "source_only" and r["adapter_type"] == "lora"} \
        == set(record["per_seed"]["lora"]["source_only"])
    # every adapter went into the adapter cache under the demo's cache root
    assert record["adapter_cache"] == {"dir": str(cache / "adapters"), "trained": 16, "from_cache": 0}
    assert _all_trained(record)
    assert all(AdapterCache(cache / "adapters").has(t["key"]) for t in record["training"].values())

    # existing results are kept unless --overwrite
    assert main(["demo", "--size", "tiny", "--seeds", "0", "--output", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(OutputExistsError):
        run_demo(DemoConfig(size="tiny", seeds=(0,), output=str(out), progress=False))
    assert json.loads((out / "results.json").read_text()) == record

    # --overwrite scores again and trains nothing: every adapter comes from the cache
    again = run_demo(DemoConfig(size="tiny", seeds=(0, 1), output=str(out), overwrite=True, progress=False))
    assert again["adapter_cache"]["trained"] == 0 and all(t["cached"] for t in again["training"].values())
    assert again["per_seed"] == record["per_seed"] and _trained(again) == _trained(record)
    assert len(read_rows(out / "run")) == len(grid)

    # a run whose results were never written (killed) resumes: its finished cells are not scored again (only
    # the cells a strategy refused are tried again, as `adamergex ablate` does)
    for name in ("results.json", "results.md", "results.png"):
        (out / name).unlink()
    before = (out / "run" / "results.jsonl").read_bytes()
    resumed = run_demo(DemoConfig(size="tiny", seeds=(0, 1), output=str(out), progress=False))
    after = (out / "run" / "results.jsonl").read_bytes()
    appended = [json.loads(line) for line in after[len(before):].splitlines()]
    assert after.startswith(before) and all(r["status"] == "failed" for r in appended)
    assert len(appended) == sum(len(per_row) for per_row in record["not_applicable"].values())
    assert resumed["per_seed"] == record["per_seed"] and resumed["not_applicable"] == record["not_applicable"]

    # the same jobs in this process, one after another, into an empty adapter cache, give the same adapters and
    # scores
    inline = run_demo(DemoConfig(size="tiny", seeds=(0, 1), output=str(tmp_path / "inline"), workers=1, threads=1,
                                 progress=False, adapter_cache=str(tmp_path / "inline-cache")))
    assert inline["workers"] == {"processes": 1, "threads_each": 1} and _all_trained(inline)
    assert inline["per_seed"] == record["per_seed"] and _trained(inline) == _trained(record)


def test_every_strategy_runs_on_dora_loha_and_lokr(cache: Path, tmp_path: Path) -> None:
    """The plug-in adapter types go through the same pipeline: every registered strategy is scored on each, or
    reported as not applicable with the reason (none is expected to refuse these additive types)."""
    cfg = DemoConfig(size="tiny", seeds=(0,), adapters=("dora", "loha", "lokr"), threads=1, progress=False,
                     workers=1, output=str(tmp_path / "plug"))
    record = run_demo(cfg)
    for kind in cfg.adapters:
        assert set(record["per_seed"][kind]) == {*STRATEGIES.names(), "upper_bound"}, record["not_applicable"]
        assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in record["per_seed"][kind].values())
    assert record["not_applicable"] == {}


def test_spawned_workers_read_the_cached_model_and_agree(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where fork is not used (macOS, Windows), each worker loads the base model from the cache itself."""
    from adamergex.recipes import _jobs

    cfg = DemoConfig(size="tiny", seeds=(0,), adapters=("ia3",), threads=1, progress=False)
    forked = run_demo(dataclasses.replace(cfg, output=str(tmp_path / "fork"), workers=2,
                                          adapter_cache=str(tmp_path / "fork-cache")))
    monkeypatch.setattr(_jobs, "_start_method", lambda: "spawn")
    spawned = run_demo(dataclasses.replace(cfg, output=str(tmp_path / "spawn"), workers=2,
                                           adapter_cache=str(tmp_path / "spawn-cache")))
    assert _all_trained(forked) and _all_trained(spawned)
    assert spawned["per_seed"] == forked["per_seed"] and _trained(spawned) == _trained(forked)


def test_the_demo_runs_world_yaml_with_one_target_and_every_strategy_at_its_defaults() -> None:
    """The default demo's grid is benchmarks/ablations/world.yaml's but for the name, the targets, the strategies
    and the reference adapters' warm-up (the demo's 5% of 200 steps, world.yaml's 1 step), so the two share their
    task adapters' cache keys (one adapter cache serves both)."""
    demo, raw = ablation_config(DemoConfig(target="sov"))
    world_raw = yaml.safe_load(WORLD.read_text())
    world = parse_config(apply_overrides(world_raw, [
        "targets=[sov]", f"strategies=[{', '.join(STRATEGIES.names())}]",
        *(f"adapters[{i}].reference.warmup_steps=10" for i in range(len(world_raw["adapters"])))]))
    assert demo == dataclasses.replace(world, name="demo")
    assert parse_config(raw) == demo
    assert [c.label for c in cells(demo) if c.seed == 0 and c.adapter == "lora"] == [*STRATEGIES.names(), "upper_bound"]

    other = ablation_config(DemoConfig(size="tiny", world_seed=3, seeds=(4,), adapters=("loha",), task="world_qa"))[0]
    assert other.model.world == "tiny" and other.model.world_seed == 3 and other.seeds == (4,)
    assert other.task.options["world_seed"] == other.reference.options["world_seed"] == 3  # the model's world
    assert other.task.task().world_seed == 3 and other.evaluation.metric == "exact_match"
    assert [a.type for a in other.adapters] == ["loha"] and other.adapters[0].task.max_steps == 12


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
    with pytest.raises(UnknownNameError, match="available: lora, dora, loha, lokr, ia3"):
        DemoConfig(adapters=("lora", "prefix"))
    assert main(["demo", "--workers", "0", "--output", str(tmp_path / "o")]) == 2
    assert "workers must be a positive integer, got 0" in capsys.readouterr().err
