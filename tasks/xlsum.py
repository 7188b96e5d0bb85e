"""XL-Sum: BBC article summarisation in 44 languages (Hasan et al., 2021), https://arxiv.org/abs/2106.13822.

Schema (``csebuetnlp/xlsum``, one config per language *name*, e.g. ``french``): ``id``, ``url``, ``title``,
``summary``, ``text``. Every language has ``train``, ``validation`` and ``test``; the task adapter trains on
English ``train``. XL-Sum has no German or Greek.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.registry import TASKS
from adamergex.task import Example, Task, TaskKind

from . import _hub
from ._common import PAPER_LANGUAGES, config_for
from ._metrics import rouge_l
from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["XlsumTask"]

_HUB_CONFIGS = {
    "ar": "arabic",
    "en": "english",
    "es": "spanish",
    "fr": "french",
    "hi": "hindi",
    "ja": "japanese",
    "ko": "korean",
    "pt": "portuguese",
    "ru": "russian",
    "sw": "swahili",
    "th": "thai",
    "tr": "turkish",
    "vi": "vietnamese",
    "zh": "chinese_simplified",
}


@TASKS.register("xlsum")
@dataclass(frozen=True)
class XlsumTask(Task):
    """XL-Sum as generation: the summary is the first line of the continuation, scored by ROUGE-L.

    Template fields: the raw columns ``text`` (the article) and ``summary``.
    """

    name: ClassVar[str] = "xlsum"
    kind: ClassVar[TaskKind] = "generation"
    required_columns: ClassVar[tuple[str, ...]] = ("text", "summary")

    dataset_id: str = "csebuetnlp/xlsum"
    # Must be pinned: the Parquet revision that replaced the loading script has no commit we could cite yet.
    revision: str | None = "main"
    languages: tuple[str, ...] = ("en", *(lang for lang in PAPER_LANGUAGES if lang in _HUB_CONFIGS))
    # 84 tokens: the generation budget of the XL-Sum paper's mT5 baselines
    max_new_tokens: int = 84
    template: str = "article_summary"
    """Prompt template name (see ``adamergex.tasks._prompts``)."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (every split of every XL-Sum language exists)."""
        self.check_language(language)
        self.check_split(split)
        return _hub.HubSource(self.dataset_id, config_for(self.name, language, _HUB_CONFIGS), split, self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def format(self, example: Mapping[str, Any]) -> Example:
        prompt, _, target = get_template(self.name, self.template).render(example, where=f"xlsum/{self.template}")
        return Example(prompt=prompt, target=target, references=(example["summary"],))

    def metric(self) -> torchmetrics.Metric:
        return rouge_l()
