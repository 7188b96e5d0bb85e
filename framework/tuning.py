"""Tune a strategy's merge parameters with Optuna, per adapter type, on a validation split.

The search space is the strategy's own config (:meth:`StrategyConfig.suggest`), so there is no parameter list
to keep in sync. One study per (strategy, adapter type): LoRA and (IA)³ have different scales (a ``t`` that is
right for ΔW arithmetic is not right for ratios of vectors), so each type gets its own best parameters. Studies
live in Optuna's own storages: an SQLite file by default (``sqlite:///study.db``), or a PostgreSQL URL for many
workers (``postgresql+psycopg2://user:password@host/db``, needs the ``postgres`` extra).

Shared studies (:mod:`adamergex._studies`):

- **Budget.** ``n_trials`` counts COMPLETE trials of the whole study: earlier runs and other workers count. Any
  number of workers on one SQLite file or PostgreSQL database end with **exactly** ``n_trials`` COMPLETE
  trials: a trial is claimed under a lock shared by the workers (PostgreSQL advisory lock, ``flock`` beside
  the SQLite file) only while COMPLETE + RUNNING trials are fewer than ``n_trials``, and a worker that finds the
  budget claimed waits to take over a claim that ends PRUNED or FAIL. Pruned and failed trials are never
  budget. Other RDB servers (MySQL...) get no cross-process lock: there N workers may overshoot by up to N−1.
- **Seeds.** The default sampler is TPE seeded per trial from ``(seed, trial number)``, so concurrent workers
  with one ``--seed`` draw different values, a rerun continues the study's sequence instead of repeating it, and
  the draw of trial *k* is reproducible given the study's history.
- **Dead workers.** Storages run Optuna's heartbeat (``heartbeat_interval``; grace period twice that): a RUNNING
  trial whose worker died is marked FAIL by the next worker's claim, and its budget is run again. A trial records
  its first heartbeat right after it is created, under the claim lock; a worker killed in the milliseconds
  between the two leaves a RUNNING trial without heartbeat, which Optuna never marks stale: later workers wait on
  it (and log its number) until it is failed by hand (``optuna.Study.tell(number, state=FAIL)``).
- **Settings.** A study records at creation the strategy, adapter type, adapters' SHA-256 and the caller's
  ``record`` (the CLI: task, languages, split, metric, limit, subsample seed, data fingerprint); continuing it
  with any of them different is refused, naming each difference (no mixing of splits or languages).
- **Credentials.** Storage URLs are written and printed with the password redacted (``***``).

Tuning reads validation data only: the evaluation objective refuses the test split unless ``allow_test`` is
passed, and the split is recorded in the result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .adapter_state import AdapterState
from .errors import ConfigError
from .merging import as_state, merge
from .registry import STRATEGIES
from .strategy import Composition, Strategy, StrategyConfig

if TYPE_CHECKING:
    import optuna

    from .task import Task

__all__ = ["TrialObjective", "TuneResult", "evaluation_objective", "plot_history", "tune"]

TrialObjective = Callable[["AdapterState | Composition", "optuna.Trial"], float]
"""What a trial maximises: a score of the merge output (the trial receives intermediate values for pruning)."""


@dataclass
class TuneResult:
    """Best parameters of one study, with what produced them.

    ``best_stderr`` and each entry of ``trials`` carry the standard error the objective recorded on its trial
    (the ``stderr`` user attribute: :func:`evaluation_objective` sets it; ``None`` when the objective gave none).
    ``within_one_stderr`` lists the completed trials whose value lies within one standard error of the best
    (``value >= best − SE_best`` when maximising): trials the validation set cannot tell apart from the best, the
    one-standard-error rule of model selection (Hastie, Tibshirani & Friedman, *ESL* §7.10).
    """

    strategy: str
    adapter_type: str
    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    study_name: str
    storage: str | None
    record: dict[str, Any] = field(default_factory=dict)
    best_stderr: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    """Completed trials, best first: ``{"number", "value", "stderr", "params"}``."""
    within_one_stderr: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "strategy": self.strategy, "adapter_type": self.adapter_type, "best_params": self.best_params,
            "best_value": self.best_value, "best_stderr": self.best_stderr, "n_trials": self.n_trials,
            "within_one_stderr": self.within_one_stderr, "study_name": self.study_name, "storage": self.storage,
            "record": self.record, "trials": self.trials,
        }


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _trial_summary(study: optuna.Study, best: optuna.trial.FrozenTrial, direction: str) -> tuple[
        float | None, list[dict[str, Any]], list[int]]:
    """``(best's stderr, completed trials best first, trials within one stderr of the best)``."""
    import optuna

    sign = -1.0 if direction == "maximize" else 1.0
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    done.sort(key=lambda t: (sign * float(t.value or 0.0), t.number))
    trials = [{"number": t.number, "value": t.value, "stderr": _finite(t.user_attrs.get("stderr")),
               "params": dict(t.params)} for t in done]
    best_se = _finite(best.user_attrs.get("stderr"))
    close: list[int] = []
    if best_se is not None and best.value is not None:
        def gap(t: optuna.trial.FrozenTrial) -> float:  # how much worse than the best (>= 0)
            return -sign * (float(best.value or 0.0) - float(t.value or 0.0))

        close = [t.number for t in done if gap(t) <= best_se]
    return best_se, trials, close


def tune(
    strategy: str | Strategy,
    adapters: Mapping[str, AdapterState | str | os.PathLike[str]],
    objective: TrialObjective,
    *,
    n_trials: int = 20,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    direction: Literal["maximize", "minimize"] = "maximize",
    seed: int = 0,
    enqueue_default: bool = True,
    record: Mapping[str, Any] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    heartbeat_interval: int = 60,
) -> TuneResult:
    """Search ``strategy``'s parameters to optimise ``objective(merged, trial)`` until the study holds exactly
    ``n_trials`` COMPLETE trials (however many workers share it; see the module docstring).

    Args:
        strategy: Registered name or :class:`Strategy`.
        adapters: Adapters by role (states or PEFT directories), all of one adapter type.
        objective: Scores one merge output; it may call ``trial.report``/``trial.should_prune`` to be pruned.
        n_trials: Completed trials the study should hold in the end (earlier runs and other workers count).
        storage: Optuna storage URL (``sqlite:///...``, ``postgresql://...``); ``None`` keeps the study in memory.
        study_name: Defaults to ``"{strategy}-{adapter type}"``.
        sampler, pruner: Optuna objects (default: TPE seeded per trial from ``(seed, trial number)``, no pruning).
        direction: ``maximize`` (scores) or ``minimize`` (losses).
        enqueue_default: Evaluate the strategy's default parameters first (once per study).
        record: Extra facts stored on the study at creation and compared on every continuation (task, languages,
            split...); a difference is refused.
        groups: Group layout of ``groups=True`` parameters (``{"t": ["0-7", "8-15"]}``), passed unchanged to
            :meth:`StrategyConfig.suggest`, which then searches one value per group.
        heartbeat_interval: Seconds between heartbeats of a running trial (``storage`` only); a RUNNING trial
            without one for twice as long is a dead worker's, and is failed.

    Raises:
        ConfigError: a strategy without tunable parameters, ``n_trials`` < 1, a storage that cannot be opened, or
            a study created with other settings (each difference is named).
    """
    import optuna

    from . import _studies

    strat = STRATEGIES.get(strategy) if isinstance(strategy, str) else strategy
    if n_trials < 1:
        raise ConfigError(f"n_trials must be at least 1, got {n_trials}")
    if not any(p["tune"] for p in strat.config.parameters()):
        raise ConfigError(f"strategy {strat.name!r} has no tunable parameters; nothing to tune")
    states = {role: as_state(value, role) for role, value in adapters.items()}
    kind = next(iter(states.values())).kind
    name = study_name or f"{strat.name}-{kind}"
    rdb = _studies.open_storage(storage, heartbeat_interval=heartbeat_interval) if storage is not None else None
    shown = _studies.redact_url(storage)
    facts = {"strategy": strat.name, "adapter_type": kind, "direction": direction,
             "groups": {k: list(v) for k, v in sorted((groups or {}).items())}, **dict(record or {}),
             "inputs": {r: s.fingerprint() for r, s in sorted(states.items())}}

    def run_trial(trial: optuna.Trial) -> float:
        cfg: StrategyConfig = strat.config.suggest(trial, groups=groups)
        value = float(objective(merge(strat, states, cfg).output, trial))
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"objective returned {value}")
        return value

    with _studies.claim_lock(storage, name) as lock:
        with lock():  # creation, settings and the default trial: once, whichever worker comes first
            study = optuna.create_study(
                study_name=name, storage=rdb, load_if_exists=True, direction=direction,
                sampler=sampler or _studies.PerTrialSeededSampler(seed), pruner=pruner or optuna.pruners.NopPruner(),
            )
            _studies.check_study_record(study, facts, where=str(shown or "memory"))
            if enqueue_default and not study.trials:
                defaults = {p["name"]: p["default"] for p in strat.config.parameters() if p["tune"]}
                for pname, specs in (groups or {}).items():
                    defaults.pop(pname, None)
                    default = next((p["default"] for p in strat.config.parameters() if p["name"] == pname), None)
                    defaults.update({f"{pname}@{g}": default for g in specs})
                study.enqueue_trial(defaults)
        _studies.run_budget(study, n_trials, run_trial, lock, storage=rdb,
                            poll=min(1.0, float(heartbeat_interval)))
    best = study.best_trial
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    value = best.value if best.value is not None else math.nan
    best_se, trials, close = _trial_summary(study, best, direction)
    return TuneResult(strat.name, kind, dict(best.params), float(value), complete, name, shown, facts,
                      best_stderr=best_se, trials=trials, within_one_stderr=close)


