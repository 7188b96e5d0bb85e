"""The positive control's construction: ``lex`` as ``src`` read in a sign-flipped frame of the residual stream.

With ``BaseModelConfig.frame_flip = k`` (and the word tokenizer, ``lex`` held out of pretraining), the base model
is built so that AdaMergeX's assumption holds by construction. Let ``F`` be ``k`` channels of the residual stream
(seeded) and ``s ∈ {−1, +1}^d`` the vector that is −1 on ``F``. Every ``lex`` word is one token, paired one to one
with the ``src`` word it relabels (:func:`word_pairs`). After pretraining (on ``src``, ``sov``, ``morph``):

    E[lex] = s ⊙ E[src]          lm_head[lex] = s ⊙ lm_head[src]

and every other row (names, digits, punctuation, specials, ``sov``/``morph`` words: the tokens both frames share)
is kept at 0 on ``F`` during pretraining, so that ``s ⊙ row = row`` for them. Then for any text, its ``lex``
rendering enters the residual stream as ``s ⊙`` what the ``src`` rendering does. Because ``s`` has entries ±1,
RMSNorm commutes with it (``rms(s ⊙ h) = rms(h)``; the gain is per channel), so the base model with

* every residual *reader* (``q/k/v/gate/up_proj``) fed ``s ⊙ input`` and
* every residual *writer* (``o_proj``, ``down_proj``) emitting ``s ⊙ output``

computes on the ``lex`` text exactly what it computes on the ``src`` text, with the residual stream in the flipped
frame and every ``src`` token's probability carried by its ``lex`` twin. That map is an (IA)³ adapter
(:func:`oracle_ia3`: ``l = s`` on the readers as feed-forward modules, ``l = s`` on the writers' outputs), and a
LoRA adapter of rank ``≥ k`` (``ΔW = −2 W P_F`` on readers, ``−2 P_F W`` on writers). A task adapter trained on
``src`` composes with it exactly under the multiplicative merge ((IA)³: ``l_task ⊙ s`` is the task in the flipped
frame) and to first order under the additive one (LoRA: the error is ``−2 ΔW_task P_F``).

The base model itself, without an adapter, reads ``lex`` with ``k`` channels of every residual reader inverted:
that is the cross-lingual gap the control asks the merge to close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adamergex.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = ["READERS", "WRITERS", "apply_flip", "constrain_shared", "flip_sign", "oracle_ia3", "shared_rows",
           "word_pairs"]

READERS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
"""Llama modules that read the residual stream (through an RMSNorm): (IA)³ scales their input."""
WRITERS = ("o_proj", "down_proj")
"""Llama modules that write to the residual stream: (IA)³ scales their output."""


def flip_sign(hidden_size: int, k: int, seed: int) -> torch.Tensor:
    """``s``: ``hidden_size`` entries of +1 with ``k`` of them, chosen by ``seed``, set to −1 (float32)."""
    import torch

    if not 0 < k <= hidden_size:
        raise ConfigError(f"base model frame_flip must be in 1..hidden_size ({hidden_size}), got {k}")
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    s = torch.ones(hidden_size)
    s[torch.randperm(hidden_size, generator=gen)[:k]] = -1.0
    return s


def word_pairs(tokenizer: PreTrainedTokenizerFast, world_seed: int) -> list[tuple[int, int]]:
    """``(src token id, lex token id)`` for every source word form: the relabelling as token ids.

    Raises:
        ConfigError: a word is not exactly one token, or two forms share a token (the tokenizer is not the word
            tokenizer of this world).
    """
    from .grammar import SOURCE_FORMS, make_languages

    langs = make_languages(world_seed)
    vocab = tokenizer.get_vocab()
    pairs: list[tuple[int, int]] = []
    for form in sorted(SOURCE_FORMS):
        words = (langs["src"].word(form), langs["lex"].word(form))
        ids = [vocab.get(w) for w in words]
        if None in ids:
            raise ConfigError(f"frame_flip needs one token per word; {words} are not both in the vocabulary "
                              f"(tokenizer must be 'word')")
        pairs.append((ids[0], ids[1]))  # type: ignore[arg-type]
    flat = [i for p in pairs for i in p]
    if len(set(flat)) != len(flat):
        raise ConfigError("frame_flip needs the src and lex words to be distinct tokens; some share one")
    return pairs


def shared_rows(vocab_size: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Ids of every token that is neither a ``src`` nor a ``lex`` word: both frames read them unchanged."""
    import torch

    mask = torch.ones(vocab_size, dtype=torch.bool)
    for a, b in pairs:
        mask[a] = mask[b] = False
    return mask.nonzero().flatten()


def constrain_shared(model: PreTrainedModel, rows: torch.Tensor, s: torch.Tensor) -> None:
    """Set the flipped channels of the shared rows of ``embed_tokens`` and ``lm_head`` to 0 (in place).

    Called at initialisation and after every pretraining step, so that the model learns under the constraint
    (Adam's moments of those entries see the gradient, but the entries themselves stay at 0).
    """
    import torch

    flipped = (s < 0).nonzero().flatten()
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[rows.unsqueeze(1), flipped.unsqueeze(0)] = 0.0


def apply_flip(model: PreTrainedModel, pairs: list[tuple[int, int]], s: torch.Tensor) -> None:
    """Overwrite every ``lex`` row of ``embed_tokens`` and ``lm_head`` with ``s ⊙`` its ``src`` twin (in place)."""
    import torch

    src = torch.tensor([a for a, _ in pairs])
    lex = torch.tensor([b for _, b in pairs])
    with torch.no_grad():
        for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            weight[lex] = weight[src] * s.to(weight.dtype)


def oracle_ia3(model: PreTrainedModel, s: torch.Tensor) -> dict[str, Any]:
    """The (IA)³ adapter that maps ``src`` computation onto ``lex`` exactly: PEFT options and its state dict.

    Returns ``{"options": ..., "tensors": {peft key: vector}}`` in the format PEFT saves: every reader's
    ``ia3_l`` is ``s`` with shape ``(1, in_features)`` (feed-forward), every writer's is ``s`` with shape
    ``(out_features, 1)``.
    """
    tensors: dict[str, Any] = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in READERS:
            tensors[f"base_model.model.{name}.ia3_l"] = s.reshape(1, -1).clone()
        elif leaf in WRITERS:
            tensors[f"base_model.model.{name}.ia3_l"] = s.reshape(-1, 1).clone()
    options = {"target_modules": [*READERS, *WRITERS], "feedforward_modules": list(READERS)}
    return {"options": options, "tensors": tensors}
