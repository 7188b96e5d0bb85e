"""Pure tensor steps shared by the sparsifying strategies (``ties``, ``dare``, ``dare_ties``), and their common
driver over the AdaMergeX task vectors.

Every step works on float64 tensors of the adapter type's merge space (``AdapterType.to_space``: LoRA ``ΔW``,
(IA)³ ``log l``), one module component at a time, as PEFT's ``peft/utils/merge_utils.py`` and mergekit do per
tensor. The merged terms are the two task vectors of the cross-lingual setting,

    τ_task = w·to_space(task),    τ_lang = t·(to_space(ref_target) − to_space(ref_source)),

(``t`` possibly per module group, see :mod:`adamergex.groups`), so that with no pruning and a plain sum the
result is AdaMergeX's ``task ⊕ t·(ref_target ⊖ ref_source)`` in its exact (LoRA ΔW / (IA)³ log) form. The weights
are applied *before* trimming and sign election: they are part of the vectors (``t`` is how much of the language
gap is carried), which differs from PEFT's ``ties``, where the sign is elected on unweighted tensors.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from adamergex.adapter_state import AdapterState
from adamergex.adapters._common import same_params, with_task_parts
from adamergex.errors import ConfigError
from adamergex.groups import resolve, restrict
from adamergex.registry import ADAPTERS
from adamergex.strategy import StrategyConfig, param

__all__ = ["SparseMergeConfig", "disjoint_mean", "drop_and_rescale", "elect_sign", "sparse_merge", "trim_top_k"]

Prune = Literal["magnitude", "random"]
SignMethod = Literal["total", "frequency"]


def trim_top_k(x: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim: keep the ``k = max(1, ⌊density·n⌋)`` entries of largest ``|x|`` of the tensor, zero the rest.

    Ties in magnitude are broken by position (the first kept), through a stable sort. ``density = 1`` returns
    ``x`` itself.
    """
    n = x.numel()
    if density >= 1.0 or n == 0:
        return x
    k = max(1, math.floor(density * n + 1e-9))  # the epsilon keeps 0.29·100 from flooring to 28
    order = torch.sort(x.abs().reshape(-1), descending=True, stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    mask[order[:k]] = True
    return torch.where(mask.reshape(x.shape), x, torch.zeros_like(x))


def drop_and_rescale(x: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE: keep each entry independently with probability ``density`` (drop rate ``p = 1 − density``) and
    divide the survivors by ``density``, so that ``E[result] = x``. ``density = 1`` returns ``x`` itself."""
    if density >= 1.0:
        return x
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device)
    return torch.where(u < density, x / density, torch.zeros_like(x))


def elect_sign(stack: torch.Tensor, method: SignMethod = "total") -> torch.Tensor:
    """TIES sign election over the terms stacked on dim 0: ``sgn(Σᵢ τᵢ)`` (``"total"``, the paper's "sign
    with the largest total magnitude") or ``sgn(Σᵢ sgn τᵢ)`` (``"frequency"``, a majority vote by count). A zero
    sum elects ``+1``, as in PEFT."""
    if method == "total":
        score = stack.sum(0)
    elif method == "frequency":
        score = stack.sign().sum(0)
    else:
        raise ConfigError(f"majority_sign must be 'total' or 'frequency', got {method!r}")
    return torch.where(score >= 0, 1.0, -1.0).to(stack.dtype)


def disjoint_mean(stack: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """TIES disjoint merge: per entry, the mean over the terms whose sign equals the elected ``sign`` (zeros,
    i.e. trimmed entries, never agree); 0 where none does."""
    agree = stack.sign() == sign.unsqueeze(0)
    total = torch.where(agree, stack, torch.zeros_like(stack)).sum(0)
    return total / agree.sum(0).clamp_min(1).to(stack.dtype)


@dataclass(frozen=True)
class SparseMergeConfig(StrategyConfig):
    """Parameters common to ``ties``, ``dare`` and ``dare_ties``."""

    t: float = param(1.0, low=0.0, tune_high=2.0, groups=True,
                     help="weight t of the language vector t·(ref_target − ref_source); per group with t@GROUP")
    task_weight: float = param(1.0, low=0.0, high=10.0, tune=False, help="weight w of the task vector")
    density: float = param(1.0, low=0.0, high=1.0, tune_low=0.1,
                           help="fraction of entries kept per tensor, in (0, 1] (1: no pruning)")
    lambda_: float = param(1.0, low=0.0, tune_high=2.0, help="scale λ of the merged task vector")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.density <= 0.0:
            raise ConfigError(f"{type(self).__name__}.density must be in (0.0, 1.0], got {self.density!r}")


def _generator(seed: int, *where: str) -> torch.Generator:
    """A generator per (seed, term, module, component): draws do not depend on which other modules merge."""
    return torch.Generator().manual_seed(zlib.crc32("|".join((str(seed), *where)).encode()))


def sparse_merge(
    adapters: Mapping[str, AdapterState], cfg: SparseMergeConfig, *, prune: Prune, sign: SignMethod | None,
    seed: int = 0,
) -> AdapterState:
    """``λ·merge(prune(τ_task), prune(τ_lang))`` in the type's merge space, returned as ``from_space(…, task)``.

    ``merge`` is the TIES sign election (``sign``: its method) + disjoint mean, or the plain sum
    (``sign=None``). ``prune`` is the TIES magnitude trim or DARE's drop-and-rescale seeded by ``seed``. Where the result is the task adapter by
    construction (``τ_lang = 0`` with no pruning, ``w = λ = 1``), the task's own tensors are returned exactly.
    """
    task, src, tgt = adapters["task"], adapters["ref_source"], adapters["ref_target"]
    typ = ADAPTERS.get(task.kind)
    typ.check_compatible(adapters)
    t = resolve(cfg.t, task.params, name="t")
    provenance = {"space": "task vectors", "terms": ["w·task", "t·(ref_target − ref_source)"], "prune": prune,
                  "elect_sign": sign, **({"seed": seed} if prune == "random" else {})}
    no_lang = all(v == 0.0 for v in t.values()) or same_params(tgt, src)
    if no_lang and cfg.density == 1.0 and cfg.lambda_ == 1.0 and cfg.task_weight == 1.0:
        return with_task_parts(task.replace(), task, provenance)
    merged: dict[str, dict[str, torch.Tensor]] = {}
    for module in task.params:  # one module at a time: dense float64 ΔW of every module at once is large
        space = {r: typ.to_space(restrict(adapters[r], [module]))[module] for r in ("task", "ref_source", "ref_target")}
        merged[module] = {}
        for comp, x_task in space["task"].items():
            terms = {"task": cfg.task_weight * x_task,
                     "lang": t[module] * (space["ref_target"][comp] - space["ref_source"][comp])}
            if prune == "magnitude":
                pruned = [trim_top_k(x, cfg.density) for x in terms.values()]
            else:
                pruned = [drop_and_rescale(x, cfg.density, _generator(seed, name, module, comp))
                          for name, x in terms.items()]
            stack = torch.stack(pruned)
            out = stack.sum(0) if sign is None else disjoint_mean(stack, elect_sign(stack, sign))
            merged[module][comp] = cfg.lambda_ * out
    return with_task_parts(typ.from_space(merged, like=task), task, provenance)

