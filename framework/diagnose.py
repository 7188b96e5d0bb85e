"""Does the language divergence depend on the task? The assumption AdaMergeX rests on, measured.

AdaMergeX (arXiv 2402.18913) adds ``ref_l ⊖ ref_src`` to a task adapter trained in the source language, which is
right exactly when the task adapter's own divergence ``upper_l ⊖ task_src`` (``upper_l``: the task adapter trained
in ``l``) is the reference adapters' divergence. :func:`diagnose` measures how far that holds: in the adapter
type's merge space (:meth:`AdapterType.to_space`: ``delta`` ``ΔW = s·B·A`` for additive types, ``log l`` for
(IA)³, ``delta`` and ``log_magnitude`` for DoRA, each component on its own) it reports the cosine

    cos(u, v) = ⟨u, v⟩ / (‖u‖·‖v‖),   u = T1_l − T1_src,   v = T2_l − T2_src,

between the divergences of two tasks ``T1 ≠ T2`` (the reference counts as a task) to the same target ``l``
(``signal``), per layer and pooled (all modules as one vector), next to null baselines that share no adapter
either: different target languages ``l1 ≠ l2`` (``null_language``), and a seed-to-seed difference
``T1_{k,s} − T1_{k,s'}`` in place of ``u`` (``null_seed``); ``same_task_seeds`` compares one task's divergence
from two disjoint seeds (how reproducible a divergence is at all). A cell with several seeds enters the signal as
its seed mean (a point of the merge space). All four are listed in :data:`COMPARISONS`.

**Factor space.** No ``out×in`` matrix is formed for low-rank types: with the scaling folded into ``B``,

    ⟨B₁A₁, B₂A₂⟩_F = tr((B₁ᵀB₂)(A₂A₁ᵀ)) = Σ ((B₁ᵀB₂) ⊙ (A₁A₂ᵀ)),

so one module's Gram matrix ``G[i, j] = ⟨ΔWᵢ, ΔWⱼ⟩`` over all ``N`` inputs costs two ``(ΣR)×(ΣR)`` products of
the concatenated factors. Every divergence is a coefficient vector ``c`` over the inputs (a difference of low-rank
updates is the concatenated low-rank product ``[B₁ | −B₂]·[A₁; A₂]``), so ``⟨u, v⟩ = c_uᵀ G c_v``; a layer's
(or the pooled) Gram is the sum of its modules'. LoHa and LoKr enter through their exact LoRA factors
(:meth:`LycorisAdapter.lora_factors`, of product rank); (IA)³ log vectors and DoRA log magnitudes are small and
dense. A module whose factors are no smaller than its dense update (``R·(out + in) ≥ out·in``, e.g. a merge
output of full rank) is computed dense. Everything runs in float64.

**Resolution.** Gram entries carry rounding ``~ε·‖xᵢ‖‖xⱼ‖``, so a divergence that is a small fraction
``δ = ‖u‖ / Σ|cᵢ|‖xᵢ‖`` of the adapters it separates is resolved to ``~ε/δ²``. Each comparison records both
``δ``; a cosine with a ``δ`` below :data:`RESOLUTION` (error then ``≳ 1e-4``) or a zero divergence is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal, Union

import torch

from .adapter_state import AdapterState
from .adapters._lycoris import LycorisAdapter
from .adapters.dora import DoraAdapter
from .adapters.ia3 import ZERO_TOLERANCE
from .adapters.lora import LoraAdapter, _factor_names
from .errors import ConfigError, IncompatibleAdaptersError, NumericalError
from .groups import layer_index, restrict
from .registry import ADAPTERS

__all__ = ["COMPARISONS", "RESOLUTION", "ROLES", "Design", "LabeledAdapter", "check_design", "diagnose", "group_of",
           "module_gram", "space_factors"]

Role = Literal["task", "reference"]
By = Literal["layer", "module"]
Factor = Union[tuple[torch.Tensor, torch.Tensor], torch.Tensor]
"""One merge-space component of one module: low-rank ``(B (out, R), A (R, in))`` or a dense float64 tensor."""

ROLES: tuple[str, ...] = ("task", "reference")
RESOLUTION = 1e-6
"""Smallest relative divergence size ``δ`` whose cosine is reported (module docstring, "Resolution")."""
OTHER = "other"
"""Group of modules outside the layer stack (no layer index: embeddings, heads)."""
COMPARISONS: dict[str, str] = {
    "signal": "two tasks' divergences to one target: cos(T1_l − T1_src, T2_l − T2_src)",
    "null_language": "two tasks' divergences to different targets: cos(T1_l1 − T1_src, T2_l2 − T2_src), l1 ≠ l2",
    "null_seed": "a seed-to-seed difference against another task's divergence: cos(T1_{k,s} − T1_{k,s'}, "
                 "T2_l − T2_src)",
    "same_task_seeds": "one task's divergence from two disjoint seeds: cos(T_{l,s} − T_{src,s}, "
                       "T_{l,s'} − T_{src,s'})",
}
"""Comparison type → what it measures (the signal, then its baselines)."""
_MISSING = {
    "null_language": "needs two target languages (besides the source) with adapters of different tasks",
    "null_seed": "needs one task and language with adapters of two seeds",
    "same_task_seeds": "needs one task with the same two seeds in the source and in a target language",
}
SPACES = {
    "delta": "ΔW = s·B·A (out × in), Frobenius inner product, computed from the factors",
    "log": "log l of the (IA)³ vectors",
    "log_magnitude": "log m of the DoRA magnitudes",
}


@dataclass(frozen=True)
class LabeledAdapter:
    """One input of :func:`diagnose`: an adapter and what it was trained on."""

    state: AdapterState
    task: str
    """The task (or reference corpus) it was trained on; the reference adapters form a task of their own."""
    language: str
    seed: str | None = None
    """Training seed; needed to tell apart several adapters of one task and language."""
    role: Role = "task"
    """``task`` (a task adapter: ``task_src`` or ``upper_l``) or ``reference`` (``ref_l``, ``ref_src``)."""
    name: str = ""
    """What messages call it (its path)."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"adapter {self.label}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        for what, value in (("task", self.task), ("language", self.language)):
            if not value:
                raise ConfigError(f"adapter {self.name or '?'}: {what} must be a non-empty name, got {value!r}")

    @property
    def label(self) -> str:
        return self.name or f"{self.role}:{self.task}:{self.language}" + (f":{self.seed}" if self.seed else "")


