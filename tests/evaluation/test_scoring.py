"""Scoring primitives against plain, unbatched computations on a tiny Llama (float32, CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.evaluation import (
    choice_scores,
    classify,
    generate_answers,
    generate_continuations,
    loglikelihoods,
    perplexity,
    score_choices,
)
from adamergex.task import Example
from tests.evaluation.test_evaluation import llama, one_thread, tok, token_ids  # noqa: F401  (fixtures)

PAIRS = [
    ("the cat sat", " on the mat"),
    ("Question: True, False or Neither?\nAnswer:", " True"),
    ("Question: True, False or Neither?\nAnswer:", " Neither"),
    ("le chat", " est sur le tapis because it was tired"),
    ("What is 3 plus 4?", " 7"),
]


def naive_logprob(model: Any, ids: list[int], n_cont: int) -> float:
    """Full-sequence forward of one unpadded sequence; log-softmax over the whole vocabulary."""
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    return sum(float(lp[t - 1, ids[t]]) for t in range(len(ids) - n_cont, len(ids)))


def test_loglikelihood_equals_an_unbatched_forward(tok: Any, llama: Any) -> None:
    expected = []
    for prompt, cont in PAIRS:
        ctx, whole = token_ids(tok, prompt), token_ids(tok, prompt + cont)
        assert whole[: len(ctx)] == ctx
        expected.append((pytest.approx(naive_logprob(llama, whole, len(whole) - len(ctx)), abs=1e-4),
                         len(whole) - len(ctx)))
    for batch_size in (1, 2, 16):  # alone, mixed lengths with left padding, everything in one batch
        assert loglikelihoods(llama, tok, PAIRS, batch_size=batch_size) == expected


def test_single_token_choices_share_one_forward_pass(tok: Any, llama: Any) -> None:
    prompts = ["Question: is it raining?\nAnswer:", "the cat sat on the", "What is 3 plus 4?"]
    choices = [" is", " was", " on", " 3"]
    for c in choices:
        assert len(token_ids(tok, c)) == 1, f"{c!r} must be one token of the test tokenizer"
    examples = [Example(prompt=p, choices=tuple(choices), label=0) for p in prompts]
    calls: list[int] = []
    hook = llama.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        shared = choice_scores(llama, tok, examples, batch_size=1)
    finally:
        hook.remove()
    assert len(calls) == len(prompts)  # one row per prompt, not one per (prompt, choice)
    for prompt, row in zip(prompts, shared):
        ctx = token_ids(tok, prompt)
        for c, value in zip(choices, row):
            whole = token_ids(tok, prompt + c)
            assert value == pytest.approx(naive_logprob(llama, whole, len(whole) - len(ctx)), abs=1e-4)
    # a multi-token continuation and a single-token one after the same prompt still score independently
    (two, n2), (one, n1) = loglikelihoods(llama, tok, [(prompts[0], " is it the"), (prompts[0], " is")])
    assert (n2, n1) == (len(token_ids(tok, prompts[0] + " is it the")) - len(token_ids(tok, prompts[0])), 1)
    assert one == pytest.approx(shared[0][0], abs=1e-5) and two < one


def test_trailing_whitespace_of_the_prompt_moves_to_the_continuation(tok: Any, llama: Any) -> None:
    a, b = loglikelihoods(llama, tok, [("Answer: ", "True"), ("Answer:", " True")])
    assert a == b


def test_a_merged_boundary_keeps_the_prompt_tokens(tok: Any, llama: Any) -> None:
    prompt, cont = "the ca", "t sat"  # "ca" + "t" merge into "cat" when tokenised together
    ctx = token_ids(tok, prompt)
    assert token_ids(tok, prompt + cont)[: len(ctx)] != ctx
    (lp, n), = loglikelihoods(llama, tok, [(prompt, cont)])
    cont_ids = token_ids(tok, cont)
    assert n == len(cont_ids)
    assert lp == pytest.approx(naive_logprob(llama, ctx + cont_ids, n), abs=1e-4)


def test_long_prompts_lose_their_start_never_the_continuation(tok: Any, llama: Any) -> None:
    prompt, cont = "the cat sat on the mat " * 6 + "and", " it slept"
    (lp, n), = loglikelihoods(llama, tok, [(prompt, cont)], max_length=12)
    whole = token_ids(tok, prompt + cont)
    assert n == len(token_ids(tok, prompt + cont)) - len(token_ids(tok, prompt))
    assert lp == pytest.approx(naive_logprob(llama, whole[-12:], n), abs=1e-4)
    with pytest.raises(ConfigError, match="must be shorter than max_length=3"):
        loglikelihoods(llama, tok, [("a", " the cat sat on the mat")], max_length=3)


def test_normalizations_and_ties(tok: Any, llama: Any) -> None:
    ex = Example(prompt="the cat", choices=(" sat", " sat on the mat"), label=0)
    (lp_a, n_a), (lp_b, n_b) = loglikelihoods(llama, tok, [("the cat", " sat"), ("the cat", " sat on the mat")])
    assert choice_scores(llama, tok, [ex]) == [[lp_a, lp_b]]
    assert choice_scores(llama, tok, [ex], normalization="token_mean") == [[lp_a / n_a, lp_b / n_b]]
    assert choice_scores(llama, tok, [ex], normalization="byte_mean") == [[lp_a / 4, lp_b / 15]]
    same = Example(prompt="the cat", choices=(" sat", " sat"), label=1)
    assert score_choices(llama, tok, [same]) == [0]  # a tie goes to the lowest index
    with pytest.raises(ConfigError, match="at least two choices"):
        score_choices(llama, tok, [Example(prompt="x", choices=(" a",))])
    with pytest.raises(ConfigError, match="has no tokens"):
        score_choices(llama, tok, [Example(prompt="x", choices=(" a", ""))])


def test_scoring_restores_training_mode(tok: Any, llama: Any) -> None:
    llama.train()
    try:
        loglikelihoods(llama, tok, PAIRS[:1])
        assert llama.training
    finally:
        llama.eval()


def test_generation_decodes_only_new_tokens_and_batches_like_single_runs(tok: Any, llama: Any) -> None:
    prompts = ["the cat", "Question: True, False or Neither?\nAnswer:", "le chat est sur le"]
    answers, continuations = generate_answers(
        llama, tok, [Example(prompt=p) for p in prompts], max_new_tokens=4, extract_answer=lambda c: c[:2],
        batch_size=3,
    )
    assert answers == [c[:2] for c in continuations]
    for prompt, got in zip(prompts, continuations):  # a hand-written greedy loop over the unpadded prompt alone
        ids = token_ids(tok, prompt)
        new: list[int] = []
        with torch.no_grad():
            for _ in range(4):
                nxt = int(llama(torch.tensor([ids + new])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
        assert got == tok.decode(new, skip_special_tokens=True)
    with pytest.raises(ConfigError, match="max_new_tokens=8 must be below max_length=8"):
        generate_continuations(llama, tok, prompts, max_new_tokens=8, max_length=8)


def test_perplexity_windows_predict_every_token_once(tok: Any, llama: Any) -> None:
    text = "the cat sat on the mat because it was tired"
    ids = [tok.eos_token_id] + token_ids(tok, text)  # the tokenizer adds no BOS: EOS starts the text
    whole, n = perplexity(llama, tok, [text])
    assert n == len(ids) - 1
    assert whole == pytest.approx(naive_logprob(llama, ids, n), abs=1e-4)
    windowed, n_windowed = perplexity(llama, tok, [text], max_length=4)
    assert n_windowed == n
    expected = sum(naive_logprob(llama, ids[s : s + 4], len(ids[s : s + 4]) - 1) for s in range(0, len(ids) - 1, 3))
    assert windowed == pytest.approx(expected, abs=1e-4)


def test_classify_matches_one_by_one_logits(tok: Any) -> None:
    from adamergex.tiny import tiny_bert_classifier

    model = tiny_bert_classifier(len(tok), 3, seed=1).eval()
    examples = [Example(prompt="", text=t, text_pair=p) for t, p in
                [("the cat sat", "on the mat"), ("le chat", "est sur le tapis because it was tired"), ("7", "12")]]
    got = classify(model, tok, examples, batch_size=2)
    for ex, pred in zip(examples, got):
        enc = tok(ex.text, ex.text_pair, return_tensors="pt")
        with torch.no_grad():
            assert pred == int(model(**enc).logits[0].argmax())
    with pytest.raises(ConfigError, match=r"Example.text, which examples \[0\] lack"):
        classify(model, tok, [Example(prompt="p")])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_batches_score_and_generate_like_single_sequences(dtype: str, tok: Any) -> None:
    """Left padding with explicit positions and the GPU attention kernels change nothing but rounding."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from adamergex.tiny import tiny_llama

    model = tiny_llama(len(tok), hidden_size=256, layers=4, heads=4, intermediate_size=512, seed=3)
    model = model.to("cuda", getattr(torch, dtype))
    single = [loglikelihoods(model, tok, [pair])[0] for pair in PAIRS]
    batched = loglikelihoods(model, tok, PAIRS, batch_size=16)
    rel = 1e-5 if dtype == "float32" else 2e-2
    for (lp_b, n_b), (lp_s, n_s) in zip(batched, single):
        assert n_b == n_s and lp_b == pytest.approx(lp_s, rel=rel, abs=rel)
    if dtype == "float32":
        prompts = [p for p, _ in PAIRS]
        together = generate_continuations(model, tok, prompts, max_new_tokens=8, batch_size=8)
        assert together == [generate_continuations(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
