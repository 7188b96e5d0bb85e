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
    _inference,
    _pad,
    _pad_id,
    _progress,
    _SequencePlan,
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


class _ChoiceRequests:
    """Every ``(example, choice)`` pair of ``examples`` tokenised and batched once (see :func:`choice_scores`);
    :meth:`scores` and :meth:`predict` score them on any model that reads the same tokens."""

    def __init__(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], *, normalization: Normalization = "sum",
        batch_size: int = 16, max_length: int | None = None,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
        pairs: list[tuple[str, str]] = []
        for i, ex in enumerate(examples):
            if len(ex.choices) < 2:
                raise ConfigError(f"example {i} must have at least two choices to score, got {list(ex.choices)}")
            pairs.extend((ex.prompt, c) for c in ex.choices)
        self.counts = [len(ex.choices) for ex in examples]
        self.pairs = _PairRequests(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length)
        self.divisor = {"sum": [1] * len(pairs), "token_mean": self.pairs.n_conts,
                        "byte_mean": self.pairs.n_bytes}[normalization]

    def scores(self, model: Any, progress: str | None = None) -> list[list[float]]:
        """Per example, the normalised score of each choice under ``model``."""
        flat = [s / d for s, d in zip(self.pairs.sums(model, progress), self.divisor)]
        out, pos = [], 0
        for n in self.counts:
            out.append(flat[pos : pos + n])
            pos += n
        return out

    def predict(self, model: Any, progress: str | None = None) -> list[int]:
        """Index of each example's best choice under ``model`` (ties go to the lowest)."""
        return [argmax(s) for s in self.scores(model, progress)]


def argmax(scores: Sequence[float]) -> int:
    """Index of the largest score; ties go to the lowest index."""
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


class _PairRequests:
    """``(prompt, continuation)`` pairs tokenised (:func:`_requests`) and batched once."""

    def __init__(
        self, model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, batch_size: int,
        max_length: int | None,
    ) -> None:
        self.plan: _SequencePlan | None = None
        self.n_conts: list[int] = []
        self.n_bytes: list[int] = []
        if pairs:
            enc = _Encoder(model, tokenizer)
            seqs, self.n_conts, self.n_bytes = _requests(enc, pairs, model_max_length(model, tokenizer, max_length))
            self.plan = _SequencePlan(seqs, self.n_conts, pad_id=_pad_id(tokenizer), batch_size=batch_size,
                                      device=_device(model))

    def sums(self, model: Any, progress: str | None = None) -> list[float]:
        """Summed continuation log-probability of each pair under ``model``."""
        if self.plan is None:
            return []
        with _inference(model):
            return self.plan.run(model, progress)


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
    requests = _PairRequests(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length)
    return list(zip(requests.sums(model, progress), requests.n_conts))


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
    requests = _ChoiceRequests(model, tokenizer, examples, normalization=normalization, batch_size=batch_size,
                               max_length=max_length)
    return requests.scores(model, progress)


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
    requests = _ChoiceRequests(model, tokenizer, examples, normalization=normalization, batch_size=batch_size,
                               max_length=max_length)
    return requests.predict(model, progress)