# -- merge space in factors --------------------------------------------------------------------------------------
def space_factors(state: AdapterState, module: str) -> dict[str, Factor]:
    """One module of ``state`` as a point of its type's merge space, per component of :meth:`to_space`: low-rank
    float64 factors ``(s·B, A)`` for LoRA, DoRA's direction, LoHa and LoKr (their exact LoRA); dense float64
    tensors otherwise ((IA)³ ``log l``, DoRA ``log m``, any other type's ``to_space``).

    Raises:
        NumericalError: a logarithm of an entry ``≤`` the (IA)³/DoRA tolerance.
        ConfigError: the type has no merge space.
    """
    typ = ADAPTERS.get(state.kind)
    group = state.params[module]
    scale = float(state.scaling.get(module, 1.0))
    if isinstance(typ, (LoraAdapter, DoraAdapter)):
        a_name, b_name = _factor_names(group)
        a, b = group[a_name], group[b_name]
        out: dict[str, Factor] = {
            "delta": (scale * b.reshape(b.shape[0], -1).to(torch.float64), a.reshape(a.shape[0], -1).to(torch.float64))
        }
        if isinstance(typ, DoraAdapter):
            # The same check as DoraAdapter.to_space, which would also form the dense ΔV we avoid here.
            m = group["magnitude"].to(torch.float64)
            if bool((m <= ZERO_TOLERANCE).any()):
                raise NumericalError(f"module {module}: DoRA magnitudes must be > {ZERO_TOLERANCE} to take their log, "
                                     f"got {int((m <= ZERO_TOLERANCE).sum())} below (min {float(m.min()):.3g})")
            out["log_magnitude"] = m.log()
        return out
    if isinstance(typ, LycorisAdapter):
        b, a = typ.lora_factors(group)
        return {"delta": (scale * b, a)}
    return {c: t.to(torch.float64) for c, t in typ.to_space(restrict(state, [module]))[module].items()}


