"""DARE drop-and-rescale: statistics of the pure step, seeded reproducibility, and the dare / dare_ties strategies
entry by entry against the possible survivors."""

from __future__ import annotations

import torch

from adamergex.registry import ADAPTERS, STRATEGIES
from adamergex.strategies._ops import drop_and_rescale
from tests.strategies.test_contract import same_tensors
from tests.strategies.test_ties import _space

T, DENSITY = 0.7, 0.4


def test_drop_and_rescale_keeps_a_density_fraction_and_the_mean() -> None:
    x = torch.full((20000,), 2.0, dtype=torch.float64)
    out = drop_and_rescale(x, 0.25, torch.Generator().manual_seed(0))
    kept = out != 0
    assert abs(float(kept.double().mean()) - 0.25) < 0.015
    assert torch.equal(out[kept], torch.full_like(out[kept], 8.0))  # survivors are x / density
    assert abs(float(out.mean()) - 2.0) < 0.12
    assert drop_and_rescale(x, 1.0, torch.Generator()) is x


def _candidates(a: torch.Tensor, b: torch.Tensor, d: float, ties: bool) -> list[torch.Tensor]:
    """Every value an entry can take given which of τ_task (a), τ_lang (b) survived."""
    both = torch.where(torch.sign(a) == torch.sign(b), (a + b) / (2 * d), torch.where((a + b) >= 0,
                       torch.where(a > 0, a, b), torch.where(a < 0, a, b)) / d) if ties else (a + b) / d
    return [torch.zeros_like(a), a / d, b / d, both]


def _check_entries(name: str, trio: dict) -> None:
    out = STRATEGIES.get(name)(trio, {"t": T, "density": DENSITY, "seed": 3})
    typ = ADAPTERS.get(out.kind)
    comp = "log" if out.kind == "ia3" else "delta"
    got_space = typ.to_space(out)
    for m in trio["task"].modules:
        a = _space(trio["task"], m)
        b = T * (_space(trio["ref_target"], m) - _space(trio["ref_source"], m))
        got = got_space[m][comp]
        close = [torch.isclose(got, c, atol=1e-6, rtol=1e-5) for c in _candidates(a, b, DENSITY, name == "dare_ties")]
        assert bool(torch.stack(close).any(0).all()), f"{m}: an entry is no combination of survivors"
        dropped_both = close[0] & ~close[1] & ~close[2]
        assert 0.05 < float(close[0].double().mean()) < 0.8  # both dropped: (1 − d)² = 0.36 on average and bool(dropped_both.any())


def test_dare_entries_are_rescaled_survivor_sums(trio: dict) -> None:
    _check_entries("dare", trio)


def test_dare_ties_entries_are_disjoint_means_of_survivors(trio: dict) -> None:
    _check_entries("dare_ties", trio)


def test_seed_reproduces_and_other_seeds_differ(trio: dict) -> None:
    for name in ("dare", "dare_ties"):
        strat = STRATEGIES.get(name)
        a = strat(trio, {"density": DENSITY, "seed": 1})
        assert same_tensors(a, strat(trio, {"density": DENSITY, "seed": 1}))
        assert not same_tensors(a, strat(trio, {"density": DENSITY, "seed": 2}))
        assert a.metadata["merge"]["seed"] == 1


def test_no_dropping_is_adamergex_and_ties(trio: dict) -> None:
    """density = 1: dare is the exact (LoRA ΔW / (IA)³ log-form) AdaMergeX sum; dare_ties is ties."""
    dare = STRATEGIES.get("dare")(trio, {"t": T})
    typ = ADAPTERS.get(dare.kind)
    for m in trio["task"].modules:
        expected = _space(trio["task"], m) + T * (_space(trio["ref_target"], m) - _space(trio["ref_source"], m))
        got = typ.to_space(dare)[m]["log" if dare.kind == "ia3" else "delta"]
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    assert same_tensors(STRATEGIES.get("dare_ties")(trio, {"t": T}), STRATEGIES.get("ties")(trio, {"t": T}))
