"""The positive control's base-model options: a word-level tokenizer and languages held out of pretraining."""

from __future__ import annotations

import pytest

from adamergex.errors import ConfigError
from adamergex.tasks.world.corpus import get_setting
from adamergex.tasks.world.model import PRESETS, BaseModelConfig, pretraining_texts, tokenizer_texts
from adamergex.tiny import train_word_tokenizer


def test_old_presets_keep_their_cache_keys() -> None:
    # the hashes of the caches built before tokenizer/held_out existed: adding the fields must not rebuild them
    assert PRESETS["default"].config_hash() == "31cee403f2637ef3"
    assert PRESETS["tiny"].config_hash() == "9287ca9c25d06ec9"
    assert "held_out" not in PRESETS["default"].to_dict() and "tokenizer" not in PRESETS["tiny"].to_dict()
    assert PRESETS["control_tiny"].to_dict()["held_out"] == ["lex"]
    assert PRESETS["control_tiny"].config_hash() != PRESETS["tiny"].config_hash()


def test_held_out_language_trains_the_tokenizer_not_the_model() -> None:
    cfg = PRESETS["control_tiny"]
    lex_words = get_setting(0).languages["lex"].words()
    corpus_words = {w for text in pretraining_texts(cfg) for w in text.split()}
    assert not corpus_words & lex_words  # lex never reaches pretraining
    tok = train_word_tokenizer(tokenizer_texts(cfg))
    vocab = tok.get_vocab()
    assert lex_words <= set(vocab)  # ... but every lex word is a token


def test_word_tokenizer_maps_the_relabelling_token_for_token() -> None:
    cfg = PRESETS["control_tiny"]
    tok = train_word_tokenizer(tokenizer_texts(cfg))
    from adamergex.tasks.world.reference import WorldReferenceTask

    ref = WorldReferenceTask(world_seed=0, train_size=5, validation_size=5, test_size=5)
    src, lex = (tok(ref.generate(c, "test")["text"][0])["input_ids"] for c in ("src", "lex"))
    assert len(src) == len(lex) > 20 and tok.unk_token_id not in src + lex
    mapping = dict(zip(src, lex))
    assert all(mapping[a] == b for a, b in zip(src, lex))  # one token id per word, consistently


@pytest.mark.parametrize("overrides, message", [
    ({"held_out": ("src",)}, "held_out must name distinct target languages"),
    ({"held_out": ("lex", "lex")}, "held_out must name distinct target languages"),
    ({"tokenizer": "char"}, "tokenizer must be bpe or word"),
    ({"held_out": ("lex",), "code_switch": 0.5}, "held_out languages would reach pretraining"),
])
def test_bad_control_options(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BaseModelConfig(**overrides)