def _dense(f: Factor) -> torch.Tensor:
    return (f[0] @ f[1]).reshape(-1) if isinstance(f, tuple) else f.reshape(-1)


def _shape(f: Factor) -> tuple[int, ...]:
    return (int(f[0].shape[0]), int(f[1].shape[1])) if isinstance(f, tuple) else tuple(f.shape)


def module_gram(factors: Sequence[Factor]) -> tuple[torch.Tensor, bool]:
    """The ``(N, N)`` float64 Gram matrix ``G[i, j] = ⟨xᵢ, xⱼ⟩`` of one component of one module over ``N`` inputs
    of one shape, and whether it was computed from low-rank factors (module docstring); inputs of one shape."""
    low_rank = all(isinstance(f, tuple) for f in factors)
    if low_rank:
        out, in_ = _shape(factors[0])
        low_rank = all(f[0].shape[1] * (out + in_) < out * in_ for f in factors if isinstance(f, tuple))
    if not low_rank:
        v = torch.stack([_dense(f) for f in factors])
        return v @ v.T, False
    bs = torch.cat([f[0] for f in factors if isinstance(f, tuple)], dim=1)  # (out, ΣR)
    as_ = torch.cat([f[1] for f in factors if isinstance(f, tuple)], dim=0)  # (ΣR, in)
    p = (bs.T @ bs) * (as_ @ as_.T)  # (ΣR, ΣR): entry (a, b) = (BᵢᵀBⱼ)[a, b]·(AᵢAⱼᵀ)[a, b]
    ranks = [int(f[0].shape[1]) for f in factors if isinstance(f, tuple)]
    owner = torch.repeat_interleave(torch.arange(len(ranks)), torch.tensor(ranks))
    s = torch.nn.functional.one_hot(owner, len(ranks)).to(torch.float64)  # (ΣR, N): rank column → input
    return s.T @ p @ s, True


def group_of(module: str, by: By) -> str:
    """The group a module's numbers are summed into: its layer index (``"other"`` outside the layer stack), or the
    module name itself."""
    if by == "module":
        return module
    index = layer_index(module)
    return OTHER if index is None else str(index)


def _group_order(group: str) -> tuple[int, int, str]:
    index = layer_index(group) if not group.isdigit() else int(group)
    return (1, 0, group) if index is None else (0, index, group)


