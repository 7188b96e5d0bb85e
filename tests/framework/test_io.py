"""PEFT-format I/O: round trips, atomic writes, and every malformed input named in its error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adamergex.errors import AdapterFormatError, OutputExistsError, UnknownNameError
from adamergex.io import atomic_directory, load_adapter, save_adapter
from tests._adapters import make_state


@pytest.fixture
def saved(tmp_path: Path, adapter_kind: str) -> Path:
    state = make_state(adapter_kind, seed=1, head=True, language="fr", task="xnli")
    return save_adapter(state, tmp_path / "adapter")


def test_round_trip_keeps_tensors_scaling_and_metadata(saved: Path, adapter_kind: str) -> None:
    original = make_state(adapter_kind, seed=1, head=True, language="fr", task="xnli")
    loaded = load_adapter(saved)
    assert loaded.kind == adapter_kind and loaded.base_model == "tiny-llama"
    assert loaded.language == "fr" and loaded.task == "xnli"
    assert loaded.fingerprint() == original.fingerprint()
    assert loaded.scaling == original.scaling
    header = json.loads(__import__("safetensors").safe_open(str(saved / "adapter_model.safetensors"), "pt").metadata()["adamergex"])
    assert header["language"] == "fr"


def test_missing_directory_and_files(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(AdapterFormatError, match="adapter directory .*nope does not exist"):
        load_adapter(tmp_path / "nope")
    (saved / "adapter_config.json").unlink()
    with pytest.raises(AdapterFormatError, match="adapter_config.json is missing"):
        load_adapter(saved)


def test_corrupt_config_and_weights(saved: Path) -> None:
    weights = saved / "adapter_model.safetensors"
    weights.write_bytes(b"\x00\x01garbage")
    with pytest.raises(AdapterFormatError, match="adapter_model.safetensors is not a valid safetensors file"):
        load_adapter(saved)
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterFormatError, match="adapter_config.json must be a readable JSON file"):
        load_adapter(saved)


def test_pickle_only_adapter_is_refused_without_unpickling(saved: Path) -> None:
    (saved / "adapter_model.safetensors").unlink()
    (saved / "adapter_model.bin").write_bytes(b"this would be a pickle")
    with pytest.raises(AdapterFormatError, match="reads safetensors only"):
        load_adapter(saved)


def test_unsupported_peft_type_lists_supported(saved: Path) -> None:
    cfg = json.loads((saved / "adapter_config.json").read_text())
    cfg["peft_type"] = "BOFT"
    (saved / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnknownNameError, match="unsupported PEFT adapter type 'BOFT'; supported: .*IA3 \\(ia3\\), LOHA"):
        load_adapter(saved)


def test_save_refuses_non_empty_output_and_leaves_it_untouched(saved: Path) -> None:
    before = sorted(p.name for p in saved.iterdir())
    with pytest.raises(OutputExistsError, match="already exists and is not empty; pass overwrite"):
        save_adapter(make_state("lora", seed=5), saved)
    assert sorted(p.name for p in saved.iterdir()) == before
    save_adapter(make_state("lora", seed=5), saved, overwrite=True)
    assert load_adapter(saved).kind == "lora"


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_state_from_live_model_matches_saved_file(tmp_path: Path) -> None:
    from peft import PeftModel

    from tests._adapters import base_model

    state = make_state("lora", seed=3, head=True)
    save_adapter(state, tmp_path / "a")
    model = PeftModel.from_pretrained(base_model(), str(tmp_path / "a"))
    again = load_adapter(model)
    assert again.fingerprint() == state.fingerprint()
    for m in state.modules:
        assert torch.equal(again.params[m]["lora_A"], state.params[m]["lora_A"])
