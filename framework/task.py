"""The task contract: how a dataset becomes model input, and how predictions are scored.

A task is a frozen dataclass registered in ``TASKS`` under a lowercase name (one module per task in
``adamergex.tasks``). It knows its Hugging Face dataset (id and pinned revision), the languages it has data for,
how each canonical split (``train``/``validation``/``test``) maps onto that dataset, how one raw example becomes
an :class:`Example`, and which torchmetrics metric scores it. Every task also loads *local files in the same
schema* (``data_files``), which is how tests and air-gapped machines run it.

Kinds and what the harness does with them:

* ``classification`` / ``multiple_choice``: decoders score each of ``Example.choices`` by log-likelihood of the
  continuation after ``Example.prompt``; encoders with a classification head predict ``Example.label`` from
  ``(Example.text, Example.text_pair)``. Gold is ``Example.label``.
* ``generation``: decoders generate greedily after the prompt; :meth:`Task.extract_answer` reads **only the
  generated continuation** and the metric compares it with ``Example.references``.
* ``language_modeling``: reference tasks; ``Example.prompt`` holds raw text and training packs it into chunks.

**Encoder text templates.** ``Example.text`` / ``Example.text_pair`` are exactly what an encoder reads: a task
with an encoder template option (``text_template``, ``text_pair_template``) renders it in ``format`` with
:func:`render_text_template`, and training (``training._encoding``) and evaluation (``evaluation.classify``) both
take the encoder's input from :func:`encoder_inputs`, then call the tokenizer the same way
(``tokenizer(texts, pairs, truncation=True, max_length=n)``), so the two paths cannot diverge. Template syntax:
``str.format`` fields by name, ``{text}``, ``{text_pair}`` or any column of the example (``"query: {text}"``,
``"{title}: {text}"``); ``{{`` and ``}}`` are literal braces; attribute and index access are refused.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    import datasets
    import torchmetrics

__all__ = [
    "SPLITS",
    "DataFiles",
    "Example",
    "Task",
    "TaskKind",
    "check_text_template",
    "check_tuning_split",
    "encoder_inputs",
    "get_task",
    "load_local",
    "render_text_template",
]

TaskKind = Literal["classification", "multiple_choice", "generation", "language_modeling"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Local data: one path, or paths per canonical split ({"train": "en_train.jsonl", "test": [...]})
DataFiles = str | os.PathLike[str] | Mapping[str, str | os.PathLike[str] | Sequence[str | os.PathLike[str]]]


@dataclass(frozen=True)
class Example:
    """One example made model-ready. Which fields are set depends on the task kind (see module docstring)."""

    prompt: str
    """Decoder input before the answer; for ``language_modeling`` the raw text itself."""
    target: str = ""
    """Gold continuation for decoders (the verbalised label, the answer, the summary)."""
    choices: tuple[str, ...] = ()
    """Candidate continuations, scored by log-likelihood (classification, multiple choice)."""
    label: int | None = None
    """Index of the gold choice / class id."""
    references: tuple[str, ...] = ()
    """Acceptable answers for generation metrics (several for extractive QA)."""
    text: str | None = None
    """First input segment for encoder classifiers, as the encoder reads it (its template applied)."""
    text_pair: str | None = None
    """Second input segment for encoder classifiers (premise/hypothesis, sentence pairs), template applied."""


@dataclass(frozen=True)
class Task:
    """Base class of every task. Subclasses are frozen dataclasses that set the class variables and override
    :meth:`load_hub`, :meth:`format` and :meth:`metric` (and :meth:`extract_answer` for generation)."""

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    required_columns: ClassVar[tuple[str, ...]] = ()
    """Columns every raw example must have (checked on load, for Hub and local data alike)."""

    dataset_id: str = ""
    """Hugging Face dataset id of the evaluation data."""
    revision: str | None = None
    """Pinned dataset revision (commit sha or tag) for reproducibility."""
    languages: tuple[str, ...] = ()
    """Languages with data (source language included)."""
    source_language: str = "en"
    """Language the task adapter is trained in."""
    num_labels: int = 0
    """Number of classes for encoder classification heads (0 when not a classification task)."""
    max_new_tokens: int = 64
    """Generation budget for ``generation`` tasks."""

    # -- contract ----------------------------------------------------------------------------------------------
    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        """Load ``split`` of ``language`` from the Hugging Face Hub (the real, networked path)."""
        raise NotImplementedError

    def format(self, example: Mapping[str, Any]) -> Example:
        """Turn one raw example (in the dataset's own schema) into an :class:`Example`."""
        raise NotImplementedError

    def metric(self) -> torchmetrics.Metric:
        """A fresh torchmetrics metric for this task (accuracy-like values lie in [0, 1]; perplexity ≥ 1).

        ``update`` takes, by kind: ``classification``/``multiple_choice``: ``(predicted indices, gold indices)``
        as integer tensors; ``generation``: ``(answers: list[str], references: list[tuple[str, ...]])`` with the
        answers already passed through :meth:`extract_answer`; ``language_modeling``: ``(logits, labels)`` with
        ``-100`` marking positions without a target.
        """
        raise NotImplementedError

    def extract_answer(self, continuation: str) -> str:
        """The answer contained in a generated continuation (never the prompt). Default: first line, stripped."""
        return continuation.strip().split("\n", 1)[0].strip()

    # -- shared behaviour -----------------------------------------------------------------------------------
    def check_language(self, language: str) -> None:
        """Raise :class:`UnknownNameError` unless the task has data for ``language``."""
        if language not in self.languages:
            known = ", ".join(self.languages) or "(none: set the task's languages option)"
            raise UnknownNameError(f"task {self.name!r} has no language {language!r}; available: {known}")

    @staticmethod
    def check_split(split: str) -> None:
        """Raise :class:`UnknownNameError` unless ``split`` is one of :data:`SPLITS`."""
        if split not in SPLITS:
            raise UnknownNameError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")

    def load(
        self,
        language: str,
        split: str,
        *,
        data_files: DataFiles | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> datasets.Dataset:
        """Raw examples of ``language``/``split``, from local ``data_files`` if given, else from the Hub.

        ``limit`` keeps a seeded random subset of that many examples (all of them when the split is smaller).
        Raises :class:`UnknownNameError` for an unknown language or split, :class:`ConfigError` for a file
        lacking a required column (the column and the file are named).
        """
        self.check_language(language)
        self.check_split(split)
        if data_files is not None:
            ds = load_local(data_files, split, source=f"task {self.name!r} ({language}/{split})")
        else:
            ds = self.load_hub(language, split)
        missing = [c for c in self.required_columns if c not in ds.column_names]
        if missing:
            where = data_files if data_files is not None else f"{self.dataset_id} ({language}/{split})"
            raise ConfigError(
                f"task {self.name!r} needs columns {list(self.required_columns)}; {where} lacks {missing} "
                f"(has {ds.column_names})"
            )
        if limit is not None:
            if limit <= 0:
                raise ConfigError(f"limit must be a positive number of examples, got {limit}")
            if limit < len(ds):
                ds = ds.shuffle(seed=seed).select(range(limit))
        return ds


def load_local(data_files: DataFiles, split: str, *, source: str) -> datasets.Dataset:
    """Load local JSON Lines / JSON / CSV / Parquet / text files through ``datasets``.

    ``data_files`` is one path (used for any split) or a mapping from canonical split to path(s). The file
    format is inferred from the extension of the first file.
    """
    import datasets

    if isinstance(data_files, (str, os.PathLike)):
        files: Any = data_files
    else:
        if split not in data_files:
            raise ConfigError(f"{source}: data_files has no {split!r} split; it has {sorted(data_files)}")
        files = data_files[split]
    paths = [os.fspath(files)] if isinstance(files, (str, os.PathLike)) else [os.fspath(f) for f in files]
    for p in paths:
        if not os.path.exists(p):
            raise ConfigError(f"{source}: data file {p!r} does not exist")
    ext = os.path.splitext(paths[0])[1].lower().lstrip(".")
    builder = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet", "txt": "text"}
    if ext not in builder:
        raise ConfigError(f"{source}: data file {paths[0]!r} has extension {ext!r}; use one of {sorted(builder)}")
    kwargs: dict[str, Any] = {"delimiter": "\t"} if ext == "tsv" else {}
    for p in paths:
        _check_text_file(p, source, binary=ext == "parquet")
    try:
        ds = datasets.load_dataset(builder[ext], data_files={"data": paths}, split="data", **kwargs)
    except Exception as exc:  # datasets raises many types for unreadable files; name the file
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{source}: could not read {paths}: {first[0] if first else type(exc).__name__}") from exc
    if len(ds) == 0:
        raise ConfigError(f"{source}: data file(s) {paths} hold no examples")
    return ds


def _check_text_file(path: str, source: str, *, binary: bool) -> None:
    """Refuse an empty file, and a text file that is not UTF-8 (``datasets`` would read bytes it cannot decode
    silently or fail deep inside pyarrow); the file, the first bad byte and its line are named. Reads the file
    once, in 1 MiB blocks."""
    import codecs

    try:
        if os.path.getsize(path) == 0:
            raise ConfigError(f"{source}: data file {path!r} is empty; it must hold at least one example")
        if binary:
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, line = 0, 1
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    line += block[:exc.start].count(b"\n")
                    raise ConfigError(
                        f"{source}: data file {path!r} must be UTF-8 text; byte {offset + exc.start} (line {line}) "
                        f"is {block[exc.start:exc.start + 1]!r} ({exc.reason}). Convert it, e.g. "
                        "`iconv -f latin1 -t utf-8`"
                    ) from None
                line += block.count(b"\n")
                offset += len(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # a file cut in the middle of a character
        raise ConfigError(f"{source}: data file {path!r} must be UTF-8 text; it ends inside a character "
                          f"({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: data file {path!r} cannot be read: {exc.strerror or exc}") from None


def get_task(name: str, **overrides: Any) -> Task:
    """Instantiate the task registered as ``name`` (a ``Task`` subclass) with field ``overrides``.

    Raises :class:`UnknownNameError` listing the registered tasks, :class:`ConfigError` for an unknown field.
    """
    import dataclasses

    from .registry import TASKS

    cls = TASKS.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"task {name!r} has no option(s) {unknown}; available: {sorted(fields)}")
    task: Task = cls(**overrides)
    return task


def check_tuning_split(split: str, allow_test: bool) -> None:
    """Refuse to tune on the test split unless ``allow_test`` says it is deliberate (STYLE §4): the one check
    that the tuner, the evaluation harness and the command line share.

    Raises:
        ConfigError: ``split == "test"`` and not ``allow_test``.
    """
    if split == "test" and not allow_test:
        raise ConfigError(
            "tuning on split 'test' is refused: tune on 'validation' (--split validation), or pass "
            "allow_test=True (--allow-test) if this is deliberate"
        )


def check_text_template(template: str, option: str) -> tuple[str, ...]:
    """The field names of encoder text template ``template`` (task option ``option``), in order.

    Raises:
        ConfigError: not a string, malformed braces, a positional (``{}``), attribute or index field, or no
            field at all (every input would be the same text); the option is named.
    """
    if not isinstance(template, str):
        raise ConfigError(f"task option `{option}` must be a template string such as '{{text}}', got {template!r}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"task option `{option}` is not a valid template ({exc}); write fields as {{name}} and "
                          f"literal braces as {{{{ }}}}, got {template!r}") from None
    names = tuple(name for _, name, _, _ in parsed if name is not None)
    for name in names:
        if not name.isidentifier():
            raise ConfigError(f"task option `{option}`: template fields are column names such as {{text}}; "
                              f"got {{{name}}} in {template!r}")
    if not names:
        raise ConfigError(f"task option `{option}` must name at least one field (e.g. 'query: {{text}}'), "
                          f"got {template!r}")
    return names


def render_text_template(template: str, fields: Mapping[str, Any], *, option: str, task: str) -> str:
    """``template`` filled from ``fields`` (the example's columns plus ``text``/``text_pair``).

    Raises:
        ConfigError: a field the example lacks (the option, the field and the available ones are named).
    """
    for name in check_text_template(template, option):
        if name not in fields:
            raise ConfigError(f"task {task!r}: option `{option}` ({template!r}) names field {name!r}, which the "
                              f"examples lack; available: {', '.join(sorted(fields))}")
    try:
        return template.format_map({k: "" if v is None else v for k, v in fields.items()})
    except (KeyError, ValueError, IndexError) as exc:  # a nested field or bad spec inside a format spec
        raise ConfigError(f"task {task!r}: option `{option}` ({template!r}) cannot be filled: {exc!r}") from None


def encoder_inputs(examples: Sequence[Example], *, where: str) -> tuple[list[str], list[str] | None]:
    """``(texts, pairs)`` an encoder classifier reads for ``examples``: ``Example.text`` and, when every example
    has one, ``Example.text_pair`` (``None`` when none has). The one source of encoder input for training and
    evaluation (module docstring); ``where`` names the caller in errors.

    Raises:
        ConfigError: an example without ``text``, or ``text_pair`` set on some examples only.
    """
    missing = [i for i, ex in enumerate(examples) if ex.text is None]
    if missing:
        raise ConfigError(f"{where}: encoder classification reads Example.text, which examples {missing[:5]} lack; "
                          "the task's format must set it")
    with_pair = [ex.text_pair is not None for ex in examples]
    if any(with_pair) and not all(with_pair):
        first = with_pair.index(not with_pair[0])
        raise ConfigError(f"{where}: Example.text_pair must be set for every example or for none; example 0 "
                          f"{'has' if with_pair[0] else 'lacks'} it, example {first} does not")
    texts = [str(ex.text) for ex in examples]
    pairs = [str(ex.text_pair) for ex in examples] if with_pair and all(with_pair) else None
    return texts, pairs
