"""Scoring primitives of the evaluation harness, on a model that already carries its adapter.

Nothing here parses text that contains the prompt: that is how the published AdaMergeX evaluation scripts let a
prompt listing every option ("True, False or Neither?") count any answer as correct. Instead

* **log-likelihood** (:func:`loglikelihoods`, :func:`choice_scores`, :func:`score_choices`): for decoders, each
  ``(prompt, continuation)`` pair is scored by ``log p(continuation | prompt)``, the sum of the log-probabilities
  of the continuation tokens. The prompt is tokenised alone and with the continuation appended; the continuation
  tokens are those after the prompt's tokens (when the tokenizer merges across the boundary, the continuation is
  tokenised on its own so that every choice is conditioned on the same prompt tokens). Trailing whitespace of the
  prompt moves to the continuation (``"Answer: " + "True"`` is scored as ``"Answer:" + " True"``). Pairs are
  batched longest first, left-padded with explicit position ids, and the model returns logits only for the last
  positions (``logits_to_keep``) where it supports it; log-softmax is taken only at continuation positions.
  Pairs whose model input is the same (the choices of one example when each is a single token) share one row.
  :func:`score_choices` picks the best choice under a :data:`Normalization`: ``sum`` (default), ``token_mean``
  (per continuation token) or ``byte_mean`` (per UTF-8 byte of the continuation, tokenizer-independent). Ties go
  to the lowest index.
* **generation** (:func:`generate_continuations`, :func:`generate_answers`): greedy decoding of left-padded
  batches; only the new tokens are decoded (up to the first EOS), and answers are read from that continuation.
* **encoder classification** (:func:`classify`): argmax of a sequence classifier's logits on
  ``(Example.text, Example.text_pair)``.

Every function switches the model to eval mode and back, runs under ``torch.inference_mode`` and returns results
in input order.

Layout: model facts (``model_max_length``...) and the padding, batching and tokenising helpers live in
``_batching``; what a model is (:func:`adamergex.models.is_sequence_classifier`...) in :mod:`adamergex.models`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._batching import (
    _batches,
    _device,
    _Encoder,
    _eos_ids,
    _forward_params,
    _inference,
    _pad,
    _pad_id,
    _progress,
    model_max_length,
)
from ..errors import ConfigError
from ..task import encoder_inputs

if TYPE_CHECKING:
    import torch

    from ..task import Example

__all__ = [
    "NORMALIZATIONS",
    "Normalization",
    "choice_scores",
    "classify",
    "generate_answers",
    "generate_continuations",
    "loglikelihoods",
    "model_max_length",
    "perplexity",
    "score_choices",
]

Normalization = Literal["sum", "token_mean", "byte_mean"]
NORMALIZATIONS: tuple[str, ...] = ("sum", "token_mean", "byte_mean")



# -- log-likelihood ----------------------------------------------------------------------------------------------
def _split_whitespace(prompt: str, continuation: str) -> tuple[str, str]:
    """Move the prompt's trailing whitespace onto a continuation that does not start with whitespace."""
    if continuation and not continuation[0].isspace():
        stripped = prompt.rstrip()
        if len(stripped) < len(prompt):
            return stripped, prompt[len(stripped):] + continuation
    return prompt, continuation


def _requests(
    enc: _Encoder, pairs: Sequence[tuple[str, str]], max_len: int
) -> tuple[list[list[int]], list[int], list[int]]:
    """Token sequences (context + continuation, left-truncated to ``max_len``), continuation token counts, and
    continuation byte counts, one per pair."""
    split = [_split_whitespace(p, c) for p, c in pairs]
    prompts = sorted({p for p, _ in split})
    prompt_ids = dict(zip(prompts, enc.encode(prompts)))
    wholes = enc.encode([p + c for p, c in split])
    seqs, n_conts, n_bytes = [], [], []
    for (prompt, cont), whole in zip(split, wholes):
        ctx = prompt_ids[prompt]
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            cont_ids = whole[len(ctx):]
        else:  # the tokenizer merged across the boundary: tokenise apart, keeping the prompt's own tokens
            cont_ids = enc.encode([cont])[0]
        if not cont_ids:
            raise ConfigError(f"continuation {cont!r} (after prompt {prompt[-40:]!r}) has no tokens to score")
        if len(cont_ids) >= max_len:
            raise ConfigError(
                f"continuation of {len(cont_ids)} tokens must be shorter than max_length={max_len}: {cont[:60]!r}"
            )
        seq = enc.context(ctx) + cont_ids
        seqs.append(seq[-max_len:])  # keep the continuation, drop the start of a too-long prompt
        n_conts.append(len(cont_ids))
        n_bytes.append(max(1, len(cont.encode("utf-8"))))
    return seqs, n_conts, n_bytes


