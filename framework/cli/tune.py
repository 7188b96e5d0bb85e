"""``adamergex tune``: tune a strategy's merge parameters with Optuna on a validation split.

Writes ``best.json``, the best merge (``best_adapter/``) and Optuna's optimisation-history plot
(``history.png``) to ``--output``; the study lives in ``--storage`` (default: ``OUTPUT/study.db``), and a rerun
resumes it (:func:`adamergex.tuning.tune`). Several workers may share one ``--storage`` and ``--study-name``: together
they run exactly ``--n-trials`` completed trials. Every option, the output and the storage are checked before the
model loads; nothing is written on error, and the storage's password is never written or printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputExistsError
from ..task import check_tuning_split
from ._options import (
    DATA_FILES_HELP,
    DATA_FILES_METAVAR,
    TASK_OPTIONS_HELP,
    data_file_inputs,
    parse_data_files,
    parse_groups,
    recorded_task_options,
    resolve_task_options,
)

__all__ = ["cli_tune"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adamergex tune", description=cli_tune.__doc__)
    p.add_argument("--model", required=True, help="base model: local path or Hugging Face id")
    p.add_argument("--strategy", default="adamergex", help="registered strategy (default: adamergex)")
    p.add_argument("--task", required=True, help="registered task name the merge is scored on")
    p.add_argument("--task-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help=TASK_OPTIONS_HELP + "; default: those the task adapter was trained with (these win key by key)")
    p.add_argument("--languages", required=True, help="comma-separated target languages")
    p.add_argument("--task-adapter", required=True, help="task adapter directory (source language)")
    p.add_argument("--ref-source", help="reference adapter directory, source language")
    p.add_argument("--ref-target", help="reference adapter directory, target language")
    p.add_argument("--n-trials", type=int, default=20, help="completed trials in the study (reruns resume)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUTPUT/study.db)")
    p.add_argument("--study-name", help="default: STRATEGY-ADAPTERTYPE")
    p.add_argument("--metric", help="metric to maximise (default: the task's first); classification and "
                   "multiple-choice tasks also offer gold_logprob, the mean log-probability of the gold answer "
                   "among the choices, which separates trials whose accuracies tie")
    p.add_argument("--groups", nargs="+", default=[], metavar="NAME=GROUP,GROUP",
                   help="search one value of parameter NAME per layer group (t=0-7,8-15), under the names NAME@GROUP "
                   "that `adamergex merge --param NAME@GROUP=VALUE` takes; modules in no group keep the default")
    p.add_argument("--split", default="validation", help="split scored (default: validation)")
    p.add_argument("--allow-test", action="store_true", help="allow tuning on the test split")
    p.add_argument("--limit", type=int, help="seeded subset of N examples per language")
    p.add_argument("--data-files", nargs="+", default=[], metavar=DATA_FILES_METAVAR, help=DATA_FILES_HELP)
    p.add_argument("--seed", type=int, default=0, help="sampler and subsample seed")
    p.add_argument("--output", required=True, help="directory for best.json, best_adapter/ and history.png")
    p.add_argument("--heartbeat-interval", type=int, default=60,
                   help="seconds between a running trial's heartbeats; a trial silent for twice as long belongs to "
                   "a dead worker and is failed (default: 60)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--verbose", action="store_true",
                   help="show transformers' and datasets' load reports and per-file progress bars")
    return p


def _check_groups(strat: Any, states: dict[str, Any], groups: dict[str, list[str]]) -> None:
    """Refuse ``--groups`` for a parameter the strategy cannot search per group, or groups that match no module of
    the adapters or overlap (the merge itself would refuse them at the first trial)."""
    from ..groups import resolve

    fields = {p["name"]: p for p in strat.config.parameters()}
    for name, specs in groups.items():
        if name not in fields or not fields[name].get("groups"):
            can = sorted(n for n, p in fields.items() if p.get("groups")) or ["(none)"]
            raise ConfigError(f"--groups: strategy {strat.name!r} cannot search {name!r} per group; parameters "
                              f"with groups: {', '.join(can)}")
        value = {"*": fields[name]["default"], **{g: fields[name]["default"] for g in specs}}
        resolve(value, sorted(states["task"].params), name=name)


def _verdict(result: Any, metric: str) -> str:
    """One line: the best value with its standard error, and how many trials it cannot be told apart from."""
    value = f"{metric} {result.best_value:.4f}"
    if result.best_stderr is None:
        return f"best trial: {value} (no standard error for this metric)"
    others = len(result.within_one_stderr) - 1
    return (f"best trial: {value} ± {result.best_stderr:.4f}; {others} of {max(result.n_trials - 1, 0)} other "
            f"trial(s) within one standard error of it" + (" (the validation set cannot tell them apart; "
                                                           "try --metric gold_logprob or more examples)" if others
                                                           else ""))


def cli_tune(argv: list[str]) -> int:
    """``adamergex tune``: tune a strategy on the validation split; writes best.json, the best merge and a plot."""
    args = _parser().parse_args(argv)
    from ._options import quiet_libraries

    with quiet_libraries(args.verbose):
        return _tune(args)


def _tune(args: argparse.Namespace) -> int:
    check_tuning_split(args.split, args.allow_test)
    if args.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, got {args.n_trials}")
    out = Path(args.output)
    from .._outputs import check_apart, check_replaceable
    from .._studies import data_fingerprint, open_storage, redact_url
    from ..evaluation import (
        check_languages,
        check_options,
        data_files_for,
        load_model,
        metric_names,
    )
    from ..io import write_json_atomic
    from ..merging import as_state, merge, save_merge_output
    from ..registry import STRATEGIES
    from ..task import get_task
    from ..tuning import evaluation_objective, plot_history, tune

    groups = parse_groups(args.groups)
    strat = STRATEGIES.get(args.strategy)
    adapters = strat.select({"task": args.task_adapter, "ref_source": args.ref_source, "ref_target": args.ref_target})
    states = {r: as_state(v, r) for r, v in adapters.items()}  # the task adapter's recorded task options first
    task_options, sources = resolve_task_options(args.task_options, recorded_task_options(states["task"], args.task))
    task = get_task(args.task, **task_options)
    languages = check_languages(task, [x.strip() for x in args.languages.split(",") if x.strip()])
    check_options(task, args.split, "tuning", args.allow_test, "sum", args.limit, args.seed)
    names = metric_names(task)
    metric = args.metric or names[0]
    if metric not in names:
        raise ConfigError(f"--metric must be one that task {args.task!r} reports ({', '.join(names)}), got {metric!r}")
    data_files = parse_data_files(args.data_files, languages=languages)
    data_files_for(data_files, languages)
    if groups:  # a parameter that cannot be grouped, or a malformed spec, fails before the model loads
        _check_groups(strat, states, groups)
    inputs: dict[str, Any] = {f"--{r.replace('_', '-')}" if r != "task" else "--task-adapter": v
                              for r, v in adapters.items() if isinstance(v, str)}
    inputs["--model"] = args.model
    inputs.update(data_file_inputs(data_files))
    check_apart(out, inputs, kind="directory")
    if (out / "best.json").exists():
        raise OutputExistsError(f"{out / 'best.json'} exists; the study resumes from its storage, pick another --output")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file; it must be a directory (or not exist yet)")
    check_replaceable(out / "best_adapter", overwrite=True, option="--output's best_adapter")
    if args.storage:  # a bad URL or an unreachable server is refused before anything is written
        open_storage(args.storage, heartbeat_interval=args.heartbeat_interval).engine.dispose()
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    model, tokenizer = load_model(args.model, task=task, adapter=states["task"], model_type="auto",
                                  trust_remote_code=args.trust_remote_code)
    objective = evaluation_objective(
        model, tokenizer, task, languages, metric=metric, split=args.split, allow_test=args.allow_test,
        limit=args.limit, seed=args.seed, data_files=data_files,
    )
    record = {"task": args.task, "languages": languages, "split": args.split, "metric": metric, "limit": args.limit,
              "subsample_seed": args.seed if args.limit is not None else None,
              "data": data_fingerprint(task, languages, args.split, data_files), "task_options": task_options}
    result = tune(strat, states, objective, n_trials=args.n_trials, storage=storage, study_name=args.study_name,
                  seed=args.seed, record=record, groups=groups, heartbeat_interval=args.heartbeat_interval)
    best = merge(strat, states, result.best_params)
    save_merge_output(best, out / "best_adapter", overwrite=True)
    plot_history(storage, result.study_name, out / "history.png")
    summary = {**result.to_dict(), "storage": redact_url(storage), "seed": args.seed,
               "task_options_from": sources}
    write_json_atomic(out / "best.json", summary)
    print(json.dumps(summary, indent=2, default=str))
    print(_verdict(result, metric), file=sys.stderr)
    return 0

