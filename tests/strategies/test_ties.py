"""TIES steps on hand-made vectors, and the ties strategy against independent dense float64 code."""

from __future__ import annotations

import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.registry import ADAPTERS, STRATEGIES
from adamergex.strategies._ops import disjoint_mean, elect_sign, trim_top_k

T, DENSITY, LAMBDA = 0.7, 0.5, 1.3


def test_trim_keeps_the_top_k_magnitudes_per_tensor() -> None:
    x = torch.tensor([3.0, -1.0, 2.0, -4.0], dtype=torch.float64)
    assert trim_top_k(x, 0.5).tolist() == [3.0, 0.0, 0.0, -4.0]
    assert trim_top_k(x, 0.75).tolist() == [3.0, 0.0, 2.0, -4.0]
    assert trim_top_k(x, 0.01).tolist() == [0.0, 0.0, 0.0, -4.0]  # at least one entry survives
    assert trim_top_k(x, 1.0) is x
    # equal magnitudes: the first kept (stable); 0.29·100 keeps 29, not 28
    assert trim_top_k(torch.tensor([1.0, -1.0, 1.0]), 0.34).tolist() == [1.0, 0.0, 0.0]
    assert int((trim_top_k(torch.arange(1.0, 101.0), 0.29) != 0).sum()) == 29
    m = torch.tensor([[1.0, -5.0], [2.0, 0.5]])
    assert trim_top_k(m, 0.5).tolist() == [[0.0, -5.0], [2.0, 0.0]]  # per tensor, not per row


def test_sign_election_and_disjoint_mean_by_hand() -> None:
    stack = torch.tensor([[2.0, -1.0, 3.0, 0.0], [-1.0, -3.0, 1.0, 0.0]], dtype=torch.float64)
    sign = elect_sign(stack, "total")  # sums 1, -4, 4, 0 (zero elects +)
    assert sign.tolist() == [1.0, -1.0, 1.0, 1.0]
    assert disjoint_mean(stack, sign).tolist() == [2.0, -2.0, 2.0, 0.0]
    three = torch.tensor([[5.0], [-1.0], [-1.0]], dtype=torch.float64)  # total says +, count says −
    assert disjoint_mean(three, elect_sign(three, "total")).tolist() == [5.0]
    assert disjoint_mean(three, elect_sign(three, "frequency")).tolist() == [-1.0]


def _space(state, m):  # noqa: ANN001, ANN201
    """Independent of to_space, from PEFT's forward formulas: log l ((IA)³), s·(W1a·W1b)⊙(W2a·W2b) (LoHa),
    s·kron(W1, W2) with each factor whole or a product (LoKr), else s·B·A (LoRA; DoRA's direction update)."""
    g = {k: v.double() for k, v in state.params[m].items()}
    if state.kind == "ia3":
        return g["l"].log()
    if state.kind == "loha":
        return state.scaling[m] * (g["hada_w1_a"] @ g["hada_w1_b"]) * (g["hada_w2_a"] @ g["hada_w2_b"])
    if state.kind == "lokr":
        w1, w2 = (g[f"lokr_w{i}"] if f"lokr_w{i}" in g else g[f"lokr_w{i}_a"] @ g[f"lokr_w{i}_b"] for i in (1, 2))
        return state.scaling[m] * torch.kron(w1, w2)
    a_name = "lora_embedding_A" if "lora_embedding_A" in g else "lora_A"
    b_name = a_name.replace("A", "B")
    return state.scaling[m] * g[b_name] @ g[a_name]


def _reference_ties(xs: list[torch.Tensor], density: float) -> torch.Tensor:
    trimmed = []
    for x in xs:
        k = int(density * x.numel())
        threshold = x.abs().flatten().kthvalue(x.numel() - k + 1).values  # k-th largest magnitude
        trimmed.append(torch.where(x.abs() >= threshold, x, 0.0))
    total = sum(trimmed)
    gamma = torch.where(total >= 0, 1.0, -1.0).double()
    num = sum(torch.where(torch.sign(x) == gamma, x, 0.0) for x in trimmed)
    cnt = sum((torch.sign(x) == gamma).double() for x in trimmed)
    return num / cnt.clamp(min=1)


