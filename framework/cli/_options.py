"""Command-line options from config dataclasses: one way for every command (STYLE §5).

A dataclass field and the docstring under it give the flag (``max_steps`` → ``--max-steps``), its type, its
default and its ``--help`` text; :func:`add_options` adds them to an ``argparse`` parser and
:func:`config_values` reads them back, merged over a YAML file when the command takes ``--config``. Field
annotations decide how a flag is read:

=======================  ==========================================================
annotation               on the command line
=======================  ==========================================================
``bool``                 ``--flag`` / ``--no-flag``
``int``, ``float``, str  one value, converted (``X | None`` too)
``tuple[int, ...]``      comma-separated: ``--seeds 0,1,2``
``tuple[str, ...]``      comma-separated: ``--adapters lora,ia3``
``list[str]``            one or more values: ``--data-files a.jsonl b.jsonl``
``dict[str, Any]``       ``KEY=VALUE`` entries, values read as YAML: ``--task-options r=8 t=[a,b]``
=======================  ==========================================================

jsonargparse (LightningCLI's parser) was considered: it writes flags with underscores (``--max_steps``) and its
own error texts, which would change every command's interface and messages, so the ~100 lines here stay.
"""

from __future__ import annotations

import argparse
import contextlib
import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "DATA_FILES_HELP",
    "DATA_FILES_METAVAR",
    "TASK_OPTIONS_HELP",
    "add_options",
    "config_values",
    "data_file_inputs",
    "field_docs",
    "flag",
    "parse_data_files",
    "parse_groups",
    "parse_pairs",
    "quiet_libraries",
    "read_yaml_options",
    "recorded_task_options",
    "resolve_task_options",
]

DATA_FILES_METAVAR = "[LANG][:SPLIT]=PATH"
DATA_FILES_HELP = (
    "local data in the task's schema instead of the Hub, one entry per file: LANG:SPLIT=PATH (one split of one "
    "language), LANG=PATH (every split of LANG), :SPLIT=PATH or PATH (the same for the command's only language); "
    "SPLIT is train, validation or test, and an entry repeated for one language and split lists several files"
)
"""How every command's ``--help`` describes ``--data-files`` (grammar: :func:`parse_data_files`)."""
TASK_OPTIONS_HELP = (
    "task fields as KEY=VALUE, values read as YAML (labels=[a,b] languages=[en,fr]); see `adamergex tasks NAME`"
)
"""How every command's ``--help`` describes ``--task-options``."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls``, whitespace-collapsed, read from its source (``{}``
    when the source is unavailable, e.g. in a frozen executable)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def flag(name: str) -> str:
    """The command-line flag of field ``name``: ``max_steps`` → ``--max-steps``."""
    return "--" + name.replace("_", "-")


def _kind(field: dataclasses.Field[Any]) -> str:
    """The field's annotation without ``| None`` (annotations are strings under ``from __future__``), with
    ``Mapping`` read as ``dict``."""
    kind = str(field.type).replace(" | None", "")
    return "dict" + kind[len("Mapping"):] if kind.startswith("Mapping") else kind


def _default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return ""
    if value in (None, "", [], {}, ()):
        return ""
    if isinstance(value, tuple):
        return f" (default: {','.join(map(str, value))})"
    return f" (default: {value})"


def add_options(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = ()) -> None:
    """Add one flag per field of dataclass ``cls`` (but ``skip``) to ``parser``; flags not given are absent from
    the parsed namespace (``argparse.SUPPRESS``), so a YAML file or the dataclass default applies."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        help_ = docs.get(f.name, "") + _default_text(f)
        kind = _kind(f)
        common: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_, "dest": f.name}
        if kind == "bool":
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **common)
        elif kind.startswith("dict"):
            parser.add_argument(flag(f.name), nargs="+", metavar="KEY=VALUE", **common)
        elif kind.startswith("list"):
            parser.add_argument(flag(f.name), nargs="+", metavar="VALUE", **common)
        else:
            parser.add_argument(flag(f.name), metavar=f.name.upper(), **common)


