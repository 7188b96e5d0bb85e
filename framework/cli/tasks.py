"""``adamergex tasks [NAME]``: the task registry with kinds, data, metrics and options (text, Markdown or JSON).

Generated from ``TASKS`` and the task dataclasses themselves, as ``adamergex strategies`` is from its registry: the
options are the dataclass fields (every one is a ``--task-options KEY=VALUE`` entry), with their annotated type,
their default and the docstring under the field (inherited fields included), so the listing cannot fall behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ._options import field_docs

__all__ = ["cli_tasks", "task_rows"]


def _option_docs(cls: type) -> dict[str, str]:
    """Field docstrings of ``cls`` and its dataclass bases (a subclass's own docstring wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(field_docs(klass))
    return docs


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _metric(task: Any) -> str:
    from ..errors import FrameworkError

    try:
        return type(task.metric()).__name__
    except FrameworkError as exc:  # text_classification: the metric needs `labels`
        return f"(set the task's options first: {exc})"


def task_rows(name: str | None = None) -> list[dict[str, Any]]:
    """One JSON-able row per registered task (or for ``name`` only): kind, summary, Hub dataset id and revision,
    languages, splits, metric, and options (``name``, ``type``, ``default``, ``help``) in field order.

    Raises:
        UnknownNameError: ``name`` is not a registered task (the known ones are listed).
    """
    from ..registry import TASKS
    from ..task import SPLITS, get_task

    names = [name] if name is not None else TASKS.names()
    rows = []
    for task_name in names:
        cls = TASKS.get(task_name)
        task = get_task(task_name)
        docs = _option_docs(cls)
        summary = " ".join((cls.__doc__ or "").split("\n\n", 1)[0].split())
        rows.append({
            "name": task_name,
            "kind": cls.kind,
            "summary": summary,
            "dataset_id": task.dataset_id or None,
            "revision": task.revision if task.dataset_id else None,
            "languages": list(task.languages),
            "splits": list(SPLITS),
            "metric": _metric(task),
            "options": [{"name": f.name, "type": str(f.type), "default": _default(f), "help": docs.get(f.name, "")}
                        for f in dataclasses.fields(cls)],
        })
    return rows


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _dataset(row: dict[str, Any]) -> str:
    if row["dataset_id"] is None:
        return "(no Hugging Face dataset)"
    return f"{row['dataset_id']} @ {row['revision']}"


def _markdown(rows: list[dict[str, Any]]) -> str:
    out = []
    for row in rows:
        out += [f"### `{row['name']}` ({row['kind']})", "", row["summary"], "",
                f"- dataset: {_dataset(row)}",
                f"- languages: {', '.join(row['languages']) or '(none: set `languages`)'}",
                f"- splits: {', '.join(row['splits'])}", f"- metric: {row['metric']}", "",
                "| option | type | default | what it does |", "|---|---|---|---|"]
        for opt in row["options"]:
            help_ = opt["help"].replace("|", "\\|")
            out.append(f"| `{opt['name']}` | `{opt['type']}` | `{_value(opt['default'])}` | {help_} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _text(rows: list[dict[str, Any]], *, options: bool) -> str:
    out = []
    for row in rows:
        out.append(f"{row['name']}  ({row['kind']}; metric: {row['metric']})")
        out.append(f"    {row['summary']}")
        out.append(f"    dataset: {_dataset(row)}")
        out.append(f"    languages: {', '.join(row['languages']) or '(none: set languages)'}")
        out.append(f"    splits: {', '.join(row['splits'])}")
        if options:
            out.append("    options (--task-options KEY=VALUE ...):")
            for opt in row["options"]:
                out.append(f"      {opt['name']}: {opt['type']} = {_value(opt['default'])}")
                if opt["help"]:
                    out.append(f"          {opt['help']}")
        else:
            out.append(f"    options: {', '.join(o['name'] for o in row['options'])}")
    return "\n".join(out) + "\n"


def cli_tasks(argv: list[str]) -> int:
    """``adamergex tasks [NAME]``: list the registered tasks, or one task with every option explained."""
    parser = argparse.ArgumentParser(
        prog="adamergex tasks",
        description="List registered tasks (kind, data, languages, splits, metric, options), or one task in full. "
        "Options are set with --task-options KEY=VALUE on train, evaluate and tune.",
    )
    parser.add_argument("name", nargs="?", help="one task to describe with all its options")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    args = parser.parse_args(argv)
    rows = task_rows(args.name)
    if args.format == "json":
        print(json.dumps(rows if args.name is None else rows[0], indent=2, default=str))
    elif args.format == "markdown":
        print(_markdown(rows), end="")
    else:
        print(_text(rows, options=args.name is not None), end="")
        if args.name is None:
            print("\nRun `adamergex tasks NAME` for one task's options with their types, defaults and help.")
    return 0