def test_ties_strategy_matches_independent_float64(trio: dict) -> None:
    out = STRATEGIES.get("ties")(trio, {"t": T, "density": DENSITY, "lambda_": LAMBDA})
    typ = ADAPTERS.get(out.kind)
    for m in trio["task"].modules:
        lang = T * (_space(trio["ref_target"], m) - _space(trio["ref_source"], m))
        expected = LAMBDA * _reference_ties([_space(trio["task"], m), lang], DENSITY)
        got = typ.to_space(out)[m]["log" if out.kind == "ia3" else "delta"]
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(got, _space(trio["task"], m) + lang, atol=1e-3)  # trimming did something
    assert out.metadata["merge"]["prune"] == "magnitude"
    assert out.saved_modules.keys() == trio["task"].saved_modules.keys()


def test_density_out_of_range_is_refused(trio: dict) -> None:
    with pytest.raises(ConfigError, match=r"TiesConfig.density must be in \[0.0, 1.0\], got 1.5"):
        STRATEGIES.get("ties")(trio, {"density": "1.5"})
    with pytest.raises(ConfigError, match=r"TiesConfig.density must be in \(0.0, 1.0\], got 0.0"):
        STRATEGIES.get("ties")(trio, {"density": "0"})
    with pytest.raises(ConfigError, match="majority_sign must be one of"):
        STRATEGIES.get("ties")(trio, {"majority_sign": "sum"})


def test_merge_with_rank_compresses_the_dense_result_optimally() -> None:
    from adamergex.merging import merge
    from tests._adapters import make_state

    trio = {r: make_state("lora", seed=s, head=r == "task") for s, r in enumerate(("task", "ref_source", "ref_target"), 1)}
    full = STRATEGIES.get("ties")(trio, {"density": 0.5})
    result = merge("ties", trio, {"density": 0.5}, rank=2)
    typ = ADAPTERS.get("lora")
    for m in trio["task"].modules:
        dense = typ.delta(full, m)
        sigma = torch.linalg.svdvals(dense)
        err = float(torch.linalg.matrix_norm(dense - typ.delta(result.output, m)))
        assert result.output.params[m]["lora_A"].shape[0] == 2
        assert abs(err - float(sigma[2:].square().sum().sqrt())) < 1e-5  # Eckart–Young optimum
        assert abs(result.compression["per_module"][m]["error"] - err) < 1e-5
    assert result.provenance["params"]["density"] == 0.5


def test_cli_merge_with_ties_and_groups(tmp_path, capsys) -> None:  # noqa: ANN001
    import json
    import re

    from adamergex.cli import main
    from adamergex.io import load_adapter, save_adapter
    from tests._adapters import make_state

    dirs = {r: save_adapter(make_state("lora", seed=s, head=r == "task"), tmp_path / r)
            for s, r in enumerate(("task", "ref_source", "ref_target"), 1)}
    argv = ["merge", "--strategy", "ties", "--task", str(dirs["task"]), "--ref-source", str(dirs["ref_source"]),
            "--ref-target", str(dirs["ref_target"]), "--param", "density=0.5", "--param", "t@0=0.4",
            "--param", "t@1=0.8", "--rank", "3", "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    merged = load_adapter(tmp_path / "out")
    assert merged.metadata["merge"]["strategy"] == "ties"
    assert merged.metadata["merge"]["params"]["density"] == 0.5
    assert merged.metadata["merge"]["params"]["t"] == {"*": 1.0, "0": 0.4, "1": 0.8}
    assert json.loads(capsys.readouterr().out)["compression"]["rank"] == 3
    bad = [*argv[:-2], "--output", str(tmp_path / "bad")]
    for extra, message in ((["--param", "t@9=1"], r"group\(s\) t@9 match no adapted module"),
                           (["--param", "density=1.5"], r"TiesConfig.density must be in \[0.0, 1.0\], got 1.5")):
        assert main([*bad, *extra]) == 2
        assert re.search(message, capsys.readouterr().err)
        assert not (tmp_path / "bad").exists()
