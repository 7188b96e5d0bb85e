"""Per-layer-group values of strategy parameters (``--param t@0-7=0.4 --param t@mlp=0.8``).

A parameter declared with ``param(..., groups=True)`` takes one number, or one number per *group* of adapted
modules. The grouped value is a plain dict ``{"*": rest, group: value, ...}``: ``"*"`` is the value of every
module in no group (the plain ``--param t=...``, or the declared default), so a grouped config stays JSON-able
and is recorded as such in merge provenance.

Group grammar (one spec per group)::

    spec   := layers | kind | layers ":" kind
    layers := N | N "-" M          (inclusive layer indices, N ≤ M)
    kind   := "attn" | "mlp" | a module's last name (q_proj, down_proj, query...)

A module's layer index is read from the first ``.layers.<i>.`` in its name (also ``.layer.``, ``.h.``,
``.blocks.``: BERT, GPT-2 and ViT layouts); its kind from its last name component, where ``attn`` stands for
``q_proj, k_proj, v_proj, o_proj, query, key, value`` and ``mlp`` for ``gate_proj, up_proj, down_proj, fc1, fc2``.
A module matched by two groups, and a group matching no module, are errors naming the groups (checked at merge
time, when the module names are known). :func:`partition` splits modules by their resolved values, so a strategy
whose adapter-type algebra takes one weight runs once per distinct value (:func:`merge_by_group`); all groups
equal is then one run, bit for bit the single-value merge.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .adapter_state import AdapterState
from .errors import ConfigError

__all__ = ["KINDS", "REST", "check_spec", "layer_index", "matches", "merge_by_group", "partition", "resolve", "restrict"]

REST = "*"
"""Key of a grouped value holding the value of modules in no group."""
KINDS: dict[str, frozenset[str]] = {
    "attn": frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value"}),
    "mlp": frozenset({"gate_proj", "up_proj", "down_proj", "fc1", "fc2"}),
}
_LAYERS = re.compile(r"^(\d+)(?:-(\d+))?$")
_KIND = re.compile(r"^[a-z_][a-z0-9_]*$")
_LAYER_OF = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def _parse(spec: str) -> tuple[tuple[int, int] | None, str | None]:
    """``(layer range or None, kind or None)`` of a group spec; raises on a malformed one."""
    layers_text, _, kind = spec.partition(":") if ":" in spec else (spec, "", "")
    if not kind and not _LAYERS.match(layers_text):  # a lone kind
        layers_text, kind = "", spec
    layers = None
    if layers_text:
        m = _LAYERS.match(layers_text)
        if not m:
            raise ConfigError(f"group {spec!r}: layers must be N or N-M (inclusive indices), got {layers_text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise ConfigError(f"group {spec!r}: a layer range N-M needs N <= M, got {lo} > {hi}")
        layers = (lo, hi)
    if kind and not _KIND.match(kind):
        raise ConfigError(
            f"group {spec!r} must be layers (3, 0-7), a module kind (attn, mlp, q_proj...) or layers:kind "
            f"(0-7:attn); got kind {kind!r}"
        )
    if layers is None and not kind:
        raise ConfigError("a group spec must not be empty")
    return layers, kind or None


def check_spec(spec: str) -> None:
    """Raise :class:`ConfigError` unless ``spec`` follows the group grammar (module docstring)."""
    _parse(spec)


def layer_index(module: str) -> int | None:
    """The layer index of the module named ``module`` (its first ``.layers.<i>.``, ``.layer.``, ``.h.`` or
    ``.blocks.``), or ``None`` for a module outside the layer stack (embeddings, heads)."""
    m = _LAYER_OF.search(module)
    return None if m is None else int(m.group(1))


def matches(spec: str, module: str) -> bool:
    """Whether the module named ``module`` belongs to group ``spec``."""
    layers, kind = _parse(spec)
    if layers is not None:
        index = layer_index(module)
        if index is None or not layers[0] <= index <= layers[1]:
            return False
    if kind is not None:
        leaf = module.rsplit(".", 1)[-1]
        if leaf not in KINDS.get(kind, frozenset({kind})):
            return False
    return True


def resolve(value: float | Mapping[str, float], modules: Iterable[str], *, name: str = "t") -> dict[str, float]:
    """The value of each module: a number applies to all; a grouped dict gives each module its group's value
    (``"*"`` for modules in no group).

    Raises:
        ConfigError: a module in two groups, or a group matching no module (the groups are named).
    """
    modules = list(modules)
    if not isinstance(value, Mapping):
        return {m: float(value) for m in modules}
    groups = [g for g in value if g != REST]
    out: dict[str, float] = {}
    owner: dict[str, str] = {}
    used = dict.fromkeys(groups, 0)
    for m in modules:
        for g in groups:
            if matches(g, m):
                if m in owner:
                    raise ConfigError(f"groups {name}@{owner[m]} and {name}@{g} overlap: both contain module {m}")
                owner[m] = g
                used[g] += 1
        out[m] = float(value[owner[m]] if m in owner else value[REST])
    unused = [f"{name}@{g}" for g, n in used.items() if n == 0]
    if unused:
        raise ConfigError(f"group(s) {', '.join(unused)} match no adapted module (e.g. {modules[0] if modules else '-'})")
    return out


def partition(values: Mapping[str, float | Mapping[str, float]],
              modules: Iterable[str]) -> list[tuple[list[str], dict[str, float]]]:
    """Modules split by their resolved values: ``[(modules, {name: value}), ...]`` in first-module order."""
    modules = sorted(modules)
    per = {name: resolve(v, modules, name=name) for name, v in values.items()}
    parts: dict[tuple[float, ...], list[str]] = {}
    for m in modules:
        parts.setdefault(tuple(per[n][m] for n in values), []).append(m)
    return [(ms, dict(zip(values, key))) for key, ms in parts.items()]


def restrict(state: AdapterState, modules: Iterable[str]) -> AdapterState:
    """``state`` with only ``modules`` (tensors shared)."""
    modules = set(modules)
    return state.replace(params={m: state.params[m] for m in modules},
                         scaling={m: s for m, s in state.scaling.items() if m in modules})


def merge_by_group(
    adapters: Mapping[str, AdapterState],
    values: Mapping[str, float | Mapping[str, float]],
    fn: Callable[[Mapping[str, AdapterState], dict[str, float]], AdapterState],
) -> AdapterState:
    """``fn(adapters, {name: value})`` run once per distinct per-module value combination on the adapters
    restricted to those modules, the results joined (module-wise algebras only). One part calls ``fn`` on the
    adapters unchanged."""
    task = adapters["task"]
    parts = partition(values, task.params)
    if len(parts) == 1:
        return fn(adapters, parts[0][1])
    results = [(fn({r: restrict(s, ms) for r, s in adapters.items()}, scalars), ms, scalars)
               for ms, scalars in parts]
    first = results[0][0]
    params: dict[str, Any] = {}
    scaling: dict[str, float] = {}
    for out, _, _ in results:
        params.update(out.params)
        scaling.update(out.scaling)
    metadata = dict(first.metadata)
    metadata["merge"] = {"groups": [{"modules": len(ms), "values": scalars, **out.metadata.get("merge", {})}
                                    for out, ms, scalars in results]}
    return first.replace(params={m: params[m] for m in task.params},
                         scaling={m: scaling[m] for m in task.params if m in scaling}, metadata=metadata)
