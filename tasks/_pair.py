"""Sentence-pair classification on a Hub dataset with one config per language (XNLI, PAWS-X).

Subclasses set ``name``, ``required_columns`` (the two text columns first, then ``label``), ``label_names``,
``hub_languages`` (the dataset's configs) and their dataclass fields (dataset id, revision, languages,
``num_labels``, ``template``); every split of every language exists. Decoders score the template's verbalised
choices; encoders read ``(text, text_pair)`` from the two text columns through ``text_template`` and
``text_pair_template`` (default: the columns unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.task import Example, Task, TaskKind, check_text_template, render_text_template

from . import _hub
from ._common import config_for, gold_label
from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["PairClassificationTask"]


@dataclass(frozen=True)
class PairClassificationTask(Task):
    """Shared behaviour of the sentence-pair classification tasks (see module docstring)."""

    kind: ClassVar[TaskKind] = "classification"
    label_names: ClassVar[tuple[str, ...]] = ()
    hub_languages: ClassVar[tuple[str, ...]] = ()
    """Languages that are configs of the Hub dataset."""

    template: str = ""
    """Decoder prompt template name (see ``adamergex.tasks._prompts``)."""
    # Deliberately the same two options as text_classification's (a task imports only the task contract).
    text_template: str = "{text}"
    """Encoder first segment: a template over the columns and ``{text}`` (the first text column), e.g.
    ``"query: {text}"``; applied identically in training and evaluation (``{{``/``}}`` are literal braces)."""
    text_pair_template: str = "{text_pair}"
    """Encoder second segment: a template over the columns, ``{text}`` and ``{text_pair}`` (the second text
    column), e.g. ``"query: {text_pair}"``."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)
        check_text_template(self.text_template, "text_template")
        check_text_template(self.text_pair_template, "text_pair_template")

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (every split of every language exists)."""
        self.check_language(language)
        self.check_split(split)
        config = config_for(self.name, language, {lang: lang for lang in self.hub_languages})
        return _hub.HubSource(self.dataset_id, config, split, self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def format(self, example: Mapping[str, Any]) -> Example:
        prompt, choices, _ = get_template(self.name, self.template).render(
            example, where=f"{self.name}/{self.template}"
        )
        label = gold_label(example["label"], self.num_labels, task=self.name)
        first, second = self.required_columns[:2]
        fields = {**example, "text": example[first], "text_pair": example[second]}
        return Example(
            prompt=prompt,
            target=choices[label] if label is not None else "",
            choices=choices,
            label=label,
            text=render_text_template(self.text_template, fields, option="text_template", task=self.name),
            text_pair=render_text_template(self.text_pair_template, fields, option="text_pair_template",
                                           task=self.name),
        )

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=self.num_labels, average="micro")
