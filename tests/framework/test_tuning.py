"""Optuna tuning: the search space comes from the strategy, studies resume from storage, test split refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.registry import ADAPTERS
from adamergex.tuning import evaluation_objective, tune
from tests._adapters import make_state, random_lora

optuna.logging.set_verbosity(optuna.logging.WARNING)
BEST_T = 0.3


@pytest.fixture
def lora_trio() -> dict[str, Any]:
    return {
        "task": make_state("lora", seed=1, rank=4),
        "ref_source": make_state("lora", seed=2, rank=4),
        "ref_target": make_state("lora", seed=3, rank=4),
    }


def distance_objective(trio: dict[str, Any]) -> Any:
    """Minus the distance of the merged ΔW to the merge at t = BEST_T (maximised at t = BEST_T)."""
    lora = ADAPTERS.get("lora")
    target = {m: lora.delta(trio["task"], m) + BEST_T * (lora.delta(trio["ref_target"], m) - lora.delta(trio["ref_source"], m))
              for m in trio["task"].modules}
    calls = []

    def objective(merged: Any, trial: optuna.Trial) -> float:
        calls.append(trial.number)
        return -sum(float(torch.linalg.matrix_norm(lora.delta(merged, m) - target[m])) for m in target)

    objective.calls = calls  # type: ignore[attr-defined]
    return objective


def test_tuning_finds_the_best_scale_from_the_declared_search_space(lora_trio: dict[str, Any]) -> None:
    result = tune("adamergex", lora_trio, distance_objective(lora_trio), n_trials=30, seed=0)
    assert result.adapter_type == "lora" and result.study_name == "adamergex-lora"
    assert set(result.best_params) == {"t"}
    assert abs(result.best_params["t"] - BEST_T) < 0.1
    assert result.n_trials == 30


def test_reruns_resume_from_sqlite_storage(lora_trio: dict[str, Any], tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = distance_objective(lora_trio)
    tune("adamergex", lora_trio, first, n_trials=4, storage=storage)
    assert len(first.calls) == 4
    again = distance_objective(lora_trio)
    result = tune("adamergex", lora_trio, again, n_trials=6, storage=storage)
    assert len(again.calls) == 2 and result.n_trials == 6
    study = optuna.load_study(study_name="adamergex-lora", storage=storage)
    assert study.trials[0].params == {"t": 1.0}  # the paper's default is evaluated first, once


def test_a_study_of_other_adapters_is_refused(lora_trio: dict[str, Any], tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tune("adamergex", lora_trio, distance_objective(lora_trio), n_trials=1, storage=storage)
    other = {**lora_trio, "ref_target": make_state("lora", seed=8, rank=4)}
    with pytest.raises(ConfigError, match="created with other settings: inputs="):
        tune("adamergex", other, distance_objective(other), n_trials=2, storage=storage)


def test_strategy_without_parameters_and_bad_budget_are_refused(lora_trio: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="strategy 'source_only' has no tunable parameters"):
        tune("source_only", {"task": lora_trio["task"]}, distance_objective(lora_trio))
    with pytest.raises(ConfigError, match="n_trials must be at least 1, got 0"):
        tune("adamergex", lora_trio, distance_objective(lora_trio), n_trials=0)


def test_tuning_on_the_test_split_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="tuning on split 'test' is refused"):
        evaluation_objective(None, None, "xnli", "fr", split="test")
    evaluation_objective(None, None, "xnli", "fr", split="test", allow_test=True)


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("ADAMERGEX_TEST_POSTGRES_URL"), reason="ADAMERGEX_TEST_POSTGRES_URL not set")
def test_two_concurrent_workers_share_one_postgres_study(lora_trio: dict[str, Any]) -> None:
    import threading

    url = os.environ["ADAMERGEX_TEST_POSTGRES_URL"]
    name = f"adamergex-lora-{os.getpid()}"
    optuna.create_study(study_name=name, storage=url, direction="maximize")  # created once, joined by both
    objectives = [distance_objective(lora_trio), distance_objective(lora_trio)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            tune("adamergex", lora_trio, objectives[i], n_trials=8, storage=url, study_name=name, seed=i)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        study = optuna.load_study(study_name=name, storage=url)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        # The budget is shared and claimed under the study's lock: together they stop at exactly 8.
        assert len(complete) == 8
        assert all(objectives[i].calls for i in range(2))
    finally:
        optuna.delete_study(study_name=name, storage=url)


def test_evaluation_objective_tunes_a_real_merge_end_to_end(tmp_path: Path) -> None:
    """Merge → attach → harness score on local XNLI-schema data, per trial, with the split recorded."""

    from adamergex.tiny import tiny_llama, train_tokenizer

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "xnli"
    texts = [line for p in fixtures.glob("*.jsonl") for line in p.read_text(encoding="utf-8").splitlines()]
    tok = train_tokenizer(texts + ["True Neither False Question: Answer:"], vocab_size=300)

    def adapter(seed: int) -> Any:
        return random_lora(tiny_llama(len(tok), name_or_path="tiny-xnli"), seed)

    trio = {"task": adapter(1), "ref_source": adapter(2), "ref_target": adapter(3)}
    model = tiny_llama(len(tok), name_or_path="tiny-xnli")
    objective = evaluation_objective(model, tok, "xnli", ["zh"], data_files={"zh": {"validation": str(fixtures / "zh_validation.jsonl")}})
    result = tune("adamergex", trio, objective, n_trials=2, record={"split": "validation"})
    assert 0.0 <= result.best_value <= 1.0 and result.n_trials == 2
    assert result.record["split"] == "validation"
    assert not hasattr(model, "peft_config")  # the harness detached the adapter after each trial


_OPEN = """
import sys, time
from adamergex._studies import open_storage
while time.time() < float(sys.argv[2]):
    pass
open_storage(sys.argv[1])
"""


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("ADAMERGEX_TEST_POSTGRES_URL"), reason="ADAMERGEX_TEST_POSTGRES_URL not set")
def test_two_workers_opening_a_fresh_database_at_once_both_succeed() -> None:
    # Optuna's first open creates the tables; unserialised, one of two simultaneous workers failed with
    # "duplicate key value violates unique constraint pg_type_typname_nsp_index" (reproduced 4 times in 4).
    import subprocess
    import sys
    import time
    import uuid

    import sqlalchemy

    base = os.environ["ADAMERGEX_TEST_POSTGRES_URL"]
    schema = f"fresh_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        start = str(time.time() + 3)
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN, url, start], stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e[-500:] for e in errors]
    finally:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
