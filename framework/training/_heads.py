"""Heads of the models adapters are trained on: which modules form one, and a shared reference head.

Part of :mod:`adamergex.training`; import the public names from there. A head is every top-level child of the base
model other than the backbone (:func:`head_modules`). :class:`ReferenceHead` is a language-modelling head trained
once with the backbone frozen and shared by the reference adapters, so ``ref_target − ref_source`` carries no head
change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapter_state import tensors_sha256
from ..errors import AdapterFormatError, ConfigError
from ..models import unwrap

__all__ = ["ReferenceHead", "head_modules"]


def _backbone(base: nn.Module) -> nn.Module:
    prefix = getattr(base, "base_model_prefix", "")
    backbone = getattr(base, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module):
        raise ConfigError(f"{type(base).__name__} has no backbone attribute {prefix!r} (base_model_prefix)")
    return backbone


def head_modules(model: nn.Module) -> list[str]:
    """Names (inside the base model) of the modules a head consists of: every top-level child with parameters
    other than the backbone (``classifier``, ``score``, ``cls``, ``lm_head``), plus the backbone's pooler when a
    sequence classifier reads it (models without a pooler checkpoint get a new random one at every load)."""
    base = unwrap(model)
    prefix = getattr(base, "base_model_prefix", "")
    names = [n for n, child in base.named_children()
             if n != prefix and any(True for _ in child.parameters())]
    if type(base).__name__.endswith("ForSequenceClassification"):
        pooler = getattr(getattr(base, prefix, None), "pooler", None)
        if isinstance(pooler, nn.Module):
            names.append(f"{prefix}.pooler")
    return names


def _head_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Head parameters by name in the base model, leaving out weights tied to the input embeddings."""
    base = unwrap(model)
    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    tied = {id(p) for p in emb.parameters()} if emb is not None else set()
    out: dict[str, torch.Tensor] = {}
    for module_name in head_modules(base):
        for name, p in base.get_submodule(module_name).named_parameters():
            if id(p) not in tied:
                out[f"{module_name}.{name}"] = p
    return out


def _sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    return tensors_sha256((name, tensors[name]) for name in sorted(tensors))


@dataclass
class ReferenceHead:
    """A language-modelling head trained once with the encoder/decoder frozen, shared by reference adapters.

    ``tensors`` maps parameter names inside the base model (``cls.predictions.transform.dense.weight``) to
    values; weights tied to the input embeddings are not part of it.
    """

    base_model: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    FILE = "head.safetensors"
    META = "head.json"

    def fingerprint(self) -> str:
        """SHA-256 over names, dtypes, shapes and bytes of the tensors."""
        return _sha256(self.tensors)

    def apply(self, model: nn.Module) -> None:
        """Copy the head into ``model`` (the base model or a ``PeftModel`` over it) and freeze it.

        Raises:
            AdapterFormatError: a tensor has no place in the model, or a shape differs.
        """
        params = dict(unwrap(model).named_parameters())
        with torch.no_grad():
            for name, value in self.tensors.items():
                if name not in params:
                    raise AdapterFormatError(f"reference head tensor {name} has no place in {type(unwrap(model)).__name__}")
                if params[name].shape != value.shape:
                    raise AdapterFormatError(
                        f"reference head tensor {name} has shape {tuple(value.shape)}, the model "
                        f"{tuple(params[name].shape)}")
                params[name].copy_(value)
                params[name].requires_grad_(False)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``head.safetensors`` and ``head.json`` atomically."""
        from safetensors.torch import save_file

        from ..io import atomic_directory

        meta = {"base_model": self.base_model, "sha256": self.fingerprint(), **self.metadata}
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in self.tensors.items()}, str(tmp / self.FILE),
                      metadata={"format": "pt"})
            (tmp / self.META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ReferenceHead:
        """Read a head written by :meth:`save`. Raises :class:`AdapterFormatError` for a missing/corrupt one."""
        from safetensors.torch import load_file

        from ..io import read_json

        path = Path(directory)
        if not (path / cls.FILE).is_file():
            raise AdapterFormatError(f"{path} holds no {cls.FILE}; is it a reference head directory?")
        meta = read_json(path / cls.META)
        head = cls(base_model=str(meta.pop("base_model", "")), tensors=load_file(str(path / cls.FILE)), metadata=meta)
        recorded = meta.pop("sha256", None)
        if recorded is not None and recorded != head.fingerprint():
            raise AdapterFormatError(f"{path}: head tensors do not match the SHA-256 recorded in {cls.META}")
        head.metadata["source"] = str(path)
        return head
