"""Token ids for one training objective: the encoding step of the training data module (``_data``).

Part of :mod:`adamergex.training`; import the public names from there. ``_data``'s docstring has the table of what
one training item is for each objective and task kind, and why MLM masking is static.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ConfigError
from ..models import OBJECTIVES, Objective
from ..packing import group_segments, pack_token_ids
from ..task import Example, encoder_inputs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "PACKINGS", "Packing", "data_fingerprint", "encode_examples", "mask_tokens"]

IGNORE_INDEX = -100
Packing = Literal["stream", "lines", "lines_packed"]
PACKINGS: tuple[str, ...] = ("stream", "lines", "lines_packed")
"""Language-modelling item shapes (``encode_examples``; the reference tasks' ``packing`` option)."""


def mask_tokens(
    ids: np.ndarray, *, mask_id: int, vocab_size: int, special_ids: Sequence[int], probability: float,
    generator: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of one sequence: ``(input_ids, labels)`` with labels ``-100`` except at selected positions.

    Each non-special token is selected with ``probability``; a selected token becomes ``mask_id`` (80%), a random
    token (10%) or stays (10%). At least one token is selected so every chunk contributes to the loss.
    """
    candidates = ~np.isin(ids, np.asarray(list(special_ids), dtype=np.int64))
    selected = (generator.random(ids.shape) < probability) & candidates
    if not selected.any() and candidates.any():
        selected[generator.choice(np.flatnonzero(candidates))] = True
    labels = np.where(selected, ids, IGNORE_INDEX)
    out = ids.copy()
    roll = generator.random(ids.shape)
    out[selected & (roll < 0.8)] = mask_id
    random_pos = selected & (roll >= 0.8) & (roll < 0.9)
    out[random_pos] = generator.integers(0, vocab_size, size=int(random_pos.sum()))
    return out, labels


def _target_of(example: Example, task_name: str) -> str:
    if example.target:
        return example.target
    if example.choices and example.label is not None:
        return example.choices[example.label]
    raise ConfigError(
        f"task {task_name!r} gave an example with neither a target nor choices and a label; a decoder needs "
        "one of them to train on (was the label missing from the data?)"
    )


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, special: bool) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), 1000):  # batched calls keep fast tokenizers fast on large corpora
        out.extend(tokenizer(list(texts[i : i + 1000]), add_special_tokens=special)["input_ids"])
    return out


def encode_examples(
    examples: Sequence[Example],
    *,
    tokenizer: PreTrainedTokenizerBase,
    objective: Objective,
    task_kind: str,
    task_name: str = "task",
    max_length: int = 512,
    seed: int = 0,
    mlm_probability: float = 0.15,
    packing: Packing = "stream",
) -> list[dict[str, Any]]:
    """Token ids for ``objective`` (see the module table); one dict of numpy arrays / ints per training item.

    ``packing`` shapes language-modelling items (the reference tasks' option of that name): ``stream`` cuts the
    documents joined end to end into full chunks of ``max_length``; ``lines`` makes one item per non-empty
    example (line), ``(ids + [EOS])[:max_length]`` for a causal LM and ``[CLS] + ids[:max_length − 2] + [SEP]``
    for a masked LM; ``lines_packed`` gathers those per-line segments (causal: ``ids + [EOS]``; masked:
    ``ids + [SEP]`` after one ``[CLS]``) in order into items of at most ``max_length`` without splitting one.
    Line items carry ``labels`` (the collator pads them with -100, so padding never enters the loss).

    Raises:
        ConfigError: the objective cannot train on this task kind, an example lacks what the objective needs,
            the tokenizer lacks a needed special token, an unknown ``packing``, or the text is too short for
            one packed chunk (or has no non-empty line).
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; available: {', '.join(OBJECTIVES)}")
    if packing not in PACKINGS:
        raise ConfigError(f"packing must be one of {list(PACKINGS)}, got {packing!r}")
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2 tokens, got {max_length}")
    lm = task_kind == "language_modeling"
    if objective == "masked_lm" and not lm:
        raise ConfigError(f"a masked LM trains on language_modeling tasks only; task {task_name!r} is {task_kind!r}")
    if objective == "sequence_classification" and task_kind != "classification":
        raise ConfigError(
            f"a sequence classifier trains on classification tasks only; task {task_name!r} is {task_kind!r}"
        )
    if objective == "seq2seq_lm" and lm:
        raise ConfigError(f"seq2seq models train on prompt/target tasks; task {task_name!r} is language_modeling")

    if objective == "causal_lm" and lm:
        eos = tokenizer.eos_token_id
        docs = _tokenize(tokenizer, [e.prompt for e in examples], special=False)
        if packing != "stream":  # a truncated line keeps no EOS: it did not end there
            segments = [(list(d) + ([eos] if eos is not None else []))[:max_length] for d in docs if len(d)]
            lines = _line_items(segments, max_length, packing, task_name)
            return [{"input_ids": ids, "labels": ids.copy()} for ids in lines]
        chunks = pack_token_ids(docs, max_length, eos)
        _check_chunks(chunks, docs, max_length, task_name)
        return [{"input_ids": c} for c in chunks]

    if objective == "masked_lm":
        if tokenizer.mask_token_id is None:
            raise ConfigError("masked LM training needs a tokenizer with a mask token; this tokenizer has none")
        cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        inner = max_length - (cls is not None) - (sep is not None)
        docs = _tokenize(tokenizer, [e.prompt for e in examples], special=False)
        if packing != "stream":  # [CLS] line [SEP] (line …): a truncated line still closes with SEP, as BERT's do
            segments = [list(d)[:inner] + ([sep] if sep is not None else []) for d in docs if len(d)]
            pieces: Sequence[np.ndarray] = _line_items(segments, max_length - (cls is not None), packing, task_name)
        else:
            stream = pack_token_ids(docs, inner, sep)  # (n, inner)
            _check_chunks(stream, docs, max_length, task_name)
            pieces = list(stream)
        specials = [int(i) for i in tokenizer.all_special_ids]
        items = []
        closing = [sep] if sep is not None and packing == "stream" else []  # line segments carry their own SEP
        for index, chunk in enumerate(pieces):
            ids = np.concatenate([[cls] if cls is not None else [], chunk, closing])
            rng = np.random.default_rng([seed, index])
            masked, labels = mask_tokens(
                ids.astype(np.int64), mask_id=int(tokenizer.mask_token_id), vocab_size=len(tokenizer),
                special_ids=specials, probability=mlm_probability, generator=rng,
            )
            items.append({"input_ids": masked, "labels": labels})
        return items

    if objective == "sequence_classification":
        unlabelled = [i for i, e in enumerate(examples) if e.label is None]
        if unlabelled:
            raise ConfigError(
                f"task {task_name!r} examples {unlabelled[:5]} have no Example.label; encoder classification "
                "trains on labelled examples only"
            )
        # the encoder's input comes from the one function evaluation uses too (adamergex.task.encoder_inputs)
        texts, pairs = encoder_inputs(examples, where=f"task {task_name!r}")
        items = []
        for start in range(0, len(texts), 1000):  # batched calls keep fast tokenizers fast
            stop = start + 1000
            enc = tokenizer(texts[start:stop], pairs[start:stop] if pairs is not None else None, truncation=True,
                            max_length=max_length)
            for j, e in enumerate(examples[start:stop]):
                item: dict[str, Any] = {"input_ids": np.asarray(enc["input_ids"][j], dtype=np.int64),
                                        "labels": int(e.label)}  # type: ignore[arg-type]  # checked above
                if "token_type_ids" in enc:
                    item["token_type_ids"] = np.asarray(enc["token_type_ids"][j], dtype=np.int64)
                items.append(item)
        return items

    targets = [_target_of(e, task_name) for e in examples]
    prompts = [e.prompt for e in examples]
    if objective == "seq2seq_lm":
        items = []
        for p, t in zip(prompts, targets):
            src = tokenizer(p, truncation=True, max_length=max_length)["input_ids"]
            tgt = tokenizer(text_target=t, truncation=True, max_length=max_length)["input_ids"]
            items.append({"input_ids": np.asarray(src, dtype=np.int64), "labels": np.asarray(tgt, dtype=np.int64)})
        return items

    # causal_lm on prompt/target: prompt and target tokenised apart so the boundary is exact, as scoring does.
    eos = tokenizer.eos_token_id
    prompt_ids = _tokenize(tokenizer, prompts, special=True)
    target_ids = _tokenize(tokenizer, targets, special=False)
    items = []
    for p_ids, t_ids in zip(prompt_ids, target_ids):
        tgt = (list(t_ids) + ([eos] if eos is not None else []))[:max_length]
        prm = list(p_ids)[-(max_length - len(tgt)) :] if len(tgt) < max_length else []  # keep a long prompt's end
        ids = np.asarray(prm + tgt, dtype=np.int64)
        labels = np.asarray([IGNORE_INDEX] * len(prm) + tgt, dtype=np.int64)
        items.append({"input_ids": ids, "labels": labels})
    return items


def _line_items(segments: list[list[int]], budget: int, packing: str, task_name: str) -> list[np.ndarray]:
    """One item per segment (``lines``) or whole segments grouped up to ``budget`` tokens (``lines_packed``)."""
    if not segments:
        raise ConfigError(f"task {task_name!r}: the training text has no non-empty line to train on")
    if packing == "lines":
        return [np.asarray(seg, dtype=np.int64) for seg in segments]
    return group_segments(segments, budget)


def _check_chunks(chunks: np.ndarray, docs: Sequence[Sequence[int]], length: int, task_name: str) -> None:
    if len(chunks) == 0:
        total = sum(len(d) for d in docs)
        raise ConfigError(
            f"task {task_name!r}: the training text has {total} tokens, fewer than one chunk of {length}; "
            "give more text or lower max_length"
        )


def data_fingerprint(items: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    """SHA-256 over ``header`` (objective, tokenizer, lengths) and every item's arrays, in order."""
    h = hashlib.sha256(json.dumps(dict(header), sort_keys=True, default=str).encode())
    for item in items:
        for key in sorted(item):
            value = np.asarray(item[key], dtype=np.int64)
            h.update(f"{key}|{value.shape}|".encode())
            h.update(value.tobytes())
    return h.hexdigest()
