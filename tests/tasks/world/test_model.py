"""The world base model: built on first use, cached by config, and never used when corrupt or mismatched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.tasks.world.model import (
    BaseModelConfig,
    WorldCacheError,
    get_config,
    load_base_model,
    model_dir,
    pretraining_texts,
    verify_model_dir,
)

# Smaller than the "tiny" preset: a few seconds, enough to exercise the cache.
FAST = {"steps": 3, "articles": 24}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    built = load_base_model("tiny", cache_dir=root, progress=False, **FAST)
    assert built.built
    return root


def test_built_once_then_loaded_from_the_cache(cache: Path) -> None:
    again = load_base_model("tiny", cache_dir=cache, progress=False, **FAST)
    assert not again.built
    assert again.path == model_dir(get_config("tiny", **FAST), cache)
    assert again.model.config._name_or_path == str(again.path)
    ids = again.tokenizer("question : a ? answer : yes", add_special_tokens=False)["input_ids"]
    assert again.model(input_ids=torch.tensor([ids])).logits.shape[-1] == len(again.tokenizer)
    manifest = json.loads((again.path / "manifest.json").read_text())
    assert manifest["config_hash"] == again.config.config_hash()
    assert "model.safetensors" in manifest["files"] and "tokenizer.json" in manifest["files"]
    assert not any(p.suffix == ".bin" for p in again.path.iterdir())


def test_the_cache_key_follows_the_config() -> None:
    a, b = get_config("tiny"), get_config("tiny", steps=41)
    assert a.config_hash() == get_config("tiny").config_hash() != b.config_hash()
    assert model_dir(a, "/c").parent == model_dir(b, "/c").parent == Path("/c/world")


def test_env_var_sets_the_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(tmp_path))
    assert model_dir(get_config("tiny")).parent == tmp_path / "world"


def test_corrupt_weights_are_detected_then_rebuilt(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = get_config("tiny", **FAST)
    path = model_dir(cfg, cache)
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WorldCacheError, match="does not match the checksum"):
        verify_model_dir(path, cfg)
    with pytest.raises(WorldCacheError, match="checksum"):
        load_base_model("tiny", cache_dir=cache, rebuild="never", progress=False, **FAST)
    rebuilt = load_base_model("tiny", cache_dir=cache, progress=False, **FAST)
    assert rebuilt.built
    assert "rebuilding the world base model" in capsys.readouterr().err
    verify_model_dir(path, cfg)


def test_a_cache_from_another_config_is_refused(cache: Path) -> None:
    cfg = get_config("tiny", **FAST)
    path = model_dir(cfg, cache)
    manifest_path = path / "manifest.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    manifest["config"]["steps"] = 999
    manifest_path.write_text(json.dumps(manifest))
    try:
        with pytest.raises(WorldCacheError, match="another config"):
            load_base_model("tiny", cache_dir=cache, rebuild="never", progress=False, **FAST)
        (path / "tokenizer.json").unlink()
        manifest_path.write_text(original)
        with pytest.raises(WorldCacheError, match="lacks tokenizer.json"):
            verify_model_dir(path, cfg)
        manifest_path.unlink()
        with pytest.raises(WorldCacheError, match="no manifest.json"):
            verify_model_dir(path, cfg)
    finally:
        load_base_model("tiny", cache_dir=cache, progress=False, **FAST)  # leave an intact cache behind


def test_bad_sizes_and_options_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="available: control, control_tiny, default, flip, flip_tiny, tiny"):
        get_config("huge")
    with pytest.raises(ConfigError, match="hidden_size must be divisible by heads"):
        BaseModelConfig(hidden_size=30, heads=4)
    with pytest.raises(ConfigError, match="parallel must be in"):
        BaseModelConfig(parallel=1.5)
    with pytest.raises(ConfigError, match="rebuild must be one of"):
        load_base_model("tiny", rebuild="sometimes")  # type: ignore[arg-type]


def test_pretraining_corpus_holds_every_language() -> None:
    cfg = get_config("tiny", articles=12, parallel=0.5, code_switch=0.5)
    texts = pretraining_texts(cfg)
    assert texts == pretraining_texts(cfg)
    joined = " ".join(texts)
    assert any("\u0430" <= ch <= "\u044f" for ch in joined)  # morph's Cyrillic
    assert len(texts) >= 4 * 12 - 12  # pairs replace two articles by one