def _grams(adapters: Sequence[LabeledAdapter], by: By) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Per component, per group the summed Gram matrix (``"*"``: pooled); and the modules computed dense."""
    grams: dict[str, dict[str, torch.Tensor]] = {}
    dense: list[str] = []
    for module in sorted(adapters[0].state.params):
        per_input = [space_factors(a.state, module) for a in adapters]
        for component in per_input[0]:
            factors = [p[component] for p in per_input]
            for a, f in zip(adapters, factors):
                if _shape(f) != _shape(factors[0]):
                    raise IncompatibleAdaptersError(
                        f"module {module}: merge-space component {component!r} must have one shape in every adapter; "
                        f"{adapters[0].label} has {_shape(factors[0])}, {a.label} has {_shape(f)}")
            gram, low_rank = module_gram(factors)
            if not low_rank and isinstance(factors[0], tuple):
                dense.append(module)
            per = grams.setdefault(component, {})
            for key in (group_of(module, by), "*"):
                per[key] = per[key] + gram if key in per else gram
    return grams, dense


# -- inputs and comparisons -------------------------------------------------------------------------------------
Design = tuple[str, str, Union[str, None], str, str]
"""What one input was trained on, without its tensors: ``(task, language, seed, role, name)``."""


def check_design(design: Sequence[Design], source_language: str) -> dict[tuple[str, str], list[int]]:
    """Check that the inputs allow the measurement (before any adapter is read) and return the cells
    ``(task, language) → input indices``, in input order.

    Raises:
        ConfigError: no inputs, an unknown role, a task name in two roles, a duplicate (task, language, seed),
            fewer than two tasks or languages, a task without a source-language adapter, or no target language
            with adapters of two tasks.
    """
    if not design:
        raise ConfigError("diagnose needs adapters (--adapter/--manifest), got none")
    roles: dict[str, str] = {}
    cells: dict[tuple[str, str], list[int]] = {}
    seen: dict[tuple[str, str, str | None], str] = {}
    for i, (task, language, seed, role, name) in enumerate(design):
        if role not in ROLES:
            raise ConfigError(f"adapter {name}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if roles.setdefault(task, role) != role:
            raise ConfigError(f"task {task!r} is given both as role {roles[task]!r} and as {role!r} ({name}); one "
                              "name is one task")
        key = (task, language, seed)
        if key in seen:
            raise ConfigError(f"{name} and {seen[key]} are both task {task!r}, language {language!r}, seed "
                              f"{seed!r}; give each adapter of one task and language its own seed")
        seen[key] = name
        cells.setdefault((task, language), []).append(i)
    tasks = sorted(roles)
    if len(tasks) < 2:
        raise ConfigError(f"diagnose needs adapters of at least two tasks (the reference counts as one), got "
                          f"{len(tasks)}: {', '.join(tasks)}")
    languages = sorted({lang for _, lang in cells})
    if len(languages) < 2:
        raise ConfigError(f"diagnose needs adapters in at least two languages (the source and a target), got "
                          f"{', '.join(languages)}")
    for task in tasks:
        if (task, source_language) not in cells:
            given = sorted(lang for t, lang in cells if t == task)
            raise ConfigError(f"task {task!r} has no adapter in the source language {source_language!r} "
                              f"(--source-language); its divergences T_l − T_src need one (it has {', '.join(given)})")
    if not any(sum((t, lang) in cells for t in tasks) >= 2 for lang in languages if lang != source_language):
        raise ConfigError(f"diagnose needs one target language with adapters of two tasks (besides the source "
                          f"{source_language!r}); per task: "
                          + "; ".join(f"{t}: {', '.join(sorted(lg for tt, lg in cells if tt == t))}" for t in tasks))
    return cells


def _check_states(adapters: Sequence[LabeledAdapter]) -> None:
    """One adapter type, base model and set of modules (shapes are checked module by module in :func:`_grams`)."""
    first = adapters[0]
    for a in adapters[1:]:
        if a.state.kind != first.state.kind:
            raise IncompatibleAdaptersError(f"diagnose needs adapters of one type; {first.label} is "
                                            f"{first.state.kind!r}, {a.label} is {a.state.kind!r}")
        if a.state.base_model != first.state.base_model:
            raise IncompatibleAdaptersError(f"diagnose needs adapters of one base model; {first.label} was trained on "
                                            f"{first.state.base_model!r}, {a.label} on {a.state.base_model!r}")
        if set(a.state.params) != set(first.state.params):
            only = sorted(set(first.state.params) ^ set(a.state.params))[:3]
            raise IncompatibleAdaptersError(f"diagnose needs adapters of the same modules; {first.label} and {a.label} "
                                            f"differ in {only}")


class _Divergences:
    """Divergences as coefficient vectors over the inputs, with their labels."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rows: list[torch.Tensor] = []
        self.labels: list[dict[str, Any]] = []

    def add(self, plus: Sequence[int], minus: Sequence[int], label: dict[str, Any]) -> int:
        c = torch.zeros(self.n, dtype=torch.float64)
        c[list(plus)] += 1.0 / len(plus)
        c[list(minus)] -= 1.0 / len(minus)
        self.rows.append(c)
        self.labels.append(label)
        return len(self.rows) - 1


def _pair(roles: Mapping[str, str], t1: str, t2: str) -> str:
    refs = sorted(roles[t] == "reference" for t in (t1, t2))
    return {(False, False): "task_vs_task", (False, True): "task_vs_reference",
            (True, True): "reference_vs_reference"}[(refs[0], refs[1])]


