"""The positive control's construction (``frame_flip``): ``lex`` is exactly ``src`` read in a sign-flipped frame."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.tasks.world.frame import flip_sign, oracle_ia3, shared_rows, word_pairs
from adamergex.tasks.world.model import PRESETS, BaseModelConfig, load_base_model
from adamergex.tasks.world.reference import WorldReferenceTask

# flip_tiny with a shorter pretraining: the construction is exact whatever the weights are
FAST = {"steps": 20, "articles": 40}


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_base_model("flip_tiny", cache_dir=tmp_path_factory.mktemp("cache"), progress=False, **FAST)


def _parallel(base: Any, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    ref = WorldReferenceTask(world_seed=0, train_size=5, validation_size=n, test_size=n)
    ids = [base.tokenizer(ref.generate(code, "test")["text"][:n], return_tensors="pt", padding=True,
                          add_special_tokens=False).input_ids[:, :48] for code in ("src", "lex")]
    return ids[0], ids[1]


def _twin_permutation(base: Any) -> torch.Tensor:
    perm = torch.arange(len(base.tokenizer))
    for a, b in word_pairs(base.tokenizer, 0):
        perm[a], perm[b] = b, a
    return perm


def _sign(base: Any) -> torch.Tensor:
    cfg = base.config
    return flip_sign(cfg.hidden_size, cfg.frame_flip, cfg.seed)


def _with_ia3(model: Any, tensors: dict[str, torch.Tensor], options: dict[str, Any]) -> Any:
    from peft import IA3Config, get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(copy.deepcopy(model), IA3Config(task_type="CAUSAL_LM", **options))
    set_peft_model_state_dict(peft_model, tensors)
    return peft_model.eval()


def test_lex_rows_are_flipped_src_rows_and_shared_rows_are_zero_on_the_flipped_channels(flipped: Any) -> None:
    s, pairs = _sign(flipped), word_pairs(flipped.tokenizer, 0)
    assert int((s < 0).sum()) == flipped.config.frame_flip == 16
    for weight in (flipped.model.get_input_embeddings().weight, flipped.model.get_output_embeddings().weight):
        src, lex = (torch.tensor([p[i] for p in pairs]) for i in (0, 1))
        assert torch.equal(weight[lex], weight[src] * s)
        shared = weight[shared_rows(len(flipped.tokenizer), pairs)]
        assert torch.count_nonzero(shared[:, s < 0]) == 0 and torch.count_nonzero(shared[:, s > 0]) > 0


def test_the_oracle_ia3_adapter_maps_src_computation_onto_lex_exactly(flipped: Any) -> None:
    src, lex = _parallel(flipped)
    assert torch.equal(_twin_permutation(flipped)[src], lex)  # the lex text is the relabelled src text
    oracle = oracle_ia3(flipped.model, _sign(flipped))
    with torch.no_grad():
        on_src = flipped.model(input_ids=src).logits
        on_lex = _with_ia3(flipped.model, oracle["tensors"], oracle["options"])(input_ids=lex).logits
        base_lex = flipped.model(input_ids=lex).logits
    perm = _twin_permutation(flipped)
    torch.testing.assert_close(on_lex[..., perm], on_src, rtol=1e-5, atol=1e-5)
    # ... and the base model alone does not: the gap the control asks the merge to close
    assert (base_lex[..., perm] - on_src).abs().max() > 1.0


def test_a_task_ia3_adapter_times_the_oracle_is_the_task_in_the_lex_frame(flipped: Any) -> None:
    # AdaMergeX's (IA)³ merge with ref_target / ref_source = s: l_task ⊙ s on lex == l_task on src, for any task
    oracle = oracle_ia3(flipped.model, _sign(flipped))
    gen = torch.Generator().manual_seed(3)
    task = {k: 1 + 0.5 * torch.randn(v.shape, generator=gen) for k, v in oracle["tensors"].items()}
    merged = {k: task[k] * v for k, v in oracle["tensors"].items()}
    src, lex = _parallel(flipped)
    with torch.no_grad():
        on_src = _with_ia3(flipped.model, task, oracle["options"])(input_ids=src).logits
        on_lex = _with_ia3(flipped.model, merged, oracle["options"])(input_ids=lex).logits
    torch.testing.assert_close(on_lex[..., _twin_permutation(flipped)], on_src, rtol=1e-5, atol=1e-5)


def test_frame_flip_presets_and_errors() -> None:
    assert PRESETS["flip_tiny"].frame_flip == 16 and PRESETS["flip"].frame_flip == 32
    assert "frame_flip" not in PRESETS["control_tiny"].to_dict()  # old cache keys hold
    assert PRESETS["flip_tiny"].config_hash() != PRESETS["control_tiny"].config_hash()
    with pytest.raises(ConfigError, match=r"frame_flip needs tokenizer='word' and 'lex' in held_out.*got "
                                          r"tokenizer='bpe', held_out=\[\]"):
        BaseModelConfig(frame_flip=4)
    with pytest.raises(ConfigError, match=r"frame_flip must be an integer in 0\.\.hidden_size \(32\), got 33"):
        dataclasses.replace(PRESETS["flip_tiny"], frame_flip=33)
    with pytest.raises(ConfigError, match=r"frame_flip must be in 1\.\.hidden_size \(8\), got 9"):
        flip_sign(8, 9, 0)


def test_word_pairs_refuse_a_tokenizer_that_splits_words(tmp_path: Path) -> None:
    from adamergex.tiny import train_tokenizer

    tok = train_tokenizer(["a b c"], vocab_size=300)
    with pytest.raises(ConfigError, match="frame_flip needs one token per word"):
        word_pairs(tok, 0)
