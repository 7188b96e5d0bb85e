"""torchmetrics metrics shared by the generation tasks, all updated as ``update(preds, references)``.

``preds`` are the answers that :meth:`Task.extract_answer` read from generated continuations (one string per
example) and ``references`` the acceptable answers of each example (``Example.references``). Every score is in
[0, 1].
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import torch
from torchmetrics import Metric
from torchmetrics.text import SQuAD

from adamergex.errors import ConfigError

if TYPE_CHECKING:
    from torchmetrics.text.rouge import ROUGEScore

__all__ = ["ExtractiveQAScore", "NumericExactMatch", "last_number", "normalize_number", "rouge_l"]

# An optional minus, digits with optional thousands commas, an optional decimal part. "12." at the end of a
# sentence reads as 12: the decimal part needs a digit after the point.
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written in ``text`` (commas removed, ``12.0`` → ``12``), or ``None``."""
    cleaned = text.strip().replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def last_number(text: str) -> str:
    """The last number written in ``text``, normalised; ``""`` when there is none."""
    matches = _NUMBER.findall(text)
    for match in reversed(matches):
        normalized = normalize_number(match.strip(","))
        if normalized is not None:
            return normalized
    return ""


def _check_batch(preds: Sequence[str], references: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    if isinstance(preds, str):
        raise ConfigError("preds must be a sequence of strings (one per example), got a single string")
    if len(preds) != len(references):
        raise ConfigError(f"preds and references must have the same length, got {len(preds)} and {len(references)}")
    return [(refs,) if isinstance(refs, str) else tuple(refs) for refs in references]


class NumericExactMatch(Metric):
    """Fraction of predictions whose number equals one of the references' numbers (MGSM accuracy)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Count ``preds[i]`` correct when its number equals a number of ``references[i]``."""
        for pred, refs in zip(preds, _check_batch(preds, references)):
            number = normalize_number(pred)
            gold = {normalize_number(r) for r in refs} - {None}
            self.correct += int(number is not None and number in gold)
            self.total += 1

    def compute(self) -> torch.Tensor:
        """Accuracy in [0, 1] (NaN before any update)."""
        return self.correct.float() / self.total


class ExtractiveQAScore(SQuAD):
    """SQuAD v1.1 exact match and token F1 (torchmetrics ``SQuAD``), fed with plain strings and scaled to [0, 1].

    Normalisation is the official SQuAD one (lower case, punctuation and English articles removed, whitespace
    tokens), as in the XQuAD paper; for scripts written without spaces (zh, th) F1 therefore falls back to whole
    answers.
    """

    def update(self, preds: Sequence[str], references: Sequence[Sequence[str]]) -> None:  # type: ignore[override]
        """Score ``preds[i]`` against the best of ``references[i]``."""
        refs = _check_batch(preds, references)
        super().update(
            [{"prediction_text": p, "id": str(i)} for i, p in enumerate(preds)],
            [{"answers": {"text": list(r), "answer_start": [0] * len(r)}, "id": str(i)} for i, r in enumerate(refs)],
        )

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"exact_match": ..., "f1": ...}`` in [0, 1]."""
        return {key: value / 100.0 for key, value in super().compute().items()}


# Scripts written without spaces between words: ROUGE counts their characters as tokens.
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x2FA1F),  # CJK extensions B+
)


def _unspaced(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _UNSPACED_RANGES)


def _rouge_normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _rouge_tokenize(text: str) -> list[str]:
    """Words of letters, marks and digits in any script; characters of unspaced scripts one by one."""
    tokens: list[str] = []
    word: list[str] = []
    for char in text:
        if _unspaced(char):
            if word:
                tokens.append("".join(word))
                word = []
            if unicodedata.category(char)[0] in "LNM":
                tokens.append(char)
        elif unicodedata.category(char)[0] in "LNM":
            # marks (M) stay inside words: Devanagari vowel signs are marks
            word.append(char)
        elif word:
            tokens.append("".join(word))
            word = []
    if word:
        tokens.append("".join(word))
    return tokens


def rouge_l() -> ROUGEScore:
    """ROUGE-L F-measure/precision/recall with a tokenizer that works for every script.

    torchmetrics' default normaliser keeps ``[a-z0-9]`` only, which erases Arabic, Hindi, Russian, Thai and Chinese
    text; this one keeps letters, marks and digits of any script, and splits Chinese/Japanese/Thai into characters.
    Stemming and ``rougeLsum`` are off (they need nltk data).
    """
    from torchmetrics.text.rouge import ROUGEScore

    return ROUGEScore(rouge_keys=("rougeL",), normalizer=_rouge_normalize, tokenizer=_rouge_tokenize)
