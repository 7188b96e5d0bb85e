"""XNLI: three-way natural language inference (Conneau et al., 2018), https://arxiv.org/abs/1809.05053.

Schema (``facebook/xnli``, one config per language): ``premise``, ``hypothesis``, ``label`` with entailment=0,
neutral=1, contradiction=2. Every language has ``train`` (MultiNLI, machine-translated outside English),
``validation`` (2,490) and ``test`` (5,010); the task adapter trains on English ``train`` (MultiNLI itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from adamergex.registry import TASKS

from ._common import PAPER_LANGUAGES
from ._pair import PairClassificationTask

__all__ = ["XnliTask"]

_HUB_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


@TASKS.register("xnli")
@dataclass(frozen=True)
class XnliTask(PairClassificationTask):
    """XNLI as classification: decoders score " True" / " Neither" / " False"; encoders read (premise, hypothesis).

    Template fields: the raw columns ``premise``, ``hypothesis``; the encoder templates also have ``text`` (``premise``) and
    ``text_pair`` (``hypothesis``).
    """

    name: ClassVar[str] = "xnli"
    required_columns: ClassVar[tuple[str, ...]] = ("premise", "hypothesis", "label")
    hub_languages: ClassVar[tuple[str, ...]] = _HUB_LANGUAGES
    label_names: ClassVar[tuple[str, ...]] = ("entailment", "neutral", "contradiction")

    dataset_id: str = "facebook/xnli"
    revision: str | None = "b8dd5d7af51114dbda02c0e3f6133f332186418e"
    languages: tuple[str, ...] = ("en", *PAPER_LANGUAGES)
    num_labels: int = 3
    template: str = "true_neither_false"
