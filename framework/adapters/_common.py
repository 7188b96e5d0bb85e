"""Steps shared by the merging adapter types: collecting like terms and keeping the task's saved modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..adapter_state import AdapterState
from ..errors import ConfigError, IncompatibleAdaptersError

__all__ = ["collect_terms", "identity_factors", "same_params", "space_delta", "with_task_parts"]


def same_params(a: AdapterState, b: AdapterState) -> bool:
    """True when two states hold bitwise-identical adapter tensors and scalings (metadata ignored)."""
    if a is b:
        return True
    if a.scaling != b.scaling or a.params.keys() != b.params.keys():
        return False
    for module, group in a.params.items():
        other = b.params[module]
        if group.keys() != other.keys():
            return False
        for name, t in group.items():
            o = other[name]
            if t.shape != o.shape or t.dtype != o.dtype or not torch.equal(t, o):
                return False
    return True


def collect_terms(terms: Sequence[tuple[AdapterState, float]]) -> list[tuple[AdapterState, float]]:
    """Collect like terms of a weighted sum and drop zero weights: ``x·w₁ + x·w₂ = x·(w₁ + w₂)``.

    Identical inputs (same tensors) are one parameter vector, so their weights add before any type-specific
    rule applies. This is what makes ``t = 0`` and identical reference adapters return the task adapter
    *exactly* rather than up to rounding.
    """
    if not terms:
        raise ConfigError("a merge needs at least one (adapter, weight) term")
    out: list[tuple[AdapterState, float]] = []
    for state, weight in terms:
        for i, (seen, w) in enumerate(out):
            if same_params(seen, state):
                out[i] = (seen, w + float(weight))
                break
        else:
            out.append((state, float(weight)))
    return [(s, w) for s, w in out if w != 0.0]


def with_task_parts(result: AdapterState, task: AdapterState, provenance: Mapping[str, Any]) -> AdapterState:
    """``result`` carrying the task adapter's base model, saved modules (heads) and metadata.

    Modules saved whole (PEFT ``modules_to_save``) are never merged: the task adapter's are kept and the
    others' dropped, and the provenance records it.
    """
    config = dict(result.config)
    config["modules_to_save"] = task.config.get("modules_to_save")
    metadata = {k: v for k, v in task.metadata.items() if k not in ("source", "merge")}
    metadata["merge"] = dict(provenance)
    return result.replace(
        base_model=task.base_model, saved_modules=dict(task.saved_modules), config=config, metadata=metadata
    )


def identity_factors(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact LoRA factors ``(B (out, k), A (k, in))`` of a dense ``(out, in)`` update with ``B·A = ΔW`` bit for
    bit and ``k = min(out, in)``: ``B = I, A = ΔW`` when ``out ≤ in``, else ``B = ΔW, A = I``."""
    out, in_ = delta.shape
    if out <= in_:
        return torch.eye(out, dtype=delta.dtype, device=delta.device), delta.clone()
    return delta.clone(), torch.eye(in_, dtype=delta.dtype, device=delta.device)


def space_delta(space: Mapping[str, Mapping[str, torch.Tensor]], module: str, component: str,
                shape: tuple[int, ...], where: str) -> torch.Tensor:
    """``space[module][component]`` in float64, checked to have ``shape`` (``where`` names the adapter type)."""
    got = (space.get(module) or {}).get(component)
    if got is None:
        raise IncompatibleAdaptersError(f"{where}: module {module} needs a {component!r} component in the merge "
                                        f"space, got {sorted(space.get(module) or {})}")
    if tuple(got.shape) != tuple(shape):
        raise IncompatibleAdaptersError(
            f"{where}: module {module} {component!r} must have shape {tuple(shape)}, got {tuple(got.shape)}")
    return got.to(torch.float64)
