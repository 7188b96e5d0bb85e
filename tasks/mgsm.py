"""MGSM: grade-school math word problems in ten languages (Shi et al., 2022), https://arxiv.org/abs/2210.03057.

Schema (``juletxara/mgsm``, one config per language): ``question``, ``answer`` (a worked solution, or null in
``test``), ``answer_number`` (the gold number), ``equation_solution``. The English source is GSM8K
(``openai/gsm8k``/``main``: ``question``, ``answer`` ending in ``#### N``); :meth:`MgsmTask.format` reads both.

Canonical splits: English ``train`` is GSM8K ``train`` less its last ``validation_examples`` problems, which form
English ``validation`` (GSM8K ``test`` is where MGSM's problems come from, so it is not used); English ``test`` is
MGSM's English ``test`` (250). Every other language has ``test`` (250) only (zero-shot transfer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.errors import ConfigError
from adamergex.registry import TASKS
from adamergex.task import DataFiles, Example, Task, TaskKind

from . import _hub
from ._common import PAPER_LANGUAGES, config_for
from ._metrics import NumericExactMatch, last_number, normalize_number
from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["MgsmTask"]

_HUB_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations: "48/2 = <<48/2=24>>24"


@TASKS.register("mgsm")
@dataclass(frozen=True)
class MgsmTask(Task):
    """MGSM as generation: the answer is the last number of the continuation, scored by numeric exact match.

    Template fields: the raw columns plus ``answer_number`` (normalised; from ``#### N`` for GSM8K rows) and
    ``rationale`` (the GSM8K solution before ``####`` without calculator annotations; for MGSM rows the ``answer``
    text as is, empty when null).
    """

    name: ClassVar[str] = "mgsm"
    kind: ClassVar[TaskKind] = "generation"
    required_columns: ClassVar[tuple[str, ...]] = ("question",)

    dataset_id: str = "juletxara/mgsm"
    # A script-free revision (loads with ``datasets`` ≥ 4 by language config: 8 train, 250 test per language).
    revision: str | None = "b2f13d426afe3be8d69a7e739b36724db8b66bbc"
    languages: tuple[str, ...] = ("en", *(lang for lang in PAPER_LANGUAGES if lang in _HUB_LANGUAGES))
    max_new_tokens: int = 256
    source_dataset_id: str = "openai/gsm8k"
    """Hub dataset of the English training source (GSM8K)."""
    source_config: str = "main"
    """Config of the English source."""
    source_revision: str | None = "740312add88f781978c0658806c59bc2815b9866"
    """Pinned revision of the English source."""
    validation_examples: int = 500
    """Last GSM8K ``train`` problems held out as English ``validation``."""
    template: str = "cot"
    """Prompt template name (see ``adamergex.tasks._prompts``): ``cot`` or ``direct``."""

    def __post_init__(self) -> None:
        get_template(self.name, self.template)
        if isinstance(self.validation_examples, bool) or not (
            isinstance(self.validation_examples, int) and self.validation_examples > 0
        ):
            raise ConfigError(f"validation_examples must be a positive integer, got {self.validation_examples!r}")

    def hub_source(self, language: str, split: str) -> _hub.HubSource:
        """Where ``split`` of ``language`` lives on the Hub (see the module docstring for which exist)."""
        self.check_language(language)
        self.check_split(split)
        if language == self.source_language and split != "test":
            held_out = self.validation_examples
            hub_split = {"train": f"train[:-{held_out}]", "validation": f"train[-{held_out}:]"}
            return _hub.HubSource(self.source_dataset_id, self.source_config, hub_split[split], self.source_revision)
        if split != "test":
            raise _hub.missing_split(self.name, language, split, {"test": "test"})
        config = config_for(self.name, language, {lang: lang for lang in _HUB_LANGUAGES})
        return _hub.HubSource(self.dataset_id, config, "test", self.revision)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        return _hub.load_source(self.hub_source(language, split))

    def load(
        self,
        language: str,
        split: str,
        *,
        data_files: DataFiles | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> datasets.Dataset:
        """As :meth:`Task.load`, also requiring a gold answer column: ``answer_number`` (MGSM) or ``answer`` (GSM8K)."""
        ds = super().load(language, split, data_files=data_files, limit=limit, seed=seed)
        if "answer_number" not in ds.column_names and "answer" not in ds.column_names:
            where = data_files if data_files is not None else f"{language}/{split}"
            raise ConfigError(
                f"task 'mgsm' needs column 'answer_number' (MGSM) or 'answer' (GSM8K, ending in '#### N'); "
                f"{where} has {ds.column_names}"
            )
        return ds

    def format(self, example: Mapping[str, Any]) -> Example:
        answer = example.get("answer")
        number = example.get("answer_number")
        rationale = ""
        if isinstance(answer, str) and "####" in answer:
            solution, _, final = answer.rpartition("####")
            rationale = "\n".join(
                line.strip() for line in _CALCULATOR.sub("", solution).strip().splitlines() if line.strip()
            )
            if number is None:
                number = final
        elif isinstance(answer, str):
            rationale = answer.strip()
        gold = normalize_number(str(number)) if number is not None else None
        if gold is None:
            raise ConfigError(
                "mgsm examples need a numeric 'answer_number' or an 'answer' ending in '#### N'; "
                f"got answer_number={example.get('answer_number')!r}, answer={answer!r}"
            )
        fields = {**example, "answer_number": gold, "rationale": rationale}
        prompt, _, target = get_template(self.name, self.template).render(fields, where=f"mgsm/{self.template}")
        return Example(prompt=prompt, target=target, references=(gold,))

    def extract_answer(self, continuation: str) -> str:
        """The last number of the continuation, normalised (``"1,234.0"`` → ``"1234"``; ``""`` when none).

        Reading stops at the first blank line or ``"Question:"``: past it the model is writing a new problem.
        """
        answer = continuation.split("\n\n", 1)[0].split("Question:", 1)[0]
        return last_number(answer)

    def metric(self) -> torchmetrics.Metric:
        return NumericExactMatch()