def _comparisons(adapters: Sequence[LabeledAdapter], cells: dict[tuple[str, str], list[int]],
                 src: str) -> tuple[_Divergences, list[dict[str, Any]]]:
    """Every comparison of :data:`COMPARISONS` the inputs allow: ``{"type", "pair", "a", "b"}`` (divergence ids)."""
    roles = {a.task: a.role for a in adapters}
    tasks = sorted(roles)
    targets = sorted({lang for _, lang in cells} - {src})
    seeds = {key: [adapters[i].seed for i in idx] for key, idx in cells.items()}
    divs = _Divergences(len(adapters))
    lang_div = {(t, lang): divs.add(cells[t, lang], cells[t, src], {"task": t, "language": lang, "minus": src,
                                                                    "seeds": seeds[t, lang], "minus_seeds": seeds[t, src]})
                for t in tasks for lang in targets if (t, lang) in cells}
    out: list[dict[str, Any]] = []
    for t1, t2 in combinations(tasks, 2):
        pair = _pair(roles, t1, t2)
        for l1 in targets:
            for l2 in targets:
                if (t1, l1) in lang_div and (t2, l2) in lang_div:
                    out.append({"type": "signal" if l1 == l2 else "null_language", "pair": pair,
                                "a": lang_div[t1, l1], "b": lang_div[t2, l2]})
    for (t1, k), idx in sorted(cells.items()):
        for i, j in combinations(idx, 2):
            d = divs.add([i], [j], {"task": t1, "language": k, "seeds": [adapters[i].seed],
                                    "minus": k, "minus_seeds": [adapters[j].seed]})
            for (t2, lang), v in sorted(lang_div.items()):
                if t2 != t1:
                    out.append({"type": "null_seed", "pair": _pair(roles, t1, t2), "a": d, "b": v})
    for t in tasks:
        for lang in targets:
            if (t, lang) not in cells:
                continue
            by_seed = {adapters[i].seed: i for i in cells[t, lang]}
            src_seed = {adapters[i].seed: i for i in cells[t, src]}
            shared = sorted(s for s in by_seed if s is not None and s in src_seed)
            per_seed = {s: divs.add([by_seed[s]], [src_seed[s]], {"task": t, "language": lang, "minus": src,
                                                                  "seeds": [s], "minus_seeds": [s]}) for s in shared}
            for s1, s2 in combinations(shared, 2):
                out.append({"type": "same_task_seeds", "pair": "same_task", "a": per_seed[s1], "b": per_seed[s2]})
    order = list(COMPARISONS)
    return divs, sorted(out, key=lambda c: (order.index(c["type"]), c["pair"]))  # stable: input order within


# -- the measurement --------------------------------------------------------------------------------------------
class _Forms:
    """The inner products of every pair of divergences under one Gram matrix, and their sizes ``δ``."""

    def __init__(self, gram: torch.Tensor, coeffs: torch.Tensor) -> None:
        self.q = coeffs @ gram @ coeffs.T  # (K, K): ⟨u_a, u_b⟩ for every pair of divergences
        self.norm = self.q.diagonal().clamp_min(0).sqrt()
        scale = coeffs.abs() @ gram.diagonal().clamp_min(0).sqrt()  # Σ|cᵢ|‖xᵢ‖ ≥ ‖u‖ (triangle inequality)
        self.relative = torch.where(scale > 0, self.norm / scale.clamp_min(1e-300), torch.zeros_like(scale))

    def cosine(self, a: int, b: int) -> float | None:
        if min(float(self.relative[a]), float(self.relative[b])) < RESOLUTION:
            return None
        return float(self.q[a, b] / (self.norm[a] * self.norm[b]))

    def record(self, a: int, b: int) -> dict[str, float | None]:
        return {"cosine": self.cosine(a, b), "norm_a": float(self.norm[a]), "norm_b": float(self.norm[b]),
                "relative_a": float(self.relative[a]), "relative_b": float(self.relative[b])}


def _stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(got) / len(got)
    std = math.sqrt(sum((v - mean) ** 2 for v in got) / (len(got) - 1)) if len(got) > 1 else 0.0
    return {"n": len(got), "mean": mean, "std": std, "min": min(got), "max": max(got)}


