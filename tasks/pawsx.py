"""PAWS-X: adversarial paraphrase identification (Yang et al., 2019), https://arxiv.org/abs/1908.11828.

Schema (``google-research-datasets/paws-x``, one config per language): ``id``, ``sentence1``, ``sentence2``,
``label`` with 0 = not a paraphrase, 1 = paraphrase. Every language has ``train`` (PAWS-Wiki, machine-translated
outside English), ``validation`` (2,000) and ``test`` (2,000); the task adapter trains on English ``train``
(PAWS-Wiki ``labeled_final``).
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

__all__ = ["PawsxTask"]

_HUB_LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")


@TASKS.register("pawsx")
@dataclass(frozen=True)
class PawsxTask(Task):
    """PAWS-X as binary classification: decoders score " No" / " Yes"; encoders read (sentence1, sentence2).

    Template fields: the raw columns ``sentence1``, ``sentence2``.
    """

    name: ClassVar[str] = "pawsx"
    kind: ClassVar[TaskKind] = "classification"
    required_columns: ClassVar[tuple[str, ...]] = ("sentence1", "sentence2", "label")
    label_names: ClassVar[tuple[str, ...]] = ("not_paraphrase", "paraphrase")

    dataset_id: str = "google-research-datasets/paws-x"
    # Must be pinned: no commit of the script-free (Parquet) revision was found to cite; "main" until then.
    revision: str | None = "main"
    languages: tuple[str, ...] = ("en", *(lang for lang in PAPER_LANGUAGES if lang in _HUB_LANGUAGES))
    num_labels: int = 2
    template: str = "same_meaning"
    """Prompt template name (see ``adamergex.tasks._prompts``)."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (every split of every PAWS-X language exists)."""
        self.check_language(language)
        self.check_split(split)
        config = config_for(self.name, language, {lang: lang for lang in _HUB_LANGUAGES})
        return _hub.HubSource(self.dataset_id, config, split, self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def format(self, example: Mapping[str, Any]) -> Example:
        prompt, choices, _ = get_template(self.name, self.template).render(example, where=f"pawsx/{self.template}")
        label = gold_label(example["label"], self.num_labels, task=self.name)
        return Example(
            prompt=prompt,
            target=choices[label] if label is not None else "",
            choices=choices,
            label=label,
            text=example["sentence1"],
            text_pair=example["sentence2"],
        )

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=self.num_labels, average="micro")
