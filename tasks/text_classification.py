"""A classification task defined entirely by local files: any single-text or text-pair labelling data.

Columns and label names are fields, so one registered task covers sentiment, topic, NLI-style pairs and so on:
``get_task("text_classification", languages=("en", "fr"), labels=("negative", "positive"))``, then
``task.load("fr", "test", data_files={"test": "fr_test.jsonl"})``. Labels in the files may be class ids (int,
indexing ``labels``) or label names (str, one of ``labels``). There is no Hub dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.registry import TASKS
from adamergex.task import DataFiles, Example, Task, TaskKind, check_text_template, render_text_template

from ._prompts import get_template

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = ["TextClassificationTask"]


@TASKS.register("text_classification")
@dataclass(frozen=True)
class TextClassificationTask(Task):
    """Classification from local files: decoders score ``" <label name>"``, encoders read (text, text_pair).

    Template fields (decoder ``template`` and encoder ``text_template``/``text_pair_template``): the raw columns
    plus ``text`` and ``text_pair`` (the values of ``text_column`` and ``text_pair_column``).
    """

    name: ClassVar[str] = "text_classification"
    kind: ClassVar[TaskKind] = "classification"

    text_column: str = "text"
    """Column holding the (first) text."""
    text_pair_column: str | None = None
    """Column holding the second text of a pair, or ``None`` for single texts."""
    label_column: str = "label"
    """Column holding the gold label: a class id or a label name; -1 or null marks a hidden label."""
    labels: tuple[str, ...] = ()
    """Verbalised class names in class-id order; decoders score ``" " + name`` after the prompt."""
    template: str | None = None
    """Decoder prompt template name; ``None`` picks ``label`` for single texts and ``label_pair`` for pairs."""
    text_template: str = "{text}"
    """Encoder input: a template over the example's columns and ``{text}`` (the text column), e.g. ``"query: {text}"``
    for an encoder trained with that prefix; applied identically in training and evaluation (``{{``/``}}`` are
    literal braces)."""
    text_pair_template: str = "{text_pair}"
    """Encoder second segment of a pair: a template over the columns, ``{text}`` and ``{text_pair}`` (the
    ``text_pair_column``), e.g. ``"passage: {text_pair}"``; only with ``text_pair_column``."""

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be distinct, got {list(self.labels)}")
        if self.num_labels == 0:
            object.__setattr__(self, "num_labels", len(self.labels))
        elif self.num_labels != len(self.labels):
            raise ConfigError(
                f"num_labels must equal the number of labels ({len(self.labels)}), got {self.num_labels}"
            )
        get_template(self.name, self.template_name)
        names = check_text_template(self.text_template, "text_template")
        check_text_template(self.text_pair_template, "text_pair_template")
        if self.text_pair_column is None and "text_pair" in names:
            raise ConfigError(f"text_template {self.text_template!r} names {{text_pair}}, which single texts lack; "
                              "set text_pair_column, or leave {text_pair} out")
        if self.text_pair_column is None and self.text_pair_template != "{text_pair}":
            raise ConfigError(
                f"text_pair_template applies to text pairs; set text_pair_column too, or leave text_pair_template "
                f"at '{{text_pair}}' (got {self.text_pair_template!r})"
            )

    @property
    def template_name(self) -> str:
        """The template in use (``template``, or the default for single texts or pairs)."""
        if self.template is not None:
            return self.template
        return "label" if self.text_pair_column is None else "label_pair"

    @property  # instance-level: the columns are fields of this task
    def required_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        pair = () if self.text_pair_column is None else (self.text_pair_column,)
        return (self.text_column, *pair, self.label_column)

    def _check_labels(self) -> None:
        if len(self.labels) < 2:
            raise ConfigError(
                "task 'text_classification' needs `labels`, the class names in class-id order (at least two), "
                f"got {list(self.labels)}"
            )

    def check_language(self, language: str) -> None:
        if not self.languages:
            raise UnknownNameError(
                "task 'text_classification' has no languages; set `languages` to those your data_files cover, "
                f"got a request for {language!r}"
            )
        super().check_language(language)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        raise ConfigError(
            "task 'text_classification' reads local files only and has no Hub dataset; pass data_files "
            f"(JSON Lines/CSV/Parquet with columns {list(self.required_columns)})"
        )

    def load(
        self,
        language: str,
        split: str,
        *,
        data_files: DataFiles | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> datasets.Dataset:
        """As :meth:`Task.load`, after checking that ``labels`` is set."""
        self._check_labels()
        return super().load(language, split, data_files=data_files, limit=limit, seed=seed)

    def label_id(self, value: Any) -> int | None:
        """The class id of a raw label (id or name); ``None`` for a hidden one (-1 or null)."""
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == -1):
            return None
        if isinstance(value, str):
            if value not in self.labels:
                raise ConfigError(f"label {value!r} is not one of labels {list(self.labels)}")
            return self.labels.index(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"labels must be class ids (int) or names (str), got {value!r}")
        if not 0 <= value < len(self.labels):
            raise ConfigError(f"class ids must be in [0, {len(self.labels)}) (or -1 for hidden), got {value}")
        return value

    def format(self, example: Mapping[str, Any]) -> Example:
        self._check_labels()
        text = example[self.text_column]
        text_pair = example[self.text_pair_column] if self.text_pair_column is not None else None
        fields = {**example, "text": text, "text_pair": text_pair}
        prompt, _, _ = get_template(self.name, self.template_name).render(
            fields, where=f"text_classification/{self.template_name}"
        )
        choices = tuple(f" {name}" for name in self.labels)
        label = self.label_id(example[self.label_column])
        return Example(
            prompt=prompt,
            target=choices[label] if label is not None else "",
            choices=choices,
            label=label,
            text=render_text_template(self.text_template, fields, option="text_template", task=self.name),
            text_pair=None if text_pair is None else render_text_template(
                self.text_pair_template, fields, option="text_pair_template", task=self.name),
        )

    def metric(self) -> torchmetrics.Metric:
        from torchmetrics.classification import MulticlassAccuracy

        self._check_labels()
        return MulticlassAccuracy(num_classes=len(self.labels), average="micro")