def diagnose(adapters: Sequence[LabeledAdapter], source_language: str, *, by: By = "layer") -> dict[str, Any]:
    """The cosines between language divergences (module docstring) as a JSON-able record.

    Args:
        adapters: At least two tasks (the reference adapters count as one), each with an adapter in
            ``source_language`` and at least one in a target language shared with another task; one adapter
            type, base model and set of modules; several seeds of one task and language allowed (and needed for
            the seed baselines).
        source_language: The language the divergences start from (``T_l − T_src``).
        by: Group modules by layer index (``"layer"``; modules outside the layer stack form ``"other"``) or give
            every module its own group (``"module"``).

    Returns:
        ``{"kind", "base_model", "source_language", "grouping", "tasks" {task: role}, "languages", "groups",
        "modules_per_group", "dense_modules", "adapters" [{name, role, task, language, seed, sha256}],
        "components": {component: {"space", "comparisons", "summary"}}}``. A comparison is ``{"type", "pair",
        "a", "b" (labels), "pooled" {cosine, norm_a, norm_b, relative_a, relative_b}, "per_group" {group:
        cosine}}``; ``summary`` has one row per (type, pair) with ``n``, ``pooled`` and ``per_group`` statistics
        (mean, std, min, max) and, for a baseline the inputs cannot give, ``missing`` saying what it needs.

    Raises:
        ConfigError: fewer than two tasks or languages, a task without a source-language adapter, no shared target
            language, duplicate (task, language, seed), a task name in two roles, or ``by`` unknown.
        IncompatibleAdaptersError: adapters of different types, base models, modules or shapes.
    """
    if by not in ("layer", "module"):
        raise ConfigError(f"by must be 'layer' or 'module', got {by!r}")
    cells = check_design([(a.task, a.language, a.seed, a.role, a.label) for a in adapters], source_language)
    _check_states(adapters)
    divs, comparisons = _comparisons(adapters, cells, source_language)
    grams, dense = _grams(adapters, by)
    coeffs = torch.stack(divs.rows)
    modules = sorted(adapters[0].state.params)
    groups = sorted({group_of(m, by) for m in modules}, key=_group_order)
    components: dict[str, Any] = {}
    for component, per_group in grams.items():
        pooled = _Forms(per_group["*"], coeffs)
        forms = {g: _Forms(per_group[g], coeffs) for g in groups}
        rows = [{"type": c["type"], "pair": c["pair"], "a": divs.labels[c["a"]], "b": divs.labels[c["b"]],
                 "pooled": pooled.record(c["a"], c["b"]),
                 "per_group": {g: forms[g].cosine(c["a"], c["b"]) for g in groups}} for c in comparisons]
        components[component] = {"space": SPACES.get(component, component), "comparisons": rows,
                                  "summary": _summary(rows, groups)}
    roles = {a.task: a.role for a in adapters}
    return {
        "kind": adapters[0].state.kind,
        "base_model": adapters[0].state.base_model,
        "source_language": source_language,
        "grouping": by,
        "resolution": RESOLUTION,
        "comparison_types": dict(COMPARISONS),
        "tasks": dict(sorted(roles.items())),
        "languages": sorted({a.language for a in adapters}),
        "groups": groups,
        "modules_per_group": {g: sum(group_of(m, by) == g for m in modules) for g in groups},
        "dense_modules": dense,
        "adapters": [{"name": a.label, "role": a.role, "task": a.task, "language": a.language, "seed": a.seed,
                      "sha256": a.state.fingerprint()} for a in adapters],
        "components": components,
    }


def _summary(rows: list[dict[str, Any]], groups: list[str]) -> list[dict[str, Any]]:
    """One row per (type, pair) present, then a ``missing`` row for each baseline type absent."""
    keys = sorted({(r["type"], r["pair"]) for r in rows}, key=lambda k: (list(COMPARISONS).index(k[0]), k[1]))
    out = []
    for kind, pair in keys:
        sel = [r for r in rows if (r["type"], r["pair"]) == (kind, pair)]
        out.append({"type": kind, "pair": pair, "n": len(sel),
                    "pooled": _stats([r["pooled"]["cosine"] for r in sel]),
                    "per_group": {g: _stats([r["per_group"][g] for r in sel]) for g in groups}})
    present = {k for k, _ in keys}
    out += [{"type": k, "pair": None, "n": 0, "missing": why} for k, why in _MISSING.items() if k not in present]
    return out
