"""Tiny models and tokenizers built in code, for tests, examples and the offline demo.

Nothing here downloads: tokenizers are trained with the ``tokenizers`` library on text the caller gives, and
models are randomly initialised from a config. The same builders serve real use on air-gapped machines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = [
    "SPECIAL_TOKENS", "tiny_bert_classifier", "tiny_bert_mlm", "tiny_llama", "train_tokenizer", "train_word_tokenizer",
]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, *, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``.

    Specials: ``<pad>`` (id 0), ``<s>`` (bos), ``</s>`` (eos), ``<unk>``, ``<mask>``. Deterministic for the same
    texts and settings.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    return fast


def train_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per whitespace-separated word or punctuation mark seen in ``texts``.

    Every word form of ``texts`` becomes exactly one token (no frequency cut-off), so a one-to-one relabelling of
    words is a one-to-one relabelling of token ids: the property the synthetic world's positive control rests on.
    Words are split by ``tokenizers``' ``Whitespace`` pre-tokenizer (``\\w+|[^\\w\\s]+``) and decoded joined by
    single spaces. Specials as :func:`train_tokenizer`; ids are assigned in sorted order of the words, so the
    tokenizer is deterministic for the same set of words.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in split.pre_tokenize_str(text)} - set(SPECIAL_TOKENS))
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = split
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with single spaces
    fast: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        mask_token="<mask>",
    )
    return fast


def tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 64,
    max_positions: int = 256,
    seed: int = 0,
    name_or_path: str = "tiny-llama",
) -> PreTrainedModel:
    """A randomly initialised Llama-architecture causal LM (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.config._name_or_path = name_or_path
    model.name_or_path = name_or_path
    return model


def _bert_config(vocab_size: int, hidden_size: int, layers: int, heads: int, num_labels: int = 2) -> Any:
    from transformers import BertConfig

    options: Any = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=256,
        num_labels=num_labels,  # a PretrainedConfig option, not in BertConfig's own signature
        pad_token_id=0,
    )
    return BertConfig(**options)


def tiny_bert_classifier(
    vocab_size: int, num_labels: int, *, hidden_size: int = 32, layers: int = 2, heads: int = 4, seed: int = 0,
    name_or_path: str = "tiny-bert",
) -> PreTrainedModel:
    """A randomly initialised BERT sequence classifier (an encoder like XLM-R/mBERT, seeded)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(_bert_config(vocab_size, hidden_size, layers, heads, num_labels))
    model.config._name_or_path = name_or_path
    model.name_or_path = name_or_path
    return model


def tiny_bert_mlm(
    vocab_size: int, *, hidden_size: int = 32, layers: int = 2, heads: int = 4, seed: int = 0,
    name_or_path: str = "tiny-bert",
) -> PreTrainedModel:
    """A randomly initialised BERT masked LM (seeded)."""
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(seed)
    model = BertForMaskedLM(_bert_config(vocab_size, hidden_size, layers, heads))
    model.config._name_or_path = name_or_path
    model.name_or_path = name_or_path
    return model
