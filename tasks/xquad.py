"""XQuAD: SQuAD v1.1 paragraphs translated into 11 languages (Artetxe et al., 2020), https://arxiv.org/abs/1910.11856.

Schema (``google/xquad``, configs ``xquad.<lang>``; the English source ``rajpurkar/squad`` has the same columns
plus ``title``): ``id``, ``context``, ``question``, ``answers`` = ``{"text": [...], "answer_start": [...]}``.

Canonical splits: English ``train`` (87,599) and ``validation`` (10,570) are SQuAD's; ``test`` of every language,
English included, is that language's XQuAD set (1,190; published on the Hub as its ``validation`` split). Other
languages have no ``train`` or ``validation`` (zero-shot transfer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.errors import ConfigError
from adamergex.registry import TASKS
from adamergex.task import Example, Task, TaskKind

from . import _hub
from ._common import PAPER_LANGUAGES, config_for
from ._metrics import ExtractiveQAScore
from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["XquadTask"]

_HUB_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")


@TASKS.register("xquad")
@dataclass(frozen=True)
class XquadTask(Task):
    """XQuAD as generation: the answer is the first line of the continuation, scored by SQuAD exact match and F1.

    Template fields: the raw columns plus ``answer`` (the first gold answer text, the training target).
    """

    name: ClassVar[str] = "xquad"
    kind: ClassVar[TaskKind] = "generation"
    required_columns: ClassVar[tuple[str, ...]] = ("context", "question", "answers")

    dataset_id: str = "google/xquad"
    revision: str | None = "51adfef1c1287aab1d2d91b5bead9bcfb9c68583"
    languages: tuple[str, ...] = ("en", *(lang for lang in PAPER_LANGUAGES if lang in _HUB_LANGUAGES))
    max_new_tokens: int = 32
    source_dataset_id: str = "rajpurkar/squad"
    """Hub dataset of the English source (SQuAD v1.1)."""
    source_config: str = "plain_text"
    """Config of the English source."""
    source_revision: str | None = "7b6d24c440a36b6815f21b70d25016731768db1f"
    """Pinned revision of the English source (Parquet: ``plain_text/{split}-00000-of-00001.parquet``)."""
    template: str = "context_question"
    """Prompt template name (see ``adamergex.tasks._prompts``)."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (see the module docstring for which exist)."""
        self.check_language(language)
        self.check_split(split)
        if language == self.source_language and split != "test":
            return _hub.HubSource(self.source_dataset_id, self.source_config, split, self.source_revision)
        if split != "test":
            raise _hub.missing_split(self.name, language, split, {"test": "validation"})
        config = config_for(self.name, language, {lang: f"xquad.{lang}" for lang in _HUB_LANGUAGES})
        return _hub.HubSource(self.dataset_id, config, "validation", self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def format(self, example: Mapping[str, Any]) -> Example:
        answers = example["answers"]
        texts = answers.get("text") if isinstance(answers, Mapping) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ConfigError(
                f"xquad 'answers' must be {{'text': [str, ...], 'answer_start': [...]}} with at least one text, "
                f"got {answers!r}"
            )
        fields = {**example, "answer": texts[0]}
        prompt, _, target = get_template(self.name, self.template).render(fields, where=f"xquad/{self.template}")
        return Example(prompt=prompt, target=target, references=tuple(texts))

    def metric(self) -> torchmetrics.Metric:
        return ExtractiveQAScore()
