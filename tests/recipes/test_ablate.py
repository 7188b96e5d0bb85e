"""``adamergex ablate`` on the tiny synthetic world: end to end, cache reuse, SIGKILL resume, workers, report."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from adamergex.cli import main
from adamergex.errors import ConfigError, OutputExistsError, UnknownNameError
from adamergex.recipes.ablate import (AdapterCache, apply_overrides, cells, parse_config, read_rows, run_local,
                                      write_report)
from adamergex.recipes.ablate._report import paired, summarise

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "benchmarks" / "ablations" / "world.yaml"
TINY = [
    "model.world=tiny", "targets=[lex]", "seeds=[0]",
    "task.options={difficulty: simple, train_size: 96, validation_size: 30, test_size: 30}",
    "reference.options={train_size: 40, validation_size: 10, test_size: 10, chunk_length: 64}",
    "adapters=[{type: lora, options: {r: 4, target_modules: [q_proj, v_proj]}, task: {max_steps: 12, lr: 3.0e-3, "
    "batch_size: 8}, reference: {max_steps: 6, lr: 3.0e-3, batch_size: 4, on_stall: warn}}]",
    "strategies=[{name: adamergex, params: [{t: 0.5}, {t: 1.0}]}]",
    "evaluation.batch_size=32",
]
MORE = TINY[:-2] + ["strategies=[{name: adamergex, params: [{t: 0.5}, {t: 1.0}]}, task_arithmetic, "
                    "{name: adamergex, tune: {n_trials: 2}}]", "evaluation.batch_size=32"]


def _raw(overrides: list[str]) -> dict[str, Any]:
    return apply_overrides(yaml.safe_load(WORLD.read_text()), overrides)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny grid run (2 seeds, LoRA, src → lex) into a fresh cache; shared by the tests below."""
    root = tmp_path_factory.mktemp("ablate")
    env = {"ADAMERGEX_CACHE": str(root / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        raw = _raw(TINY)
        cache = AdapterCache(root / "cache" / "adapters")
        summary = run_local(parse_config(raw), raw, root / "run", cache, progress=False)
        yield {"root": root, "cache": cache, "summary": summary, "raw": raw}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def world_env(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(world["root"] / "cache"))
    return world


def _values(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {cid: (r["status"], r["value"], r["items"], r["params"], r["adapters"]) for cid, r in rows.items()}


def test_world_grid_runs_end_to_end_and_a_second_run_with_one_more_strategy_trains_nothing(
        world_env: dict[str, Any], tmp_path: Path) -> None:
    run = world_env["root"] / "run"
    rows = read_rows(run)
    expected = [c.id for c in cells(parse_config(world_env["raw"]))]
    assert list(rows) == expected and len(expected) == 4  # source_only, t=0.5, t=1, upper_bound
    assert all(r["status"] == "ok" and 0.0 <= r["value"] <= 1.0 and len(r["items"]) == 30 for r in rows.values())
    assert len(world_env["summary"]["trained"]) == 4 == len(world_env["cache"].entries())  # task, 2 refs, upper
    assert math.fsum(rows["lora/seed0/lex/source_only"]["items"]) / 30 == pytest.approx(
        rows["lora/seed0/lex/source_only"]["value"])

    # the same run again: every cell is finished, nothing runs
    raw = world_env["raw"]
    again = run_local(parse_config(raw), raw, run, world_env["cache"], progress=False)
    assert again["ran"] == 0 and again["trained"] == []
    # one more strategy (and a tuned cell) in another run directory: every adapter comes from the cache
    more = _raw(MORE)
    before = {e["key"] for e in world_env["cache"].entries()}
    summary = run_local(parse_config(more), more, tmp_path / "more", world_env["cache"], progress=False)
    assert summary["trained"] == [] and {e["key"] for e in world_env["cache"].entries()} == before
    new_rows = read_rows(tmp_path / "more")
    assert new_rows["lora/seed0/lex/adamergex[t=0.5]"]["value"] == rows["lora/seed0/lex/adamergex[t=0.5]"]["value"]
    tuned = new_rows["lora/seed0/lex/adamergex[tune]"]
    assert tuned["tune"]["split"] == "validation" and len(tuned["tune"]["trials"]) == 2
    assert tuned["params"] == tuned["tune"]["best_params"] and tuned["split"] == "test"
    # a run directory refuses another config
    with pytest.raises(OutputExistsError, match="another config"):
        run_local(parse_config(more), more, run, world_env["cache"], progress=False)


def test_dry_run_lists_cells_and_cached_adapters(world_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ablate", str(WORLD), "--dry-run", "--cache", str(world_env["cache"].root)]
    for s in MORE:
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cells: 6 (0 finished)" in out and "adapters: 4 needed, 4 cached, 0 to train" in out
    assert "todo  lora/seed0/lex/task_arithmetic" in out and "work: 0 training steps" in out


def test_sigkill_midway_then_rerun_ends_with_the_rows_of_an_uninterrupted_run(
        world_env: dict[str, Any], tmp_path: Path) -> None:
    full = read_rows(_uninterrupted(world_env, tmp_path))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", "import sys; from adamergex.cli import main; sys.exit(main())", "ablate", str(WORLD),
           "--output", str(out), "--cache", str(world_env["cache"].root), "--no-progress"]
    for s in MORE:
        cmd += ["--set", s]
    env = {**os.environ, "ADAMERGEX_CACHE": str(world_env["root"] / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(read_rows(out)) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_rows(out)
    assert 3 <= len(partial) < len(full), "the run must be killed midway"
    assert main(cmd[3:]) == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert len(lines) == len({r["cell"] for r in lines}) == len(full)  # no duplicate, no half row
    assert _values(read_rows(out)) == _values(full)


def _uninterrupted(world: dict[str, Any], tmp_path: Path) -> Path:
    raw = _raw(MORE)
    run_local(parse_config(raw), raw, tmp_path / "full", world["cache"], progress=False)
    return tmp_path / "full"


@pytest.mark.slow  # two fresh worker processes: ~30-60 s on 2 shared cores
def test_two_local_workers_share_an_sqlite_study_and_do_each_cell_once(
        world_env: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "workers"
    args = ["ablate", str(WORLD), "--output", str(out), "--cache", str(world_env["cache"].root), "--workers", "2"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    _check_once(out, world_env["root"] / "run")


def _check_once(out: Path, reference_run: Path) -> None:
    import optuna

    rows = read_rows(out)
    assert _values(rows) == _values(read_rows(reference_run))
    meta = json.loads((out / "run.json").read_text())
    url = f"sqlite:///{(out / 'cells.db').resolve()}"
    study = optuna.load_study(study_name=f"ablate-{meta['config_hash']}", storage=url)
    complete = [t.params["cell"] for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert sorted(complete) == sorted(rows)  # every cell once


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("ADAMERGEX_TEST_POSTGRES_URL"), reason="ADAMERGEX_TEST_POSTGRES_URL not set")
def test_two_workers_on_postgres_finish_the_grid_with_each_cell_done_once(
        world_env: dict[str, Any], tmp_path: Path) -> None:
    import optuna

    url = os.environ["ADAMERGEX_TEST_POSTGRES_URL"]
    overrides = [*TINY, f"name=pg-{time.time_ns()}"]  # a fresh study per test run: the config hash names it
    procs = []
    for i in range(2):
        cmd = [sys.executable, "-c", "import sys; from adamergex.cli import main; sys.exit(main())", "ablate",
               str(WORLD), "--output", str(tmp_path / f"w{i}"), "--cache", str(world_env["cache"].root),
               "--storage", url, "--no-progress"]
        for s in overrides:
            cmd += ["--set", s]
        procs.append(subprocess.Popen(cmd, env={**os.environ, "ADAMERGEX_CACHE": str(world_env["root"] / "cache")}))
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    reference = _values(read_rows(world_env["root"] / "run"))
    ran: list[str] = []
    for i in range(2):
        rows = read_rows(tmp_path / f"w{i}")
        assert _values(rows) == reference  # every machine's run directory ends with the whole grid
    meta = json.loads((tmp_path / "w0" / "run.json").read_text())
    study = optuna.load_study(study_name=f"ablate-{meta['config_hash']}", storage=url)
    complete = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    ran = [t.params["cell"] for t in complete]
    assert sorted(ran) == sorted(reference)


# -- the report ---------------------------------------------------------------------------------------------------
def test_report_numbers_are_recomputed_from_the_raw_rows(world_env: dict[str, Any], tmp_path: Path) -> None:
    run = world_env["root"] / "run"
    tables = write_report(run, output=tmp_path / "report")
    rows = [r for r in read_rows(run).values()]
    for label in ("source_only", "adamergex[t=0.5]", "upper_bound"):
        values = [r["value"] for r in rows if r["label"] == label]
        s = tables["summary"][(label, "lora", "lex")]
        assert s["mean"] == pytest.approx(sum(values) / len(values)) and s["std"] == 0.0 and s["n"] == 1
        assert tables["summary"][(label, "lora", "average")]["mean"] == pytest.approx(s["mean"])
    # paired difference: mean over seeds and items of the item differences
    diffs = [a - b for seed in (0,) for a, b in zip(
        read_rows(run)[f"lora/seed{seed}/lex/adamergex[t=1.0]"]["items"],
        read_rows(run)[f"lora/seed{seed}/lex/source_only"]["items"])]
    p = next(x for x in tables["paired"] if x["strategy"] == "adamergex[t=1.0]" and x["target"] == "lex")
    assert p["diff"] == pytest.approx(sum(diffs) / len(diffs)) and p["low"] <= p["diff"] <= p["high"]
    assert p["items"] == 30 and p["seeds"] == 1
    same = next(x for x in tables["paired"] if x["strategy"] == "source_only" and x["target"] == "pooled")
    assert same["diff"] == 0.0 and same["low"] <= 0.0 <= same["high"]
    md = (tmp_path / "report" / "report.md").read_text()
    meta = json.loads((run / "run.json").read_text())
    assert meta["config_hash"] in md and "split test" in md and "torch" in md
    for name in ("scores.csv", "scores.tex", "paired.csv", "paired.tex"):
        assert meta["config_hash"] in (tmp_path / "report" / name).read_text().splitlines()[0]
    for name in ("strategies.png", "t_curve.png", "gap_closed.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_difference_on_synthetic_rows() -> None:
    def row(label: str, seed: int, items: list[float]) -> dict[str, Any]:
        return {"label": label, "adapter_type": "lora", "target": "x", "seed": seed, "value": sum(items) / len(items),
                "items": items, "examples_sha256": "h", "status": "ok"}

    rows = [row("source_only", 0, [0, 0, 1, 1]), row("a", 0, [1, 1, 1, 1]), row("source_only", 1, [0, 1, 0, 1]),
            row("a", 1, [1, 1, 0, 1]), row("upper_bound", 0, [1, 1, 1, 1]), row("upper_bound", 1, [1, 1, 1, 1])]
    p = paired(rows, "a", "lora", ["x"])
    assert p is not None and p["diff"] == pytest.approx(3 / 8) and p["low"] <= 3 / 8 <= p["high"] and p["high"] <= 1
    assert paired(rows, "a", "lora", ["x"]) == p  # seeded
    s = summarise(rows)
    assert s[("a", "lora", "x")]["mean"] == pytest.approx((1 + 0.75) / 2)
    assert s[("a", "lora", "x")]["std"] == pytest.approx(math.sqrt(2 * 0.125 ** 2))  # sample std, n - 1
    assert paired(rows, "source_only", "lora", ["x"]) == {"diff": 0.0, "low": 0.0, "high": 0.0, "seeds": 2, "items": 8}


# -- the config ----------------------------------------------------------------------------------------------------
def _base() -> dict[str, Any]:
    return _raw(TINY)


@pytest.mark.parametrize("override, key, error", [
    ("strategies=[{name: tie}]", "strategies[0].name: unknown strategy 'tie'; available:", UnknownNameError),
    ("task.name=xnlii", "task.name: unknown task 'xnlii'", UnknownNameError),
    ("adapters[0].type=lorra", "adapters[0].type: unknown adapter type 'lorra'", UnknownNameError),
    ("strategies=[{name: adamergex, params: [{t: 1.0}, {t: -1.0}]}]", "strategies[0].params[1].t: ", ConfigError),
    ("strategies=[{name: ties, params: [{density: 1.5}]}]", "strategies[0].params[0].density: ", ConfigError),
    ("strategies=[{name: adamergex, params: [{tt: 1}]}]", "strategies[0].params[0].tt: ", ConfigError),
    ("evaluation.tune_split=test", "evaluation.tune_split: tuning on split 'test' is refused", ConfigError),
    ("adapters[0].task.lr=-1", "adapters[0].task.lr: must be a positive number", ConfigError),
    ("adapters[0].task.max_stepz=3", "adapters[0].task.max_stepz: unknown key", ConfigError),
    ("targets=[xx]", "targets: task 'world_nli' has no language 'xx'", UnknownNameError),
    ("task.data_files={lex: {test: /nonexistent/lex.jsonl}}", "task.data_files.lex.test: data file", ConfigError),
    ("seeds=[0, 0]", "seeds: must be one or more distinct integers", ConfigError),
    ("strategies=[{name: source_only, tune: {n_trials: 3}}]", "strategies[0].tune: strategy 'source_only' has no "
     "tunable parameters", ConfigError),
])
def test_bad_input_names_the_config_key(override: str, key: str, error: type) -> None:
    with pytest.raises(error) as exc:
        parse_config(apply_overrides(_base(), [override]))
    assert str(exc.value).startswith(key), str(exc.value)


def test_bad_input_fails_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ablate", str(WORLD), "--output", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]
    for s in TINY:
        args += ["--set", s]
    assert main([*args, "--set", "strategies=[{name: adamergex, params: [{t: -2.0}]}]"]) == 2
    assert "strategies[0].params[0].t" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_environment_variables_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _base()
    raw["name"] = "${ABLATE_NAME}"
    with pytest.raises(ConfigError, match=r"^name: environment variable ABLATE_NAME is not set"):
        parse_config(raw)
    monkeypatch.setenv("ABLATE_NAME", "mine")
    assert parse_config(raw).name == "mine"
    with pytest.raises(ConfigError, match="--set must be KEY=VALUE"):
        apply_overrides(raw, ["seeds"])
    with pytest.raises(ConfigError, match="has no item 5"):
        apply_overrides(raw, ["adapters[5].type=lora"])


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "ablations").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses_and_names_only_registered_names(
        path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adamergex.registry import ADAPTERS, STRATEGIES, TASKS

    text = path.read_text()
    assert text.startswith("#") and "adamergex ablate" in text.split("\n\n")[0] and "Hardware" in text.split("\n\n")[0]
    raw = yaml.safe_load(text)
    if "${DATA}" in text:  # the template reads the user's files: give it empty ones
        for name in ("en_train.jsonl", "en_validation.jsonl", "en_test.jsonl", "fr_train.jsonl",
                     "fr_validation.jsonl", "fr_test.jsonl", "en_wiki.txt", "fr_wiki.txt"):
            (tmp_path / name).write_text("")
        monkeypatch.setenv("DATA", str(tmp_path))
        monkeypatch.setenv("ENCODER", str(tmp_path))
    cfg = parse_config(raw)
    assert all(a.type in ADAPTERS for a in cfg.adapters)
    assert all(s.name in STRATEGIES for s in cfg.strategies)
    assert cfg.task.name in TASKS and cfg.reference.name in TASKS
    assert cells(cfg)


def test_diagnose_reads_a_runs_adapters_from_the_cache(world_env: dict[str, Any], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from adamergex.recipes.ablate import run_adapters

    entries = run_adapters(world_env["root"] / "run", world_env["cache"], "lora")
    assert sorted((e["role"], e["task"], e["language"]) for e in entries) == [
        ("reference", "world_reference", "lex"), ("reference", "world_reference", "src"),
        ("task", "world_nli", "lex"), ("task", "world_nli", "src")]
    assert all(Path(e["path"], "adapter_config.json").is_file() for e in entries)
    out = tmp_path / "diag"
    assert main(["diagnose", "--run", str(world_env["root"] / "run"), "--adapter-type", "lora", "--cache",
                 str(world_env["cache"].root), "--source-language", "src", "--output", str(out)]) == 0
    record = json.loads((out / "diagnose.json").read_text())
    assert record["components"]  # the signal (task vs reference) of lex was computed from those four adapters
    assert "signal" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="has no finished row of adapter type 'ia3'"):
        run_adapters(world_env["root"] / "run", world_env["cache"], "ia3")
    with pytest.raises(ConfigError, match="which the cache .* does not hold"):
        run_adapters(world_env["root"] / "run", AdapterCache(tmp_path / "empty"), "lora")
    assert main(["diagnose", "--run", str(world_env["root"] / "run"), "--source-language", "src",
                 "--output", str(out)]) == 2
    assert "--run needs --adapter-type" in capsys.readouterr().err


def test_the_cache_key_holds_the_adamergex_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import adamergex
    from adamergex.recipes.ablate import adapter_jobs, key_of
    from adamergex.recipes.ablate import _grid
    from adamergex.versions import package_versions

    cfg = parse_config(_raw(TINY))
    job = adapter_jobs(cfg, cells(cfg))[0]
    inputs = _grid.job_inputs(cfg, job, {"files": {}}, None)
    assert inputs["versions"]["adamergex"] == adamergex.__version__
    real = package_versions
    monkeypatch.setattr("adamergex.versions.package_versions",
                        lambda *names: {**real(*names), "adamergex": "999.0"})
    assert key_of(_grid.job_inputs(cfg, job, {"files": {}}, None)) != key_of(inputs)
