"""XCOPA: causal commonsense reasoning in 11 languages (Ponti et al., 2020), https://arxiv.org/abs/2005.00333.

Schema (``cambridgeltl/xcopa``, one config per language; the English source ``aps/super_glue``/``copa`` has the
same columns): ``premise``, ``choice1``, ``choice2``, ``question`` (``cause`` or ``effect``, in English for every
language), ``label`` (0 = ``choice1``, 1 = ``choice2``).

Canonical splits: English ``train`` (400) and ``validation`` (100) come from COPA (its test labels are hidden, so
English has no ``test``); every other language has ``validation`` (100) and ``test`` (500) from XCOPA and no
``train`` (zero-shot transfer).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.errors import ConfigError
from adamergex.registry import TASKS
from adamergex.task import Example, Task, TaskKind

from . import _hub
from ._common import PAPER_LANGUAGES, config_for, gold_label
from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["XcopaTask"]

_HUB_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
_CONNECTIVES = {"cause": "because", "effect": "therefore"}


def _strip_final_punctuation(text: str) -> str:
    text = text.strip()
    while text and unicodedata.category(text[-1]).startswith("P"):
        text = text[:-1].rstrip()
    return text


def _lower_first(text: str) -> str:
    text = text.strip()
    return text[:1].lower() + text[1:]


@TASKS.register("xcopa")
@dataclass(frozen=True)
class XcopaTask(Task):
    """XCOPA as two-way multiple choice, scored by decoders as sentence completions.

    Template fields: the raw columns plus ``premise_stem`` (premise without final punctuation), ``connective``
    (``because`` for a cause, ``therefore`` for an effect) and ``choice1_lower``/``choice2_lower`` (first letter
    lower-cased).
    """

    name: ClassVar[str] = "xcopa"
    kind: ClassVar[TaskKind] = "multiple_choice"
    required_columns: ClassVar[tuple[str, ...]] = ("premise", "choice1", "choice2", "question", "label")

    dataset_id: str = "cambridgeltl/xcopa"
    # Must be pinned: no commit of the script-free (Parquet) revision was found to cite; "main" until then.
    revision: str | None = "main"
    languages: tuple[str, ...] = ("en", *(lang for lang in PAPER_LANGUAGES if lang in _HUB_LANGUAGES))
    num_labels: int = 2
    source_dataset_id: str = "aps/super_glue"
    """Hub dataset of the English source (COPA)."""
    source_config: str = "copa"
    """Config of the English source."""
    source_revision: str | None = "3de24cf8022e94f4ee4b9d55a6f539891524d646"
    """Pinned revision of the English source."""
    template: str = "connective"
    """Prompt template name (see ``adamergex.tasks._prompts``)."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (see the module docstring for which exist)."""
        self.check_language(language)
        self.check_split(split)
        if language == self.source_language:
            available = {"train": "train", "validation": "validation"}
            if split not in available:
                raise _hub.missing_split(self.name, language, split, available)
            return _hub.HubSource(self.source_dataset_id, self.source_config, available[split], self.source_revision)
        available = {"validation": "validation", "test": "test"}
        if split not in available:
            raise _hub.missing_split(self.name, language, split, available)
        config = config_for(self.name, language, {lang: lang for lang in _HUB_LANGUAGES})
        return _hub.HubSource(self.dataset_id, config, available[split], self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def format(self, example: Mapping[str, Any]) -> Example:
        question = example["question"]
        if question not in _CONNECTIVES:
            raise ConfigError(f"xcopa 'question' must be one of {sorted(_CONNECTIVES)}, got {question!r}")
        fields = {
            **example,
            "premise_stem": _strip_final_punctuation(example["premise"]),
            "connective": _CONNECTIVES[question],
            "choice1_lower": _lower_first(example["choice1"]),
            "choice2_lower": _lower_first(example["choice2"]),
        }
        prompt, choices, _ = get_template(self.name, self.template).render(fields, where=f"xcopa/{self.template}")
        label = gold_label(example["label"], self.num_labels, task=self.name)
        return Example(
            prompt=prompt,
            target=choices[label] if label is not None else "",
            choices=choices,
            label=label,
        )

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=self.num_labels, average="micro")
