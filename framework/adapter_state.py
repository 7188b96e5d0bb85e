"""``AdapterState``: one trained adapter as plain tensors, independent of any live model.

Strategies read and return states; they never touch models. A state holds

* ``kind``: the adapter type's registry name (``lora``, ``ia3``...), which owns the merge algebra;
* ``base_model``: the base model it was trained on (``base_model_name_or_path`` of the PEFT config);
* ``params``: per adapted module (the PEFT module path, e.g. ``base_model.model.model.layers.0.self_attn.q_proj``)
  a dict of named tensors whose names the adapter type defines (LoRA: ``A`` ``(r, in)`` and ``B`` ``(out, r)``;
  (IA)³: ``l``);
* ``scaling``: per module the factor applied to the adapter's output (LoRA ``alpha/r`` or rsLoRA
  ``alpha/sqrt(r)``); empty for types without one;
* ``config``: the PEFT ``adapter_config.json`` contents (a JSON-able dict);
* ``saved_modules``: tensors saved whole beside the adapter (PEFT ``modules_to_save``: classifier and LM heads),
  keyed by their PEFT state-dict key. They are never merged;
* ``metadata``: JSON-able facts: ``language``, ``task``, training details, merge provenance.

A state is treated as immutable by the framework: operations return new states.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import NumericalError

__all__ = ["AdapterState", "tensors_sha256"]

BYTES_KEY = "adamergex_state"
"""safetensors header key of :meth:`AdapterState.to_bytes` that holds the fields other than tensors."""


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header: 8-byte little-endian length, then JSON)."""
    if len(blob) < 8:
        raise ValueError(f"{len(blob)} bytes is shorter than a safetensors header")
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8: 8 + size])
    return dict(header.get("__metadata__") or {})


