"""(IA)³ algebra against element-wise float64 formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adamergex.errors import ConfigError, IncompatibleAdaptersError, NumericalError
from adamergex.registry import ADAPTERS
from tests._adapters import make_state

IA3 = ADAPTERS.get("ia3")
T = make_state("ia3", seed=1, head=True)
S = make_state("ia3", seed=2)
G = make_state("ia3", seed=3)


def vec(state, m):  # noqa: ANN001, ANN201
    return state.params[m]["l"].double()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=3, max_size=3))
def test_merge_is_weighted_product_of_powers(weights: list[float]) -> None:
    merged = IA3.merge(list(zip((T, G, S), weights)))
    for m in T.modules:
        expected = vec(T, m) ** weights[0] * vec(G, m) ** weights[1] * vec(S, m) ** weights[2]
        assert torch.allclose(vec(merged, m), expected, rtol=1e-6)


@pytest.mark.parametrize("t", [0.3, 1.0, 1.7])
def test_published_transfer(t: float) -> None:
    merged = IA3.transfer(T, S, G, t, form="published")
    for m in T.modules:
        rho = vec(G, m) / vec(S, m)
        assert torch.allclose(vec(merged, m), vec(T, m) * (t * (rho - 1) + 1), rtol=1e-6)


@pytest.mark.parametrize("t", [0.3, 1.0, 1.7])
def test_log_transfer_equals_power_of_ratio(t: float) -> None:
    merged = IA3.transfer(T, S, G, t, form="log")
    for m in T.modules:
        assert torch.allclose(vec(merged, m), vec(T, m) * (vec(G, m) / vec(S, m)) ** t, rtol=1e-6)


def test_binary_operations() -> None:
    m = T.modules[0]
    assert torch.allclose(vec(IA3.combine(T, G), m), vec(T, m) * vec(G, m), rtol=1e-6)
    assert torch.allclose(vec(IA3.invert(T), m), 1 / vec(T, m), rtol=1e-6)
    assert torch.allclose(vec(IA3.scale(T, 0.5, form="published"), m), 0.5 * (vec(T, m) - 1) + 1, rtol=1e-6)
    assert torch.allclose(vec(IA3.scale(T, 0.5, form="log"), m), vec(T, m) ** 0.5, rtol=1e-6)


def test_arithmetic_merge_adds_around_identity() -> None:
    merged = IA3.arithmetic_merge([(T, 1.0), (G, 0.5), (S, -0.5)])
    for m in T.modules:
        expected = 1 + (vec(T, m) - 1) + 0.5 * (vec(G, m) - 1) - 0.5 * (vec(S, m) - 1)
        assert torch.allclose(vec(merged, m), expected, rtol=1e-6)


def _with_zero(state, module):  # noqa: ANN001, ANN201
    params = {m: dict(g) for m, g in state.params.items()}
    bad = params[module]["l"].clone()
    bad.view(-1)[0] = 0.0
    params[module]["l"] = bad
    return state.replace(params=params)


@pytest.mark.parametrize("form", ["published", "log"])
def test_zero_divisor_names_the_module_unless_epsilon(form: str) -> None:
    module = S.modules[1]
    zero_src = _with_zero(S, module)
    with pytest.raises(NumericalError, match=module.replace(".", r"\.")):
        IA3.transfer(T, zero_src, G, 1.0, form=form)
    merged = IA3.transfer(T, zero_src, G, 1.0, form=form, epsilon=1e-3)
    assert torch.isfinite(vec(merged, module)).all()


def test_non_integer_power_of_negative_entries_is_refused() -> None:
    module = G.modules[0]
    params = {m: dict(g) for m, g in G.params.items()}
    params[module]["l"] = -params[module]["l"]
    neg = G.replace(params=params)
    with pytest.raises(NumericalError, match="non-integer power"):
        IA3.merge([(T, 1.0), (neg, 0.5)])


def test_unknown_form_is_refused() -> None:
    with pytest.raises(ConfigError, match="'published' or 'log', got 'linear'"):
        IA3.transfer(T, S, G, 1.0, form="linear")


def test_feedforward_modules_must_match() -> None:
    other = G.replace(config={**G.config, "feedforward_modules": ["q_proj"]})
    with pytest.raises(IncompatibleAdaptersError, match="must share feedforward_modules; adapter 0 has"):
        IA3.merge([(T, 1.0), (other, 1.0)])


def test_vector_shapes_must_match_and_the_module_is_named() -> None:
    module = next(iter(G.params))
    params = {**G.params, module: {"l": torch.ones(G.params[module]["l"].numel() + 1)}}
    with pytest.raises(IncompatibleAdaptersError, match=rf"module {module}: \(IA\)³ vector shape .* differs"):
        IA3.merge([(T, 1.0), (G.replace(params=params), 1.0)])
