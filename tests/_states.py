"""Adapters built directly as ``AdapterState`` with random factors (no model, no PEFT), and their dense
merge-space points formed here from the raw tensors, independently of the framework's algebra."""

from __future__ import annotations

import torch

from adamergex.adapter_state import AdapterState

Dense = dict[str, dict[str, torch.Tensor]]


def scalings(g: torch.Generator, shapes: dict[str, tuple[int, int]]) -> dict[str, float]:
    """A scaling per module, different in every adapter (so a scaling left out of the inner products shows)."""
    return {m: 0.5 + float(torch.rand(1, generator=g)) for m in shapes}


def lora(g: torch.Generator, shapes: dict[str, tuple[int, int]], rank: int = 3, scale: float | None = None,
         kind: str = "lora") -> AdapterState:
    params: dict[str, dict[str, torch.Tensor]] = {}
    for m, (out, in_) in shapes.items():
        params[m] = {"lora_A": torch.randn(rank, in_, generator=g), "lora_B": torch.randn(out, rank, generator=g)}
        if kind == "dora":
            params[m]["magnitude"] = 0.5 + torch.rand(out, generator=g)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "use_dora": kind == "dora"}
    return AdapterState(kind=kind, base_model="tiny", params=params, config=config,
                        scaling=scalings(g, shapes) if scale is None else {m: scale for m in shapes})


def ia3(g: torch.Generator, shapes: dict[str, tuple[int, int]]) -> AdapterState:
    params = {m: {"l": torch.exp(0.2 * torch.randn(out, generator=g))} for m, (out, _) in shapes.items()}
    return AdapterState(kind="ia3", base_model="tiny", params=params, config={"peft_type": "IA3"})


def loha(g: torch.Generator, shapes: dict[str, tuple[int, int]]) -> AdapterState:
    params = {m: {"hada_w1_a": torch.randn(out, 2, generator=g), "hada_w1_b": torch.randn(2, in_, generator=g),
                  "hada_w2_a": torch.randn(out, 3, generator=g), "hada_w2_b": torch.randn(3, in_, generator=g)}
              for m, (out, in_) in shapes.items()}
    return AdapterState(kind="loha", base_model="tiny", params=params, config={"peft_type": "LOHA", "r": 4,
                                                                              "alpha": 2}, scaling=scalings(g, shapes))


def lokr(g: torch.Generator, shapes: dict[str, tuple[int, int]]) -> AdapterState:
    split = {12: (3, 4), 16: (4, 4), 20: (4, 5), 10: (2, 5)}  # out = a·b, in = c·d
    params = {}
    for m, (out, in_) in shapes.items():
        (a, b), (c, d) = split[out], split[in_]
        params[m] = {"lokr_w1": torch.randn(a, c, generator=g), "lokr_w2_a": torch.randn(b, 2, generator=g),
                     "lokr_w2_b": torch.randn(2, d, generator=g)}
    return AdapterState(kind="lokr", base_model="tiny", params=params, config={"peft_type": "LOKR", "r": 2,
                                                                              "alpha": 3}, scaling=scalings(g, shapes))


def dense(state: AdapterState) -> Dense:
    """The merge-space point of ``state`` from its raw tensors, in float64 (no framework code)."""
    out: Dense = {}
    for m, p in state.params.items():
        q = {n: t.double() for n, t in p.items()}
        s = state.scaling.get(m, 1.0)
        if state.kind in ("lora", "dora"):
            out[m] = {"delta": s * q["lora_B"] @ q["lora_A"]}
            if state.kind == "dora":
                out[m]["log_magnitude"] = q["magnitude"].log()
        elif state.kind == "ia3":
            out[m] = {"log": q["l"].log()}
        elif state.kind == "loha":
            out[m] = {"delta": s * (q["hada_w1_a"] @ q["hada_w1_b"]) * (q["hada_w2_a"] @ q["hada_w2_b"])}
        elif state.kind == "lokr":
            out[m] = {"delta": s * torch.kron(q["lokr_w1"], q["lokr_w2_a"] @ q["lokr_w2_b"])}
    return out


def concat(x: AdapterState, d: AdapterState) -> AdapterState:
    """``x ⊕ d`` for LoRA as one LoRA of rank ``r_x + r_d`` (scalings folded into ``B``, scaling 1)."""
    params = {m: {"lora_A": torch.cat([x.params[m]["lora_A"], d.params[m]["lora_A"]]),
                  "lora_B": torch.cat([x.scaling[m] * x.params[m]["lora_B"], d.scaling[m] * d.params[m]["lora_B"]], 1)}
              for m in x.params}
    return x.replace(params=params, scaling={m: 1.0 for m in x.params})