def evaluation_objective(
    model: Any,
    tokenizer: Any,
    task: str | Task,
    languages: str | Sequence[str],
    *,
    metric: str | None = None,
    split: str = "validation",
    allow_test: bool = False,
    limit: int | None = None,
    seed: int = 0,
    data_files: Mapping[str, Any] | None = None,
    batch_size: int = 16,
) -> TrialObjective:
    """An objective that scores a merge output with the evaluation harness (``purpose="tuning"``).

    Each language's score is reported to the trial as an intermediate value (so a pruner can stop a bad trial
    after the first languages); the objective is their mean. ``metric`` defaults to the task's first metric;
    classification and multiple-choice tasks also offer ``gold_logprob``, the mean log-probability of the gold
    answer among the choices (:mod:`adamergex.evaluation._stats`), a continuous score that separates trials
    whose accuracies tie. Each trial records on itself (user attributes) ``stderr``, the standard error of the
    objective (``sqrt(Σ SE_l²)/L`` over the languages' binomial or sample standard errors; ``None`` for a
    metric without one), and ``per_language``: ``{language: {"value", "stderr", "examples"}}``.
    The data is loaded and tokenised once, at the first trial, and the model wrapped with PEFT once: each trial
    writes its merge output into that wrapper in place (:class:`~adamergex.evaluation.PreparedEvaluation`),
    which gives :func:`~adamergex.evaluation.evaluate`'s scores bit for bit; compositions (stacking
    strategies) are attached per trial. The model is the bare model between trials.
    Raises :class:`ConfigError` for ``split="test"`` unless ``allow_test``.
    """
    from .task import check_tuning_split

    check_tuning_split(split, allow_test)
    langs = [languages] if isinstance(languages, str) else list(languages)
    task_name = task if isinstance(task, str) else task.name
    prepared: list[Any] = []  # built at the first trial: the objective may be made before the model is used

    def objective(merged: AdapterState | Composition, trial: optuna.Trial) -> float:
        from .evaluation import PreparedEvaluation, mean_of_languages_stderr

        if not prepared:
            prepared.append(PreparedEvaluation(
                model, tokenizer, task, langs, split=split, limit=limit, seed=seed, data_files=data_files,
                batch_size=batch_size, purpose="tuning", allow_test=allow_test,
            ))
        scores: list[float] = []

        def report(lang: str, per_lang: dict[str, float]) -> None:
            key = metric or sorted(per_lang)[0]
            if key not in per_lang:
                raise ConfigError(f"task {task_name!r} reports metrics {sorted(per_lang)}; --metric {key!r} is not one")
            scores.append(per_lang[key])
            trial.report(sum(scores) / len(scores), len(scores) - 1)
            if trial.should_prune():
                import optuna

                raise optuna.TrialPruned()

        per_lang = prepared[0].score(merged, after_language=report)
        key = metric or min(next(iter(per_lang.values())))
        errors = [prepared[0].last_stderr.get(lang, {}).get(key) for lang in per_lang]
        se = mean_of_languages_stderr([e for e in errors if e is not None]) if None not in errors else None
        trial.set_user_attr("stderr", se if se is not None and math.isfinite(se) else None)
        trial.set_user_attr("per_language", {
            lang: {"value": per_lang[lang][key], "stderr": e if e is not None and math.isfinite(e) else None,
                   "examples": prepared[0].examples[lang]} for lang, e in zip(per_lang, errors)})
        return sum(scores) / len(scores)

    return objective


def plot_history(storage: str, study_name: str, path: Path) -> None:
    """Optuna's own optimisation-history plot, rendered with matplotlib (Agg) and saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    figure: Any = ax.figure
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(figure)
    os.replace(tmp, path)
