"""Adapters on different modules, made comparable by adding each missing module at its identity.

The merge algebras of :mod:`adamergex.adapters` combine adapters module by module and refuse adapters whose
module sets differ (:meth:`~adamergex.adapters.base.AdapterType.check_compatible`). Where the difference is by
design (the world's positive control trains reference adapters on the embeddings and output layer only, and the
task adapter on the attention blocks only), :func:`pad_to_union` gives every adapter the union of the modules,
each added module at the identity of its type's algebra, so the model an adapter produces is unchanged:

* LoRA: ``ΔW = B·A = 0`` (rank-1 zero factors shaped like another adapter's factors of that module, scaling 1);
* (IA)³: ``l = 1`` (a ones vector shaped like another adapter's vector of that module).

The added modules join the PEFT config's ``target_modules`` (and ``feedforward_modules`` for (IA)³ when the
module was one there), so that the merged adapter attaches to them. Other adapter types are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .adapter_state import AdapterState
from .errors import IncompatibleAdaptersError

__all__ = ["pad_to_union"]


def _short(module: str) -> str:
    """The module's last name component (``...self_attn.q_proj`` → ``q_proj``), as PEFT target lists name it."""
    return module.rsplit(".", 1)[-1]


def _names(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key) or []
    return [value] if isinstance(value, str) else list(value)


def _zero_factors(group: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = ("lora_embedding_A", "lora_embedding_B") if "lora_embedding_A" in group else ("lora_A", "lora_B")
    a, b = group[names[0]], group[names[1]]
    return {names[0]: a.new_zeros((1, *a.shape[1:])), names[1]: b.new_zeros((b.shape[0], 1, *b.shape[2:]))}


def pad_to_union(states: Mapping[str, AdapterState]) -> dict[str, AdapterState]:
    """``states`` (by role), each given every module any of them adapts, added modules at the identity.

    States that already share one module set are returned unchanged (the same objects).

    Raises:
        IncompatibleAdaptersError: the states are of different types or of a type other than ``lora`` / ``ia3``.
    """
    kinds = {s.kind for s in states.values()}
    if len(kinds) > 1:
        raise IncompatibleAdaptersError(f"pad_to_union needs adapters of one type, got {sorted(kinds)}")
    union: dict[str, tuple[str, AdapterState]] = {}
    for role, s in states.items():
        for m in s.params:
            union.setdefault(m, (role, s))
    if all(set(s.params) == set(union) for s in states.values()):
        return dict(states)
    kind = next(iter(kinds))
    if kind not in ("lora", "ia3"):
        raise IncompatibleAdaptersError(
            f"pad_to_union knows the identity module of lora and ia3 adapters, not {kind!r}; train every role on "
            "the same modules instead")
    out: dict[str, AdapterState] = {}
    for role, s in states.items():
        missing = [m for m in union if m not in s.params]
        if not missing:
            out[role] = s
            continue
        params = dict(s.params)
        scaling = dict(s.scaling)
        config = dict(s.config)
        targets = _names(config, "target_modules")
        for m in missing:
            donor = union[m][1]
            group = donor.params[m]
            params[m] = _zero_factors(group) if kind == "lora" else {k: torch.ones_like(v) for k, v in group.items()}
            if kind == "lora":
                scaling[m] = 1.0
            name = _short(m)
            if isinstance(config.get("target_modules"), str):  # a regex: widen it by alternation
                config["target_modules"] = f"(?:{config['target_modules']})|(?:.*\\.{re.escape(name)}$)"
            elif name not in targets:
                targets.append(name)
                config["target_modules"] = targets
            if kind == "ia3" and name in _names(donor.config, "feedforward_modules"):
                ff = _names(config, "feedforward_modules")
                if name not in ff:
                    config["feedforward_modules"] = [*ff, name]
        out[role] = s.replace(params={m: params[m] for m in sorted(params)}, scaling=scaling, config=config,
                              metadata={**s.metadata, "padded_modules": missing})
    return out
