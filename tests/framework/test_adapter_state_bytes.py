"""``AdapterState.to_bytes`` / ``from_bytes``: a state crosses a process boundary as data, bit for bit."""

from __future__ import annotations

import pytest
import torch

from adamergex.adapter_state import AdapterState
from adamergex.errors import AdapterFormatError
from tests._adapters import make_state


def _equal(a: AdapterState, b: AdapterState) -> bool:
    same_tensors = [(n, t.dtype, t.shape) for n, t in a.tensors()] == [(n, t.dtype, t.shape) for n, t in b.tensors()]
    return (same_tensors and all(torch.equal(x, y) for (_, x), (_, y) in zip(a.tensors(), b.tensors()))
            and (a.kind, a.base_model, a.config, a.scaling, a.metadata)
            == (b.kind, b.base_model, b.config, b.scaling, b.metadata))


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_bytes_round_trip_is_exact(kind: str) -> None:
    state = make_state(kind, seed=3, language="de")
    state = state.replace(saved_modules={"base_model.model.score.weight": torch.randn(3, 8, dtype=torch.float64)},
                          metadata={**state.metadata, "training": {"lr": 0.1, "attempts": [{"steps": 3}]}})
    back = AdapterState.from_bytes(state.to_bytes())
    assert _equal(state, back)
    assert back.fingerprint() == state.fingerprint()
    assert back.saved_modules["base_model.model.score.weight"].dtype == torch.float64


def test_from_bytes_refuses_what_to_bytes_did_not_write() -> None:
    with pytest.raises(AdapterFormatError, match="needs a blob from AdapterState.to_bytes"):
        AdapterState.from_bytes(b"not a safetensors blob")
    from safetensors.torch import save

    foreign = save({"w": torch.zeros(2)}, metadata={"format": "pt"})
    with pytest.raises(AdapterFormatError, match=r"no 'adamergex_state' key \(keys: \['format'\]\)"):
        AdapterState.from_bytes(foreign)
