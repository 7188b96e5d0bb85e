"""XNLI: three-way natural language inference (Conneau et al., 2018), https://arxiv.org/abs/1809.05053.

Schema (``facebook/xnli``, one config per language): ``premise``, ``hypothesis``, ``label`` with entailment=0,
neutral=1, contradiction=2. Every language has ``train`` (MultiNLI, machine-translated outside English),
``validation`` (2,490) and ``test`` (5,010); the task adapter trains on English ``train`` (MultiNLI itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.registry import TASKS
from adamergex.task import Example, Task, TaskKind

from . import _hub
from ._common import PAPER_LANGUAGES, config_for, gold_label
from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["XnliTask"]

_HUB_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


@TASKS.register("xnli")
@dataclass(frozen=True)
class XnliTask(Task):
    """XNLI as classification: decoders score " True" / " Neither" / " False"; encoders read (premise, hypothesis).

    Template fields: the raw columns ``premise``, ``hypothesis``.
    """

    name: ClassVar[str] = "xnli"
    kind: ClassVar[TaskKind] = "classification"
    required_columns: ClassVar[tuple[str, ...]] = ("premise", "hypothesis", "label")
    label_names: ClassVar[tuple[str, ...]] = ("entailment", "neutral", "contradiction")

    dataset_id: str = "facebook/xnli"
    revision: str | None = "b8dd5d7af51114dbda02c0e3f6133f332186418e"
    languages: tuple[str, ...] = ("en", *PAPER_LANGUAGES)
    num_labels: int = 3
    template: str = "true_neither_false"
    """Prompt template name (see ``adamergex.tasks._prompts``)."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (every split of every XNLI language exists)."""
        self.check_language(language)
        self.check_split(split)
        config = config_for(self.name, language, {lang: lang for lang in _HUB_LANGUAGES})
        return _hub.HubSource(self.dataset_id, config, split, self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def format(self, example: Mapping[str, Any]) -> Example:
        prompt, choices, _ = get_template(self.name, self.template).render(example, where=f"xnli/{self.template}")
        label = gold_label(example["label"], self.num_labels, task=self.name)
        return Example(
            prompt=prompt,
            target=choices[label] if label is not None else "",
            choices=choices,
            label=label,
            text=example["premise"],
            text_pair=example["hypothesis"],
        )

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=self.num_labels, average="micro")
