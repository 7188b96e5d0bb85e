"""Field docstrings of config dataclasses: the ``--help`` text of the commands built from them (STYLE §5)."""

from __future__ import annotations

import ast
import inspect
import textwrap

__all__ = ["field_docs"]


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
