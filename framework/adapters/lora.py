"""LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685): additive, merged exactly in ΔW space.

A LoRA module adds ``ΔW = s·B·A`` to a frozen weight, with ``A`` ``(r, in)``, ``B`` ``(out, r)`` and scaling
``s = α/r`` (rsLoRA: ``α/√r``). The weighted merge is

    ΔW = Σᵢ wᵢ·sᵢ·Bᵢ·Aᵢ = [w₁s₁B₁ | … | wₙsₙBₙ] · [A₁; …; Aₙ]

stored with no approximation as a LoRA of rank ``Σ rᵢ`` and scaling 1 (``α = r``). :meth:`LoraAdapter.compress`
brings it to rank ``k`` by the exact factored SVD of :mod:`._lowrank` (never forming the ``out×in`` matrix) and
reports the truncation error, which is the optimal one (Eckart–Young).

``space="factors"`` instead merges ``A`` and ``B`` separately (``A = Σ wᵢAᵢ``, ``B = Σ wᵢBᵢ``), as the published
AdaMergeX code and PEFT's ``linear`` combination do. That is **not** ΔW arithmetic (the product has cross terms
``wᵢwⱼBᵢAⱼ``); it is kept, explicitly named, for ablations. Embedding (``lora_embedding_A/B``) and convolution
LoRA modules follow the same algebra with their factors flattened to matrices. LoRA biases are refused: they
are not additive in this sense; DoRA (``use_dora``) is the ``dora`` type (:mod:`.dora`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..adapter_state import AdapterState
from ..errors import AdapterFormatError, ConfigError, IncompatibleAdaptersError
from ._common import collect_terms, with_task_parts
from ._lowrank import Method, truncate_factored
from .base import AdapterType, Term, register_adapter_type

__all__ = ["LoraAdapter"]

# PEFT state-dict key suffix → (our factor name, whether the key ends in ".weight")
_SUFFIXES = {
    ".lora_A.weight": "lora_A",
    ".lora_B.weight": "lora_B",
    ".lora_embedding_A": "lora_embedding_A",
    ".lora_embedding_B": "lora_embedding_B",
}
_KEY_OF = {"lora_A": ".lora_A.weight", "lora_B": ".lora_B.weight",
           "lora_embedding_A": ".lora_embedding_A", "lora_embedding_B": ".lora_embedding_B"}
_PREFIX = "base_model.model."


def _factor_names(group: dict[str, torch.Tensor]) -> tuple[str, str]:
    return ("lora_embedding_A", "lora_embedding_B") if "lora_embedding_A" in group else ("lora_A", "lora_B")


def _model_key(module: str) -> str:
    """Module name inside the base model, as PEFT's rank/alpha patterns match it."""
    return module[len(_PREFIX):] if module.startswith(_PREFIX) else module


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    if not pattern:  # before the import: merging needs no PEFT (3-6 s of imports) unless a pattern is there
        return default
    from peft.utils.other import get_pattern_key

    key = get_pattern_key(list(pattern), _model_key(module))
    return pattern.get(key, default)