@dataclass
class AdapterState:
    """One adapter as named tensors per module plus its type, base model and metadata (see module docs)."""

    kind: str
    base_model: str
    params: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    scaling: dict[str, float] = field(default_factory=dict)
    saved_modules: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # -- convenience ----------------------------------------------------------------------------------------
    @property
    def language(self) -> str | None:
        """Language the adapter was trained on, if recorded."""
        lang = self.metadata.get("language")
        return str(lang) if lang is not None else None

    @property
    def task(self) -> str | None:
        """Task the adapter was trained on, if recorded."""
        task = self.metadata.get("task")
        return str(task) if task is not None else None

    @property
    def modules(self) -> list[str]:
        """Adapted module paths, sorted."""
        return sorted(self.params)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of the state as ``(qualified name, tensor)``, in a stable order."""
        for module in sorted(self.params):
            for name in sorted(self.params[module]):
                yield f"{module}:{name}", self.params[module][name]
        for key in sorted(self.saved_modules):
            yield f"saved:{key}", self.saved_modules[key]

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the adapter parameters (of the first module)."""
        for _, t in self.tensors():
            return t.dtype
        return torch.float32

    @property
    def num_parameters(self) -> int:
        """Number of adapter parameters (saved modules excluded)."""
        return sum(t.numel() for group in self.params.values() for t in group.values())

    def replace(self, **changes: Any) -> AdapterState:
        """A shallow copy with ``changes`` applied (tensors are shared, dicts copied)."""
        fields: dict[str, Any] = {
            "kind": self.kind,
            "base_model": self.base_model,
            "params": {m: dict(g) for m, g in self.params.items()},
            "config": copy.deepcopy(self.config),
            "scaling": dict(self.scaling),
            "saved_modules": dict(self.saved_modules),
            "metadata": copy.deepcopy(self.metadata),
        }
        fields.update(changes)
        return AdapterState(**fields)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> AdapterState:
        """Copy with adapter parameters moved/cast (saved modules keep their dtype, follow the device)."""
        params = {m: {n: t.to(device=device, dtype=dtype) for n, t in g.items()} for m, g in self.params.items()}
        saved = {k: t.to(device=device) for k, t in self.saved_modules.items()}
        return self.replace(params=params, saved_modules=saved)

    # -- bytes (between processes) ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole state as one safetensors blob: tensors by :meth:`tensors` name, the other fields as JSON in
        the header (key ``adamergex_state``). :meth:`from_bytes` inverts it bit for bit; no pickle is involved,
        so a state can cross a process boundary (or a network) as data, never as code."""
        from safetensors.torch import save

        fields = {"kind": self.kind, "base_model": self.base_model, "config": self.config,
                  "scaling": self.scaling, "metadata": self.metadata,
                  "params": {m: sorted(g) for m, g in self.params.items()}, "saved_modules": sorted(self.saved_modules)}
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in self.tensors()}
        return save(tensors, metadata={BYTES_KEY: json.dumps(fields)})

    @classmethod
    def from_bytes(cls, blob: bytes) -> AdapterState:
        """The state written by :meth:`to_bytes`.

        Raises:
            AdapterFormatError: ``blob`` is not such a safetensors blob (saying what is wrong).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        from .errors import AdapterFormatError

        try:
            tensors = load(blob)
            header = _safetensors_metadata(blob)
        except (SafetensorError, ValueError) as exc:
            raise AdapterFormatError(
                f"AdapterState.from_bytes needs a blob from AdapterState.to_bytes: {exc}") from None
        if BYTES_KEY not in header:
            raise AdapterFormatError(f"AdapterState.from_bytes needs a blob from AdapterState.to_bytes; its header "
                                     f"has no {BYTES_KEY!r} key (keys: {sorted(header)})")
        fields = json.loads(header[BYTES_KEY])
        params = {m: {n: tensors[f"{m}:{n}"] for n in names} for m, names in fields.pop("params").items()}
        saved = {k: tensors[f"saved:{k}"] for k in fields.pop("saved_modules")}
        return cls(params=params, saved_modules=saved, **fields)

    # -- checks and identity --------------------------------------------------------------------------------
    def check_finite(self, where: str = "adapter") -> None:
        """Raise :class:`NumericalError` naming the first module whose tensors hold NaN or Inf."""
        for name, t in self.tensors():
            # One pass: a float64 sum is finite iff every entry is (float32/bf16 values cannot overflow it);
            # only a non-finite sum pays for the exact element-wise check.
            if not t.is_floating_point() or bool(torch.isfinite(t.sum(dtype=torch.float64))):
                continue
            if not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise NumericalError(f"{where}: tensor {name} must be finite, got {bad} NaN/Inf value(s)")
        for module, s in self.scaling.items():
            if not math.isfinite(s):
                raise NumericalError(f"{where}: scaling of module {module} must be finite, got {s}")

    def fingerprint(self) -> str:
        """SHA-256 over kind, base model, scaling and every tensor's dtype, shape and bytes (hex digest).

        Recorded in merge provenance so a merged adapter names exactly which inputs produced it.
        """
        header = json.dumps([self.kind, self.base_model, sorted(self.scaling.items())]).encode()
        return tensors_sha256(self.tensors(), header=header)

    def summary(self) -> dict[str, Any]:
        """Small JSON-able description (for provenance and CLI output)."""
        return {
            "kind": self.kind,
            "base_model": self.base_model,
            "language": self.language,
            "task": self.task,
            "modules": len(self.params),
            "parameters": self.num_parameters,
            "sha256": self.fingerprint(),
        }


def tensors_sha256(tensors: Iterable[tuple[str, torch.Tensor]], *, header: bytes = b"") -> str:
    """SHA-256 (hex) of ``header`` then each ``(name, tensor)`` in the order given: its name, dtype, shape and
    bytes. The one tensor fingerprint of the framework (adapters, shared heads)."""
    h = hashlib.sha256(header)
    for name, t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            data: Any = t.reshape(-1).view(torch.uint8).numpy()
            h.update(data)  # the buffer is hashed in place, no copy
    return h.hexdigest()
