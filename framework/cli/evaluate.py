"""``adamergex evaluate``: load a model by name or path, resolve the adapter, score, print and write JSON.

Everything is validated before the model is loaded, and nothing is written on error. Models load with
``trust_remote_code=False`` unless ``--trust-remote-code`` is given, and from safetensors only
(:func:`adamergex.evaluation.load_model`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError
from ..task import get_task
from ._options import (
    DATA_FILES_HELP,
    DATA_FILES_METAVAR,
    TASK_OPTIONS_HELP,
    data_file_inputs,
    parse_data_files,
    recorded_task_options,
    resolve_task_options,
)

__all__ = ["cli_evaluate"]

# Choices shown by --help without importing the evaluation package (torch) for it; a test keeps them in sync.
MODEL_TYPES = ("auto", "causal_lm", "seq_cls")
NORMALIZATIONS = ("sum", "token_mean", "byte_mean")
PURPOSES = ("report", "tuning")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adamergex evaluate",
        description="Score a model (with an adapter or merge output) per language on a task; prints a table and "
        "optionally writes JSON with the scores and a record of what was evaluated.",
    )
    p.add_argument("--model", required=True, help="base model: local path or Hugging Face id")
    p.add_argument("--adapter", help="PEFT adapter directory or merge output (composition.json); none: base model")
    p.add_argument("--task", required=True, help="registered task name")
    p.add_argument("--task-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help=TASK_OPTIONS_HELP + "; default: those the adapter was trained with (these win key by key)")
    p.add_argument("--metric", help="comma-separated metrics to report (default: all the task reports; "
                   "classification and multiple-choice tasks add gold_logprob, the mean log-probability of the "
                   "gold answer among the choices)")
    p.add_argument("--languages", required=True, help="comma-separated languages, e.g. fr,de")
    p.add_argument("--split", default="validation", help="train, validation or test (default: validation)")
    p.add_argument("--limit", type=int, default=None, help="seeded random subset of N examples per language")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subsample (recorded)")
    p.add_argument("--data-files", nargs="+", default=[], metavar=DATA_FILES_METAVAR, help=DATA_FILES_HELP)
    p.add_argument("--output", help="write the results as JSON to this file (atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --output file that a previous adamergex evaluate wrote")
    p.add_argument("--predictions", action="store_true", help="include per-example predictions in --output")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default: 16)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, default="sum",
                   help="log-likelihood of choices: sum (default), token_mean or byte_mean")
    p.add_argument("--max-length", type=int, default=None, help="longest input in tokens (default: model limit)")
    p.add_argument("--purpose", choices=PURPOSES, default="report",
                   help="report (default) or tuning; tuning on the test split needs --allow-test")
    p.add_argument("--allow-test", action="store_true", help="allow --purpose tuning to read the test split")
    p.add_argument("--model-type", choices=MODEL_TYPES, default="auto",
                   help="auto (from the adapter's PEFT task_type: SEQ_CLS → seq_cls, else causal_lm)")
    p.add_argument("--tokenizer", help="tokenizer path or id (default: --model)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--verbose", action="store_true",
                   help="show transformers' and datasets' load reports and per-file progress bars")
    p.add_argument("--no-base-model-check", action="store_true",
                   help="accept an adapter whose recorded base model differs in name (same weights elsewhere)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _metrics(task: Any, given: str | None, names: Any) -> list[str] | None:
    """The metrics ``--metric`` names (``None``: all), each one the task reports."""
    if not given:
        return None
    known = names(task)
    wanted = [m.strip() for m in given.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in known]
    if unknown or not wanted:
        raise ConfigError(f"--metric must name metrics that task {task.name!r} reports ({', '.join(known)}), "
                          f"got {given!r}")
    return wanted


def cli_evaluate(argv: list[str]) -> int:
    """``adamergex evaluate``: everything is validated before the model is loaded; nothing is written on error."""
    args = _parser().parse_args(argv)
    from ._options import quiet_libraries

    with quiet_libraries(args.verbose):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import (
        check_languages,
        check_options,
        data_files_for,
        evaluate,
        load_model,
        metric_names,
        resolve_adapter,
    )

    adapter = resolve_adapter(args.adapter) if args.adapter else None  # its recorded task options come first
    task_options, sources = resolve_task_options(args.task_options, recorded_task_options(adapter, args.task))
    task = get_task(args.task, **task_options)
    langs = check_languages(task, [lang.strip() for lang in args.languages.split(",") if lang.strip()])
    check_options(task, args.split, args.purpose, args.allow_test, args.normalization, args.limit, args.seed)
    shown = _metrics(task, args.metric, metric_names)
    data_files = parse_data_files(args.data_files, languages=langs)
    data_files_for(data_files, langs)
    if args.output:  # before the run: a file path apart from every input, replacing only a previous result
        from .._outputs import check_apart, check_replaceable, is_evaluation_output

        inputs: dict[str, Any] = {"--adapter": args.adapter, "--model": args.model, "--tokenizer": args.tokenizer}
        check_apart(args.output, {**inputs, **data_file_inputs(data_files)}, kind="file")
        check_replaceable(args.output, overwrite=args.overwrite, kind="file", ours=is_evaluation_output,
                          what="an adamergex evaluation result")
    model, tokenizer = load_model(
        args.model, task=task, adapter=adapter, model_type=args.model_type, tokenizer=args.tokenizer,
        dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
    )
    result = evaluate(
        model, tokenizer, task, langs, adapter=adapter, split=args.split, limit=args.limit, seed=args.seed,
        data_files=data_files, batch_size=args.batch_size, normalization=args.normalization,
        max_length=args.max_length, purpose=args.purpose, allow_test=args.allow_test,
        check_base_model=not args.no_base_model_check, keep_predictions=args.predictions,
        progress=not args.no_progress,
    )
    if args.adapter:  # resolved above so its task_type could pick the model class; record where it came from
        result.record["adapter_path"] = args.adapter
    result.record["task_options"] = {"values": task_options, "from": sources}
    if shown is not None:
        result = result.only(shown)
    print(result.table())
    if args.output:
        from ..io import write_json_atomic

        write_json_atomic(args.output, result.to_dict())
        print(f"wrote {args.output}", file=sys.stderr)
    return 0