def _last_logits(
    model: Any, params: set[str], input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int
) -> torch.Tensor:
    """Logits ``(B, keep, V)`` of the last ``keep`` positions of a left-padded batch (``params``: the named
    parameters of the model's ``forward``)."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "position_ids" in params:  # left padding: positions count real tokens only
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if "use_cache" in params:
        kwargs["use_cache"] = False
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = keep
    elif "num_logits_to_keep" in params:
        kwargs["num_logits_to_keep"] = keep
    logits: torch.Tensor = model(**kwargs).logits
    return logits[:, -keep:]


_LOGSOFTMAX_ELEMENTS = 2**26  # float32 elements per log-softmax chunk (256 MiB), so long windows fit


def _score_sequences(
    model: Any, seqs: Sequence[list[int]], n_conts: Sequence[int], *, pad_id: int, batch_size: int,
    progress: str | None,
) -> list[float]:
    """Summed log-probability of the last ``n_conts[i]`` tokens of each ``seqs[i]``.

    The model reads ``seqs[i][:-1]`` and its logits at the last ``n_conts[i]`` positions are scored. Requests
    that read the same tokens share one row: the choices of a multiple-choice example whose continuations are
    single tokens (``yes``/``maybe``/``no``) cost one forward pass, not one each.
    """
    import torch

    device = _device(model)
    params = _forward_params(model)
    by_input: dict[tuple[int, ...], list[int]] = {}  # model input -> the requests it answers
    for i, seq in enumerate(seqs):
        by_input.setdefault(tuple(seq[:-1]), []).append(i)
    rows_ids, members = list(by_input), list(by_input.values())
    keep = [max(n_conts[i] for i in m) for m in members]  # logits needed at the end of each row
    totals = torch.zeros(len(seqs), dtype=torch.float64)  # (R,) summed log-probability per request
    batches = _batches([len(r) for r in rows_ids], batch_size)
    with _progress(len(batches), progress) as bar:
        for idx in batches:
            input_ids = _pad([rows_ids[r] for r in idx], pad_id, left=True, device=device)  # (B, T)
            mask = _pad([[1] * len(rows_ids[r]) for r in idx], 0, left=True, device=device)  # (B, T)
            k = max(keep[r] for r in idx)
            logits = _last_logits(model, params, input_ids, mask, k)  # (B, k, V): the last k positions
            b_idx: list[int] = []
            cols: list[int] = []
            gold: list[int] = []
            owner: list[int] = []
            for b, r in enumerate(idx):
                for i in members[r]:
                    n = n_conts[i]
                    b_idx += [b] * n
                    cols += range(k - n, k)  # the positions that predict the last n tokens of seqs[i]
                    gold += seqs[i][-n:]
                    owner += [i] * n
            rows_t = torch.tensor(b_idx, device=device)  # (N,) N = continuation tokens answered by the batch
            cols_t = torch.tensor(cols, device=device)  # (N,)
            gold_t = torch.tensor(gold, device=device)  # (N,)
            token_lp = torch.empty(len(b_idx), device=device, dtype=torch.float32)  # (N,)
            chunk = max(1, _LOGSOFTMAX_ELEMENTS // logits.shape[-1])
            for s in range(0, len(b_idx), chunk):
                picked = logits[rows_t[s : s + chunk], cols_t[s : s + chunk]].float()  # (c, V)
                token_lp[s : s + chunk] = (
                    picked.gather(-1, gold_t[s : s + chunk, None]).squeeze(-1) - picked.logsumexp(-1)
                )
            totals.index_add_(0, torch.tensor(owner), token_lp.double().cpu())
            bar.update(1)
    return totals.tolist()


def loglikelihoods(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> list[tuple[float, int]]:
    """``(log p(continuation | prompt), number of continuation tokens)`` for each ``(prompt, continuation)``.

    Prompts longer than the model allows lose their start; continuations are never cut.

    Raises:
        ConfigError: an empty continuation, one as long as ``max_length``, or a bad ``batch_size``.
    """
    if not pairs:
        return []
    sums, n_conts, _ = _score_pairs(model, tokenizer, pairs, batch_size, max_length, progress)
    return list(zip(sums, n_conts))


def _score_pairs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int, max_length: int | None,
    progress: str | None,
) -> tuple[list[float], list[int], list[int]]:
    """Summed continuation log-probabilities, continuation token counts and byte counts of ``pairs``."""
    enc = _Encoder(model, tokenizer)
    seqs, n_conts, n_bytes = _requests(enc, pairs, model_max_length(model, tokenizer, max_length))
    with _inference(model):
        sums = _score_sequences(
            model, seqs, n_conts, pad_id=_pad_id(tokenizer), batch_size=batch_size, progress=progress
        )
    return sums, n_conts, n_bytes


def choice_scores(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    normalization: Normalization = "sum",
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> list[list[float]]:
    """Per example, the score of each of its ``choices`` (log-likelihood after the prompt, normalised).

    All ``(example, choice)`` pairs of all examples are scored in one length-sorted batch stream.
    """
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    pairs: list[tuple[str, str]] = []
    for i, ex in enumerate(examples):
        if len(ex.choices) < 2:
            raise ConfigError(f"example {i} must have at least two choices to score, got {list(ex.choices)}")
        pairs.extend((ex.prompt, c) for c in ex.choices)
    if not pairs:
        return []
    sums, n_conts, n_bytes = _score_pairs(model, tokenizer, pairs, batch_size, max_length, progress)
    divisor = {"sum": [1] * len(sums), "token_mean": n_conts, "byte_mean": n_bytes}[normalization]
    flat = [s / d for s, d in zip(sums, divisor)]
    out, pos = [], 0
    for ex in examples:
        out.append(flat[pos : pos + len(ex.choices)])
        pos += len(ex.choices)
    return out


def score_choices(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    normalization: Normalization = "sum",
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> list[int]:
    """Index of the best-scoring choice of each example (see :func:`choice_scores`; ties go to the lowest)."""
    scores = choice_scores(
        model, tokenizer, examples, normalization=normalization, batch_size=batch_size, max_length=max_length,
        progress=progress,
    )
    return [max(range(len(s)), key=lambda j, s=s: (s[j], -j)) for s in scores]  # type: ignore[misc]


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> tuple[float, int]:
    """``(summed log-probability, predicted tokens)`` of ``texts`` under a causal LM.

    Each text is read after the tokenizer's own leading special tokens (BOS), or EOS where it adds none, in
    windows of ``max_length`` tokens that overlap by one token, so every text token is predicted exactly once.
    """
    enc = _Encoder(model, tokenizer)
    max_len = model_max_length(model, tokenizer, max_length)
    seqs: list[list[int]] = []
    for ids in enc.encode(texts):
        full = enc.start + ids
        for s in range(0, max(1, len(full) - 1), max_len - 1):
            window = full[s : s + max_len]
            if len(window) > 1:
                seqs.append(window)
    if not seqs:
        return 0.0, 0
    n_conts = [len(s) - 1 for s in seqs]
    with _inference(model):
        sums = _score_sequences(
            model, seqs, n_conts, pad_id=_pad_id(tokenizer), batch_size=batch_size, progress=progress
        )
    return math.fsum(sums), sum(n_conts)


# -- generation --------------------------------------------------------------------------------------------------
def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> list[str]:
    """Greedy continuation of each prompt: the new tokens only, up to the first EOS, decoded.

    Prompts are left-padded in length-sorted batches; a prompt longer than ``max_length - max_new_tokens``
    tokens loses its start.
    """
    from transformers import GenerationConfig

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not prompts:
        return []
    max_len = model_max_length(model, tokenizer, max_length)
    if max_new_tokens >= max_len:
        raise ConfigError(f"max_new_tokens={max_new_tokens} must be below max_length={max_len}")
    enc = _Encoder(model, tokenizer)
    budget = max_len - max_new_tokens
    inputs = [enc.context(ids)[-budget:] for ids in enc.encode(prompts)]
    eos = _eos_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer)
    gen_cfg = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id,
        eos_token_id=eos or None, bos_token_id=getattr(tokenizer, "bos_token_id", None),
    )
    device = _device(model)
    out = [""] * len(prompts)
    batches = _batches([len(x) for x in inputs], batch_size)
    with _inference(model), _progress(len(batches), progress) as bar:
        for idx in batches:
            input_ids = _pad([inputs[i] for i in idx], pad_id, left=True, device=device)
            mask = _pad([[1] * len(inputs[i]) for i in idx], 0, left=True, device=device)
            generated = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg)
            new_tokens = generated[:, input_ids.shape[1]:].tolist()  # never the prompt
            for j, i in enumerate(idx):
                tokens = new_tokens[j]
                stop = next((p for p, t in enumerate(tokens) if t in eos), len(tokens))
                out[i] = tokenizer.decode(tokens[:stop], skip_special_tokens=True)
            bar.update(1)
    return out


def generate_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int,
    extract_answer: Callable[[str], str] | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> tuple[list[str], list[str]]:
    """``(answers, continuations)``: each example's greedy continuation and the answer ``extract_answer`` reads
    from it (the stripped continuation when ``None``). The prompt is never part of what is read."""
    continuations = generate_continuations(
        model, tokenizer, [ex.prompt for ex in examples], max_new_tokens=max_new_tokens, batch_size=batch_size,
        max_length=max_length, progress=progress,
    )
    extract = extract_answer or str.strip
    return [extract(c) for c in continuations], continuations


# -- encoder classification ----------------------------------------------------------------------------------
def classify(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: str | None = None,
) -> list[int]:
    """Argmax of a sequence classifier's logits on ``(text, text_pair)`` of each example (right-padded), read
    through :func:`adamergex.task.encoder_inputs` exactly as training reads them."""
    if not examples:
        return []
    texts, pairs = encoder_inputs(examples, where="evaluation")
    max_len = model_max_length(model, tokenizer, max_length)
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_len)
    columns = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
    pad_values = {"input_ids": _pad_id(tokenizer), "attention_mask": 0, "token_type_ids": 0}
    device = _device(model)
    out = [0] * len(examples)
    batches = _batches([len(ids) for ids in columns["input_ids"]], batch_size)
    with _inference(model), _progress(len(batches), progress) as bar:
        for idx in batches:
            batch = {
                k: _pad([rows[i] for i in idx], pad_values[k], left=False, device=device) for k, rows in columns.items()
            }
            logits = model(**batch).logits  # (B, num_labels)
            for j, i in enumerate(idx):
                out[i] = int(logits[j].argmax())
            bar.update(1)
    return out