class _PerplexityRequests:
    """The windows of :func:`perplexity`, tokenised and batched once."""

    def __init__(
        self, model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        enc = _Encoder(model, tokenizer)
        max_len = model_max_length(model, tokenizer, max_length)
        seqs: list[list[int]] = []
        for ids in enc.encode(texts):
            full = enc.start + ids
            for s in range(0, max(1, len(full) - 1), max_len - 1):
                window = full[s : s + max_len]
                if len(window) > 1:
                    seqs.append(window)
        self.n_conts = [len(s) - 1 for s in seqs]
        self.plan = (_SequencePlan(seqs, self.n_conts, pad_id=_pad_id(tokenizer), batch_size=batch_size,
                                   device=_device(model)) if seqs else None)

    def run(self, model: Any, progress: str | None = None) -> tuple[float, int]:
        """``(summed log-probability, predicted tokens)`` under ``model``."""
        if self.plan is None:
            return 0.0, 0
        with _inference(model):
            sums = self.plan.run(model, progress)
        return math.fsum(sums), sum(self.n_conts)


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
    return _PerplexityRequests(model, tokenizer, texts, batch_size=batch_size, max_length=max_length).run(
        model, progress)


# -- generation --------------------------------------------------------------------------------------------------
class _GenerationRequests:
    """The prompts of :func:`generate_continuations`, tokenised, truncated and padded into batches once."""

    def __init__(
        self, model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.tokenizer, self.max_new_tokens, self.size = tokenizer, max_new_tokens, len(prompts)
        self.batches: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []  # (indices, input_ids, mask)
        if not prompts:
            return
        max_len = model_max_length(model, tokenizer, max_length)
        if max_new_tokens >= max_len:
            raise ConfigError(f"max_new_tokens={max_new_tokens} must be below max_length={max_len}")
        enc = _Encoder(model, tokenizer)
        budget = max_len - max_new_tokens
        inputs = [enc.context(ids)[-budget:] for ids in enc.encode(prompts)]
        self.eos = _eos_ids(model, tokenizer)
        self.pad_id = _pad_id(tokenizer)
        device = _device(model)
        for idx in _batches([len(x) for x in inputs], batch_size):
            self.batches.append((idx, _pad([inputs[i] for i in idx], self.pad_id, left=True, device=device),
                                 _pad([[1] * len(inputs[i]) for i in idx], 0, left=True, device=device)))

    def run(self, model: Any, progress: str | None = None) -> list[str]:
        """Greedy continuation of each prompt under ``model``, decoded up to the first EOS."""
        from transformers import GenerationConfig

        if not self.batches:
            return []
        gen_cfg = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=self.pad_id,
            eos_token_id=self.eos or None, bos_token_id=getattr(self.tokenizer, "bos_token_id", None),
        )
        out = [""] * self.size
        with _inference(model), _progress(len(self.batches), progress) as bar:
            for idx, input_ids, mask in self.batches:
                generated = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg)
                new_tokens = generated[:, input_ids.shape[1]:].tolist()  # never the prompt
                for j, i in enumerate(idx):
                    tokens = new_tokens[j]
                    stop = next((p for p, t in enumerate(tokens) if t in self.eos), len(tokens))
                    out[i] = self.tokenizer.decode(tokens[:stop], skip_special_tokens=True)
                bar.update(1)
        return out


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
    return _GenerationRequests(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               max_length=max_length).run(model, progress)


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
class _ClassifierRequests:
    """``(text, text_pair)`` of each example tokenised and right-padded into batches once (see :func:`classify`)."""

    def __init__(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], *, batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        self.size = len(examples)
        self.batches: list[tuple[list[int], dict[str, torch.Tensor]]] = []
        if not examples:
            return
        texts, pairs = encoder_inputs(examples, where="evaluation")
        max_len = model_max_length(model, tokenizer, max_length)
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_len)
        columns = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        pad_values = {"input_ids": _pad_id(tokenizer), "attention_mask": 0, "token_type_ids": 0}
        device = _device(model)
        for idx in _batches([len(ids) for ids in columns["input_ids"]], batch_size):
            self.batches.append((idx, {
                k: _pad([rows[i] for i in idx], pad_values[k], left=False, device=device) for k, rows in columns.items()
            }))

    def scores(self, model: Any, progress: str | None = None) -> list[list[float]]:
        """``model``'s logits for each example (one float per label, exactly as computed)."""
        out: list[list[float]] = [[] for _ in range(self.size)]
        if not self.batches:
            return out
        with _inference(model), _progress(len(self.batches), progress) as bar:
            for idx, batch in self.batches:
                logits = model(**batch).logits.float().tolist()  # (B, num_labels); float32 holds bf16 exactly
                for j, i in enumerate(idx):
                    out[i] = logits[j]
                bar.update(1)
        return out

    def run(self, model: Any, progress: str | None = None) -> list[int]:
        """Argmax of ``model``'s logits for each example (ties go to the lowest label)."""
        return [argmax(s) for s in self.scores(model, progress)]


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
    return _ClassifierRequests(model, tokenizer, examples, batch_size=batch_size, max_length=max_length).run(
        model, progress)