def parse_pairs(entries: Sequence[str] | Mapping[str, Any], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` entries into a dict, each value read as YAML (``r=8`` → 8, ``t=[a,b]`` → a list); a mapping
    (from a YAML file) is returned as a dict."""
    import yaml

    if isinstance(entries, Mapping):
        return dict(entries)
    out = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag(option)} takes KEY=VALUE entries, got {entry!r}")
        out[key] = yaml.safe_load(value)
    return out


def _convert(field: dataclasses.Field[Any], value: Any) -> Any:
    """A value from the command line (a string, or a list for ``nargs``) as the field's type."""
    kind = _kind(field)
    if not isinstance(value, (str, list)) or kind == "bool":
        return value
    if "| None" in str(field.type) and isinstance(value, str) and value.lower() in ("none", "off", "null"):
        return None
    try:
        if kind.startswith("dict"):
            return parse_pairs(value, field.name)
        if kind.startswith("tuple"):
            items = value if isinstance(value, list) else [s for s in value.split(",") if s.strip()]
            cast = int if "int" in kind else str
            return tuple(cast(str(s).strip()) for s in items)
        if kind.startswith("list"):
            return [value] if isinstance(value, str) else list(value)
        if kind == "int" and isinstance(value, str):
            return int(value)
        if kind == "float" and isinstance(value, str):
            return float(value)
    except ValueError:
        what = "comma-separated integer(s)" if kind.startswith("tuple") else f"a number ({kind})"
        raise ConfigError(f"{flag(field.name)} must be {what}, got {value!r}") from None
    return value


def read_yaml_options(path: str | Path, names: Iterable[str]) -> dict[str, Any]:
    """The options in YAML file ``path``: a mapping whose keys (dashes allowed) are among ``names``."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must hold a mapping of options, got {type(loaded).__name__}")
    names = set(names)
    loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    unknown = sorted(set(loaded) - names)
    if unknown:
        raise ConfigError(f"config {path} has unknown option(s) {unknown}; available: {', '.join(sorted(names))}")
    return loaded


def config_values(classes: type | Sequence[type], namespace: argparse.Namespace, *, config: str | Path | None = None,
                  skip: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments for the dataclass(es) ``classes`` from the flags in ``namespace`` over the YAML file
    ``config`` (if any): flags win, and ``KEY=VALUE`` flags are merged key by key into the file's mapping. A field
    named in ``skip`` is taken from the first class that has it but is not offered by a later one."""
    classes = [classes] if isinstance(classes, type) else list(classes)
    fields: dict[str, dataclasses.Field[Any]] = {}
    for i, cls in enumerate(classes):
        for f in dataclasses.fields(cls):
            if f.name not in fields and not (i and f.name in skip):
                fields[f.name] = f
    values = read_yaml_options(config, fields) if config is not None else {}
    values = {k: _convert(fields[k], v) if k in fields else v for k, v in values.items()}
    for name, value in vars(namespace).items():
        if name not in fields:
            continue
        value = _convert(fields[name], value)
        if isinstance(value, dict) and isinstance(values.get(name), dict):
            value = {**values[name], **value}
        values[name] = value
    return values


def parse_data_files(
    items: Sequence[str] | str, *, languages: Sequence[str], option: str = "--data-files"
) -> dict[str, Any] | None:
    """``--data-files`` entries into ``{language: DataFiles}``: the one grammar of every command.

    ::

        entry := LANG ":" SPLIT "=" PATH     one split of one language
               | LANG "=" PATH               every split of LANG (one file)
               | ":" SPLIT "=" PATH          one split of the command's only language
               | SPLIT "=" PATH              the same (train's older spelling), when SPLIT is not one of ``languages``
               | PATH                        every split of the command's only language

    The key is what precedes the first ``=``; an entry whose would-be key holds a path separator is a bare
    ``PATH``. ``SPLIT`` is one of :data:`adamergex.task.SPLITS`. The same language and split given several times
    lists several files (``{split: [paths]}``); a language's per-split files and one file for every split do
    not mix. Returns ``None`` for no entries; a language that no entry names is absent (the callers check
    coverage: :func:`adamergex.evaluation.data_files_for`).

    Raises:
        ConfigError: naming the entry: a key that is neither one of ``languages`` nor a split, a form that
            needs a language when the command reads several, or files that conflict.
    """
    from ..task import SPLITS

    entries = [items] if isinstance(items, str) else list(items)
    if not entries:
        return None
    langs = list(languages)
    every: dict[str, list[str]] = {}
    per_split: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        entry = str(entry)
        key, sep, path = entry.partition("=")
        if not sep or "/" in key or "\\" in key:
            lang, split, path = "", "", entry  # a bare PATH
        else:
            lang, colon, split = key.partition(":")
            if not colon and lang not in langs and lang in SPLITS:
                lang, split = "", lang  # SPLIT=PATH, train's older spelling of :SPLIT=PATH
            elif not colon and lang not in langs:
                raise ConfigError(
                    f"{option} entry {entry!r}: {lang!r} is neither a language of this command ({', '.join(langs)}) "
                    f"nor a split ({', '.join(SPLITS)}); write LANG:SPLIT=PATH, LANG=PATH, :SPLIT=PATH or PATH")
        if not path:
            raise ConfigError(f"{option} entry {entry!r} names no file after '='")
        if not lang:
            if len(langs) != 1:
                raise ConfigError(
                    f"{option} entry {entry!r} names no language, which only a command reading one language "
                    f"accepts; this one reads {', '.join(langs)}: write LANG=PATH or LANG:SPLIT=PATH")
            lang = langs[0]
        elif lang not in langs:
            raise ConfigError(f"{option} entry {entry!r}: language {lang!r} is not one this command reads "
                              f"({', '.join(langs)})")
        if split and split not in SPLITS:
            raise ConfigError(f"{option} entry {entry!r}: split {split!r} must be one of {', '.join(SPLITS)}")
        if split:
            per_split.setdefault(lang, {}).setdefault(split, []).append(path)
        else:
            every.setdefault(lang, []).append(path)
        if lang in every and lang in per_split:
            raise ConfigError(f"{option} entry {entry!r}: language {lang!r} has both one file for every split and "
                              "per-split files; give one form (LANG=PATH, or LANG:SPLIT=PATH for each split)")
        if len(every.get(lang, ())) > 1:
            raise ConfigError(
                f"{option} entry {entry!r}: language {lang!r} already has one file for every split "
                f"({every[lang][0]!r}); several files must name their split (LANG:SPLIT=PATH, once per file)")
    out: dict[str, Any] = {lang: paths[0] for lang, paths in every.items()}
    for lang, splits in per_split.items():
        out[lang] = {s: paths[0] if len(paths) == 1 else paths for s, paths in splits.items()}
    return {lang: out[lang] for lang in langs if lang in out}


def data_file_inputs(data_files: Mapping[str, Any] | None, option: str = "--data-files") -> dict[str, Any]:
    """``{"--data-files LANG:SPLIT": path}`` for every file of a :func:`parse_data_files` result: the inputs an
    output must stay apart from, named as the user wrote them."""
    inputs: dict[str, Any] = {}
    for lang, files in (data_files or {}).items():
        for split, paths in (files.items() if isinstance(files, Mapping) else {"": files}.items()):
            for i, path in enumerate([paths] if isinstance(paths, str) else list(paths)):
                inputs[f"{option} {lang}{':' + split if split else ''}{f' #{i + 1}' if i else ''}"] = path
    return inputs


def parse_groups(items: Sequence[str], option: str = "--groups") -> dict[str, list[str]] | None:
    """``NAME=SPEC,SPEC...`` entries (``t=0-7,8-15``) into ``{name: [spec, ...]}`` for
    :func:`adamergex.tuning.tune`'s ``groups``: one value of ``NAME`` is searched per group, under the Optuna
    name ``NAME@SPEC``, as ``adamergex merge --param NAME@SPEC=VALUE`` sets it (specs: :mod:`adamergex.groups`).

    Raises:
        ConfigError: an entry without ``=``, an empty or repeated spec, or a parameter given twice.
    """
    from ..groups import check_spec

    if not items:
        return None
    out: dict[str, list[str]] = {}
    for entry in items:
        name, sep, specs = str(entry).partition("=")
        name = name.strip()
        groups = [s.strip() for s in specs.split(",")]
        if not sep or not name or not all(groups):
            raise ConfigError(f"{option} takes NAME=GROUP,GROUP... (e.g. t=0-7,8-15), got {entry!r}")
        if name in out:
            raise ConfigError(f"{option} gives parameter {name!r} more than once; list all its groups in one entry")
        dupes = sorted({g for g in groups if groups.count(g) > 1})
        if dupes:
            raise ConfigError(f"{option} entry {entry!r} repeats group(s) {dupes}")
        for g in groups:
            check_spec(g)
        out[name] = groups
    return out


def recorded_task_options(adapter: Any, task: str) -> dict[str, Any]:
    """The task options an adapter (or a merge output, which keeps its task adapter's metadata) was trained
    with (``metadata["training"]["task_options"]``), when it was trained on ``task``; ``{}`` otherwise. For a
    composition, those of the adapter whose head it uses."""
    if hasattr(adapter, "adapters") and hasattr(adapter, "head_from"):
        adapter = adapter.adapters[adapter.head_from]
    metadata = getattr(adapter, "metadata", None) or {}
    if metadata.get("task") != task:
        return {}
    training = metadata.get("training") or {}
    options = training.get("task_options") if isinstance(training, Mapping) else None
    return dict(options) if isinstance(options, Mapping) else {}


def resolve_task_options(given: Sequence[str], recorded: Mapping[str, Any],
                         option: str = "--task-options") -> tuple[dict[str, Any], dict[str, str]]:
    """``(options, where each came from)``: the ``recorded`` ones (from the adapter) under the ``KEY=VALUE``
    entries ``given``, which win key by key; sources are ``"adapter"`` or ``"command line"``."""
    explicit = parse_pairs(list(given), option.removeprefix("--").replace("-", "_"))
    options = {**dict(recorded), **explicit}
    sources = {k: "command line" if k in explicit else "adapter" for k in options}
    return options, sources


@contextlib.contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Keep transformers' and datasets' notes off every command's console unless ``verbose``: load reports (a classifier the
    checkpoint lacks is expected when a head is added; the command says so in one line), tied-weight notes about
    heads the checkpoint lacks (refused or replaced by --head), and per-file progress bars. Errors still show."""
    if verbose:
        yield
        return
    import datasets
    import transformers

    t_level, d_level = transformers.logging.get_verbosity(), datasets.logging.get_verbosity()
    t_bars, d_bars = transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(t_level)
        datasets.logging.set_verbosity(d_level)
        if t_bars:
            transformers.utils.logging.enable_progress_bar()  # type: ignore[no-untyped-call]
        if d_bars:
            datasets.enable_progress_bars()
