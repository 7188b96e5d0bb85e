"""PAWS-X: adversarial paraphrase identification (Yang et al., 2019), https://arxiv.org/abs/1908.11828.

Schema (``google-research-datasets/paws-x``, one config per language): ``id``, ``sentence1``, ``sentence2``,
``label`` with 0 = not a paraphrase, 1 = paraphrase. Every language has ``train`` (PAWS-Wiki, machine-translated
outside English), ``validation`` (2,000) and ``test`` (2,000); the task adapter trains on English ``train``
(PAWS-Wiki ``labeled_final``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from adamergex.registry import TASKS

from ._common import PAPER_LANGUAGES
from ._pair import PairClassificationTask

__all__ = ["PawsxTask"]

_HUB_LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")


@TASKS.register("pawsx")
@dataclass(frozen=True)
class PawsxTask(PairClassificationTask):
    """PAWS-X as binary classification: decoders score " No" / " Yes"; encoders read (sentence1, sentence2).

    Template fields: the raw columns ``sentence1``, ``sentence2``; the encoder templates also have ``text`` (``sentence1``) and
    ``text_pair`` (``sentence2``).
    """

    name: ClassVar[str] = "pawsx"
    required_columns: ClassVar[tuple[str, ...]] = ("sentence1", "sentence2", "label")
    hub_languages: ClassVar[tuple[str, ...]] = _HUB_LANGUAGES
    label_names: ClassVar[tuple[str, ...]] = ("not_paraphrase", "paraphrase")

    dataset_id: str = "google-research-datasets/paws-x"
    # The script-free (Parquet: ``{lang}/{split}-00000-of-00001.parquet``) revision.
    revision: str | None = "4cd8187c404bda33cb1f62b49b001115862acf37"
    languages: tuple[str, ...] = ("en", *(lang for lang in PAPER_LANGUAGES if lang in _HUB_LANGUAGES))
    num_labels: int = 2
    template: str = "same_meaning"