@register_adapter_type
class LoraAdapter(AdapterType):
    """The ``lora`` adapter type (see module docstring)."""

    name = "lora"
    peft_type = "LORA"
    structure = "additive"
    positive_options = ("r",)
    parallel_merge = True  # PEFT: result + Σₐ sₐ·Bₐ·Aₐ·x over active adapters = one LoRA of ΔW₁ + ΔW₂

    # -- PEFT format -----------------------------------------------------------------------------------------
    def claims(self, config: Any) -> bool:
        """``LORA`` configs without ``use_dora`` (those are the ``dora`` type's)."""
        return super().claims(config) and not config.get("use_dora")

    def from_peft(self, config: dict[str, Any], weights: Any, *, source: str) -> AdapterState:
        if config.get("use_dora"):
            raise AdapterFormatError(
                f"{source}: use_dora must be false for the 'lora' adapter type (DoRA rescales by a learned "
                "magnitude, which is not additive); got use_dora=true. Read it as the 'dora' adapter type"
            )
        params: dict[str, dict[str, torch.Tensor]] = {}
        saved: dict[str, torch.Tensor] = {}
        for key, tensor in weights.items():
            for suffix, name in _SUFFIXES.items():
                if key.endswith(suffix):
                    params.setdefault(key[: -len(suffix)], {})[name] = tensor
                    break
            else:
                if "lora_magnitude_vector" in key:
                    raise AdapterFormatError(
                        f"{source}: a 'lora' adapter must hold no DoRA magnitude, got {key} (use_dora is false in "
                        "its config); a DoRA adapter needs use_dora=true and is read as the 'dora' type"
                    )
                saved[key] = tensor
        if not params:
            raise AdapterFormatError(f"{source}: no LoRA factors (keys ending in .lora_A.weight/.lora_B.weight) found")
        scaling: dict[str, float] = {}
        for module, group in params.items():
            a_name, b_name = _factor_names(group)
            if a_name not in group or b_name not in group:
                raise AdapterFormatError(f"{source}: module {module} must have both {a_name} and {b_name}")
            a, b = group[a_name], group[b_name]
            if a.shape[0] != b.shape[1]:
                raise AdapterFormatError(
                    f"{source}: module {module} has rank {a.shape[0]} in {a_name} but {b.shape[1]} in {b_name}"
                )
            r = a.shape[0]
            declared = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r"))
            if declared is not None and int(declared) != r:  # PEFT refuses to load such a directory
                where = "rank_pattern" if declared != config.get("r") else "r"
                raise AdapterFormatError(
                    f"{source}: module {module} has rank {r} in its tensors ({a_name} {tuple(a.shape)}) but the "
                    f"config's {where} says {declared}; the config and the weights must agree"
                )
            alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
            scaling[module] = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        return AdapterState(
            kind=self.name,
            base_model=str(config.get("base_model_name_or_path") or ""),
            params=params,
            config=dict(config),
            scaling=scaling,
            saved_modules=saved,
        )

    def to_peft(self, state: AdapterState) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        weights = self.to_weights(state)
        weights.update(state.saved_modules)
        return self._config_for(state), weights

    def _config_for(self, state: AdapterState) -> dict[str, Any]:
        """The config, rewritten (plain scaling, per-module rank/alpha patterns) only when the state's ranks
        and scalings differ from what its config says."""
        config = dict(state.config)
        ranks = {m: g[_factor_names(g)[0]].shape[0] for m, g in state.params.items()}
        try:
            implied = self.from_peft(config, self.to_weights(state), source="check").scaling
            pattern_ranks = {m: int(_pattern_value(config.get("rank_pattern") or {}, m, config.get("r"))) for m in ranks}
            if implied == state.scaling and pattern_ranks == ranks:
                return config
        except (AdapterFormatError, TypeError, ValueError):
            pass
        alphas = {m: state.scaling[m] * ranks[m] for m in ranks}
        r = Counter(ranks.values()).most_common(1)[0][0]
        alpha = Counter(alphas.values()).most_common(1)[0][0]
        config.update(
            r=int(r),
            lora_alpha=alpha,
            use_rslora=False,
            rank_pattern={re.escape(_model_key(m)): int(v) for m, v in ranks.items() if v != r},
            alpha_pattern={re.escape(_model_key(m)): v for m, v in alphas.items() if v != alpha},
            init_lora_weights=True,
        )
        return config

    @staticmethod
    def to_weights(state: AdapterState) -> dict[str, torch.Tensor]:
        """The LoRA factors as PEFT state-dict entries (saved modules excluded)."""
        return {m + _KEY_OF[n]: t for m, g in state.params.items() for n, t in g.items()}

    def peft_config(self, **options: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(**options)

    # -- algebra ------------------------------------------------------------------------------------------------
    def merge(
        self, terms: Sequence[Term], *, space: Literal["delta", "factors"] = "delta", **options: Any
    ) -> AdapterState:
        """``ΔW = Σ wᵢ·ΔWᵢ`` exactly (``space="delta"``), or the factor-space ablation (``space="factors"``)."""
        if space not in ("delta", "factors"):
            raise ConfigError(f"LoRA merge space must be 'delta' or 'factors', got {space!r}")
        # ``epsilon`` (a divisor floor) only matters to multiplicative types; it is accepted and ignored here
        # so that strategies can pass their options uniformly.
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        self._check_mergeable(terms)
        kept = collect_terms(terms)
        provenance = {"space": space, "weights": [w for _, w in terms], "effective_terms": len(kept)}
        if space == "factors":
            return with_task_parts(self._factor_sum(kept, task, signed_a=True), task, provenance)
        if not kept:  # every weight cancelled: ΔW = 0, stored as a rank-1 LoRA of zeros (PEFT needs r ≥ 1)
            return with_task_parts(self._zero_like(task), task, provenance)
        if len(kept) == 1 and kept[0][1] == 1.0:
            return with_task_parts(kept[0][0].replace(), task, provenance)
        if len(kept) == 1:
            state, w = kept[0]
            params = {}
            for m, g in state.params.items():
                a_name, b_name = _factor_names(g)
                params[m] = {a_name: g[a_name], b_name: (g[b_name].double() * w).to(g[b_name].dtype)}
            return with_task_parts(state.replace(params=params), task, provenance)
        return with_task_parts(self._concat(kept, task), task, provenance)

    def arithmetic_merge(self, terms: Sequence[Term], **options: Any) -> AdapterState:
        """Zhang et al. 2023: ``A = Σ |wᵢ|·Aᵢ``, ``B = Σ wᵢ·Bᵢ`` (negation flips ``B`` only). Like terms are
        collected first. Needs equal ranks and scalings."""
        task = terms[0][0]
        self.check_compatible({f"adapter {i}": s for i, (s, _) in enumerate(terms)})
        self._check_mergeable(terms)
        kept = collect_terms(terms)
        provenance = {"space": "arithmetic", "weights": [w for _, w in terms], "effective_terms": len(kept)}
        return with_task_parts(self._factor_sum(kept, task, signed_a=False), task, provenance)

    def _check_mergeable(self, terms: Sequence[Term]) -> None:
        for i, (s, _) in enumerate(terms):
            if s.config.get("bias", "none") != "none" or s.config.get("lora_bias"):
                raise ConfigError(
                    f"adapter {i} trains biases (bias={s.config.get('bias')!r}, lora_bias="
                    f"{s.config.get('lora_bias')!r}); LoRA merging needs bias='none' and lora_bias=false"
                )
            for module, group in s.params.items():
                ref = terms[0][0].params[module]
                for name in _factor_names(group):
                    if name not in ref:
                        raise IncompatibleAdaptersError(f"module {module}: adapter {i} has {name}, adapter 0 does not")
                a_name, b_name = _factor_names(group)
                if group[a_name].shape[1:] != ref[a_name].shape[1:] or group[b_name].shape[0] != ref[b_name].shape[0]:
                    raise IncompatibleAdaptersError(
                        f"module {module}: adapter {i} has ΔW shape ({group[b_name].shape[0]}, "
                        f"{tuple(group[a_name].shape[1:])}), adapter 0 has ({ref[b_name].shape[0]}, "
                        f"{tuple(ref[a_name].shape[1:])})"
                    )

    @staticmethod
    def _zero_like(task: AdapterState) -> AdapterState:
        params = {}
        for m, g in task.params.items():
            a_name, b_name = _factor_names(g)
            a, b = g[a_name], g[b_name]
            params[m] = {a_name: a.new_zeros((1, *a.shape[1:])), b_name: b.new_zeros((b.shape[0], 1, *b.shape[2:]))}
        return task.replace(params=params, scaling={m: 1.0 for m in params})

    def _concat(self, kept: list[Term], task: AdapterState) -> AdapterState:
        """``[w₁s₁B₁ | … | wₙsₙBₙ]`` and ``[A₁; …; Aₙ]`` per module, written once into preallocated tensors."""
        dtype = task.dtype
        params: dict[str, dict[str, torch.Tensor]] = {}
        for module in task.params:
            a_name, b_name = _factor_names(task.params[module])
            blocks = [(s.params[module], w * s.scaling[module]) for s, w in kept]
            ranks = [g[a_name].shape[0] for g, _ in blocks]
            first = blocks[0][0]
            a_out = first[a_name].new_empty((sum(ranks), *first[a_name].shape[1:]), dtype=dtype)
            b_out = first[b_name].new_empty((first[b_name].shape[0], sum(ranks), *first[b_name].shape[2:]), dtype=dtype)
            offset = 0
            for (g, coeff), r in zip(blocks, ranks):
                a_out[offset : offset + r].copy_(g[a_name])
                torch.mul(g[b_name].to(dtype), coeff, out=b_out[:, offset : offset + r])
                offset += r
            params[module] = {a_name: a_out, b_name: b_out}
        return task.replace(params=params, scaling={m: 1.0 for m in task.params})

    def _factor_sum(self, kept: list[Term], task: AdapterState, *, signed_a: bool) -> AdapterState:
        if not kept:
            kept = [(task, 0.0)]
        first = kept[0][0]
        for i, (s, _) in enumerate(kept):
            for module, g in s.params.items():
                a_name, _ = _factor_names(g)
                if g[a_name].shape != first.params[module][a_name].shape:
                    raise IncompatibleAdaptersError(
                        f"factor-space merging needs equal ranks; module {module} has rank "
                        f"{g[a_name].shape[0]} in input {i} and {first.params[module][a_name].shape[0]} in input 0"
                    )
                if not math.isclose(s.scaling[module], first.scaling[module], rel_tol=1e-12):
                    raise IncompatibleAdaptersError(
                        f"factor-space merging needs equal scalings; module {module} has {s.scaling[module]} "
                        f"in input {i} and {first.scaling[module]} in input 0"
                    )
        params = {}
        for module, g0 in first.params.items():
            a_name, b_name = _factor_names(g0)
            a = sum((s.params[module][a_name].double() * (w if signed_a else abs(w)) for s, w in kept))
            b = sum((s.params[module][b_name].double() * w for s, w in kept))
            params[module] = {a_name: torch.as_tensor(a).to(g0[a_name].dtype), b_name: torch.as_tensor(b).to(g0[b_name].dtype)}
        return first.replace(params=params, scaling=dict(first.scaling))

    # -- compression --------------------------------------------------------------------------------------------
    def compress(
        self, state: AdapterState, rank: int, *, method: Method = "gram"
    ) -> tuple[AdapterState, dict[str, Any]]:
        """Optimal rank-``rank`` approximation of every module's ``s·B·A`` by the exact factored SVD.

        Returns the compressed state (scaling 1) and a report: per module the Frobenius truncation error
        ``‖ΔW − ΔW_k‖_F``, ``‖ΔW‖_F`` and their ratio, plus the maximum and overall relative errors.
        ``method`` picks how the QR factors are computed (see :mod:`._lowrank`).
        """
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {rank!r}")
        params: dict[str, dict[str, torch.Tensor]] = {}
        per_module: dict[str, dict[str, float]] = {}
        for module, g in state.params.items():
            a_name, b_name = _factor_names(g)
            a, b = g[a_name], g[b_name]
            r = a.shape[0]
            b_k, a_k, err, norm = truncate_factored(
                b.reshape(b.shape[0], r) * state.scaling[module], a.reshape(r, -1), rank, method=method
            )
            k = b_k.shape[-1]
            params[module] = {
                a_name: a_k.reshape(k, *a.shape[1:]).to(a.dtype),
                b_name: b_k.reshape(b.shape[0], k, *b.shape[2:]).to(b.dtype),
            }
            e, n = float(err), float(norm)
            per_module[module] = {"error": e, "norm": n, "relative_error": e / n if n > 0 else 0.0}
        total_err = math.sqrt(sum(v["error"] ** 2 for v in per_module.values()))
        total_norm = math.sqrt(sum(v["norm"] ** 2 for v in per_module.values()))
        report = {
            "rank": rank,
            "method": method,
            "max_relative_error": max((v["relative_error"] for v in per_module.values()), default=0.0),
            "relative_error": total_err / total_norm if total_norm > 0 else 0.0,
            "per_module": per_module,
        }
        out = state.replace(params=params, scaling={m: 1.0 for m in params})
        out.metadata["compression"] = {k: v for k, v in report.items() if k != "per_module"}
        return out, report

    # -- merge space ------------------------------------------------------------------------------------------
    def to_space(self, state: AdapterState) -> dict[str, dict[str, torch.Tensor]]:
        """``{"delta": s·B·A}`` per module, float64, ``(out, in)`` (convolution inputs flattened to ``in·k·k``)."""
        return {m: {"delta": self.delta(state, m)} for m in state.params}

    def from_space(self, space: Any, like: AdapterState) -> AdapterState:
        """The exact LoRA of each dense ``ΔW`` ``(out, in)``: ``B = I_out, A = ΔW`` when ``out ≤ in``, else
        ``B = ΔW, A = I_in``; rank ``min(out, in)``, scaling 1, in ``like``'s dtype and factor layout (embedding
        and convolution modules keep theirs). ``compress`` (``merge(..., rank=k)``) truncates it optimally."""
        self.check_space(space, like, ("delta",))
        dtype = like.dtype
        params: dict[str, dict[str, torch.Tensor]] = {}
        for module, g in like.params.items():
            a_name, b_name = _factor_names(g)
            a, b = g[a_name], g[b_name]
            delta = space[module]["delta"]
            out, inner = b.shape[0], a[0].numel()
            if tuple(delta.shape) != (out, inner):
                raise ConfigError(f"module {module}: ΔW must have shape {(out, inner)}, got {tuple(delta.shape)}")
            eye = torch.eye(min(out, inner), dtype=dtype, device=delta.device)
            if out <= inner:
                new_b, new_a = eye, delta.to(dtype)
            else:
                new_b, new_a = delta.to(dtype), eye
            k = new_b.shape[1]
            params[module] = {a_name: new_a.reshape(k, *a.shape[1:]).contiguous(),
                              b_name: new_b.reshape(out, k, *b.shape[2:]).contiguous()}
        return like.replace(params=params, scaling={m: 1.0 for m in params})

    def delta(self, state: AdapterState, module: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The dense update ``s·B·A`` of one module as an ``(out, in)`` matrix (for tests and inspection)."""
        g = state.params[module]
        a_name, b_name = _factor_names(g)
        a, b = g[a_name], g[b_name]
        return state.scaling[module] * (b.reshape(b.shape[0], -1).to(dtype) @ a.reshape(a.shape[0], -1).to(dtype))

