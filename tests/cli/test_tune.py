"""``adamergex tune`` as users run it: shared studies (real worker processes on PostgreSQL), resumes after a
SIGKILL, settings pinned per study, redacted credentials, and every option checked before the first trial."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from adamergex.cli import main
from tests._adapters import random_lora

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "xnli"
PG_URL = os.environ.get("ADAMERGEX_TEST_POSTGRES_URL")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny Llama with its tokenizer in ``model/`` and three LoRA adapters for it, XNLI-schema local data."""
    from adamergex.io import save_adapter
    from adamergex.tiny import tiny_llama, train_tokenizer

    root = tmp_path_factory.mktemp("tune")
    texts = [line for p in FIXTURES.glob("*.jsonl") for line in p.read_text(encoding="utf-8").splitlines()]
    tok = train_tokenizer(texts + ["True Neither False Question: Answer:"], vocab_size=300)
    model_dir = root / "model"
    tiny_llama(len(tok), name_or_path=str(model_dir)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    for role, seed in (("task", 1), ("ref_source", 2), ("ref_target", 3)):
        save_adapter(random_lora(tiny_llama(len(tok), name_or_path=str(model_dir)), seed), root / role)
    return {"root": root, "model": str(model_dir)}


def args(setup: dict[str, Any], output: Path, *extra: str, languages: str = "zh",
         data: tuple[str, ...] = (f"zh:validation={FIXTURES / 'zh_validation.jsonl'}",)) -> list[str]:
    root = setup["root"]
    return ["tune", "--model", setup["model"], "--task", "xnli", "--languages", languages,
            "--task-adapter", str(root / "task"), "--ref-source", str(root / "ref_source"),
            "--ref-target", str(root / "ref_target"), "--data-files", *data, "--output", str(output), *extra]


def worker(cmd: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    script = "import sys; from adamergex.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", script, *cmd], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def trials(name: str, url: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read through one storage per URL (``load_study(storage=url)`` opens a new connection
    pool each time, and polling would exhaust the server's connection slots)."""
    storage = _STORAGES.setdefault(url, optuna.storages.RDBStorage(url))
    return optuna.load_study(study_name=name, storage=storage).trials


# -- 1. concurrent workers: the exact budget, different draws --------------------------------------------------
@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="ADAMERGEX_TEST_POSTGRES_URL not set")
def test_two_worker_processes_run_exactly_the_budget_with_different_draws(setup: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    assert PG_URL is not None
    name = f"cli-concurrent-{os.getpid()}-{time.time_ns()}"
    procs = [worker(args(setup, tmp_path / f"w{i}", "--storage", PG_URL, "--study-name", name, "--n-trials", "12"))
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
        done = [t for t in trials(name, PG_URL) if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == 12  # exactly the budget, not 13
        values = [t.params["t"] for t in done]
        assert len(set(values)) == 12, sorted(values)  # same --seed, yet no two trials drew the same t
        for i, (stdout, stderr) in enumerate(outs):
            best = json.loads((tmp_path / f"w{i}" / "best.json").read_text())
            assert best["n_trials"] == 12
            assert ":***@" in best["storage"] and "adamergex:adamergex@" not in stdout + stderr + json.dumps(best)
    finally:
        for p in procs:
            p.kill()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=PG_URL)


# -- 2. a worker killed with SIGKILL: its trial is failed, the rerun continues the sequence ---------------------
@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="ADAMERGEX_TEST_POSTGRES_URL not set")
def test_a_killed_worker_is_failed_by_heartbeat_and_the_rerun_continues(setup: dict[str, Any], tmp_path: Path) -> None:
    assert PG_URL is not None
    name = f"cli-killed-{os.getpid()}-{time.time_ns()}"
    cmd = args(setup, tmp_path / "out", "--storage", PG_URL, "--study-name", name, "--heartbeat-interval", "1")
    proc = worker([*cmd, "--n-trials", "40"])
    try:
        deadline = time.time() + 180
        while True:  # freeze the worker, and kill it only while one of its trials is RUNNING
            assert time.time() < deadline and proc.poll() is None, "the worker ended before it could be killed"
            time.sleep(0.2)
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                seen = trials(name, PG_URL)
            except KeyError:  # the study is not created yet
                seen = []
            states = [t.state for t in seen]
            # Kill inside a trial that has started its work (it has drawn its t): its first heartbeat is then
            # recorded. A kill in the milliseconds between creating a trial and that first beat leaves a RUNNING
            # trial without heartbeat, which later workers wait on (documented in adamergex.tuning).
            if states.count(optuna.trial.TrialState.COMPLETE) >= 3 and states[-1] == optuna.trial.TrialState.RUNNING \
                    and "t" in seen[-1].params:
                os.kill(proc.pid, signal.SIGKILL)
                break
            os.kill(proc.pid, signal.SIGCONT)
        proc.wait(timeout=30)
        before = trials(name, PG_URL)
        killed = before[-1].number
        assert before[-1].state == optuna.trial.TrialState.RUNNING
        first_ts = [t.params["t"] for t in before if "t" in t.params]
        rerun = worker([*cmd, "--n-trials", str(len(before) + 3)])
        _, err = rerun.communicate(timeout=240)
        assert rerun.returncode == 0, err[-2000:]
        after = trials(name, PG_URL)
        assert after[killed].state == optuna.trial.TrialState.FAIL  # the dead worker's trial, failed by heartbeat
        assert not [t for t in after if t.state == optuna.trial.TrialState.RUNNING]
        assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in after) == len(before) + 3
        new_ts = [t.params["t"] for t in after[len(before):] if "t" in t.params]
        assert new_ts and not set(new_ts) & set(first_ts)  # the sampler continued instead of starting over
    finally:
        proc.kill()
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=PG_URL)


# -- 3. a study keeps its settings --------------------------------------------------------------------------------
def test_continuing_a_study_with_other_split_languages_or_data_is_refused(
        setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    test_data = (f"fr:test={FIXTURES / 'fr_test.jsonl'}", f"fr:validation={FIXTURES / 'fr_test.jsonl'}")
    base = ["--storage", storage, "--study-name", "S", "--n-trials", "2"]
    assert main(args(setup, tmp_path / "a", *base, "--split", "test", "--allow-test", languages="fr",
                     data=test_data)) == 0
    capsys.readouterr()
    assert main(args(setup, tmp_path / "b", *base, languages="fr", data=test_data)) == 2
    err = capsys.readouterr().err
    assert "created with other settings: split='test' in the study, 'validation' in this run" in err
    assert not (tmp_path / "b" / "best.json").exists()
    assert main(args(setup, tmp_path / "c", *base, "--split", "test", "--allow-test")) == 2
    err = capsys.readouterr().err
    assert "languages=['fr'] in the study, ['zh'] in this run" in err
    other = tmp_path / "other.jsonl"
    other.write_text((FIXTURES / "fr_test.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n")
    assert main(args(setup, tmp_path / "d", *base, "--split", "test", "--allow-test", languages="fr",
                     data=(f"fr:test={other}",))) == 2
    assert "data=" in capsys.readouterr().err
    study = optuna.load_study(study_name="S", storage=storage)
    assert len(study.trials) == 2 and study.user_attrs["split"] == "test"


# -- 4 and 5: credentials and up-front checks ---------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--metric", "acc"], "--metric must be one that task 'xnli' reports (accuracy, gold_logprob), got 'acc'"),
    (["--limit", "0"], "limit must be a positive number of examples, got 0"),
    (["--n-trials", "0"], "--n-trials must be at least 1, got 0"),
    (["--storage", "not a url"], "--storage must be an SQLAlchemy URL"),
    (["--storage", "nosuchdb://u:hunter2@h/db"], "no database driver"),
    (["--storage", "postgresql+psycopg2://u:hunter2@127.0.0.1:1/db"], "cannot open --storage"),
])
def test_bad_options_are_refused_before_anything_is_written(setup: dict[str, Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str], extra: list[str],
                                                            message: str) -> None:
    out = tmp_path / "out"
    assert main(args(setup, out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert "hunter2" not in err
    assert not out.exists()


def test_redact_url_hides_passwords_only() -> None:
    from adamergex._studies import redact_url

    assert redact_url("postgresql+psycopg2://me:s3:cr@t@db.example:5432/x") == "postgresql+psycopg2://me:***@db.example:5432/x"
    assert redact_url("postgresql://db/x?user=me&password=pw") == "postgresql://db/x?user=me&password=***"
    assert redact_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


@pytest.mark.parametrize("where", ["the task adapter", "a parent of it"])
def test_output_onto_an_input_is_refused(setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         where: str) -> None:
    target = setup["root"] / "task" if where == "the task adapter" else setup["root"]
    assert main(args(setup, target)) == 2
    err = capsys.readouterr().err
    assert ("is the --task-adapter input" in err) if where == "the task adapter" else ("contains the" in err)
    assert (setup["root"] / "task" / "adapter_model.safetensors").exists()
