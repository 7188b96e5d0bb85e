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
import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["add_options", "config_values", "field_docs", "flag", "parse_pairs", "read_yaml_options"]


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
