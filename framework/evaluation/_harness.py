"""The evaluation harness: score a model, optionally carrying an adapter or a composition, per language on a task.

:func:`evaluate` returns an :class:`EvaluationResult` whose ``scores`` are ``{language: {metric: value}}`` and whose
``record`` says exactly what was evaluated (task and its settings, split, seeded subsample, examples and their
hash, adapter fingerprint, base model, scoring method). How each task kind is scored (the primitives are in
:mod:`adamergex.evaluation` (``score_choices``, ``classify``...)):

* ``classification``: decoders (causal LMs) compare the log-likelihood of each choice after the prompt; encoders
  (``*ForSequenceClassification``) take the argmax of their logits on ``(text, text_pair)``.
* ``multiple_choice``: log-likelihood of each choice (decoders only).
* ``generation``: greedy decoding; the task's ``extract_answer`` reads only the generated continuation
  (decoders only).
* ``language_modeling``: perplexity of the texts (causal LMs only), computed from the log-likelihood kernel:
  the value torchmetrics' ``Perplexity`` would give, without full-vocabulary logits for every position, so the
  task's metric is not called.

Classification and multiple-choice tasks also report ``gold_logprob``, the mean of ``log_softmax(s_i)[gold_i]``
over the examples' choice scores ``s_i`` (normalised log-likelihoods, or logits), and every result carries
standard errors where one is defined (binomial for accuracy, the sample standard error for ``gold_logprob``;
:mod:`adamergex.evaluation._stats`). Classification and multiple-choice metrics are updated with ``(preds, labels)`` as tensors, generation metrics
with ``(answers, references)`` (one string and one tuple of strings per example). An adapter given to
:func:`evaluate` is attached for the evaluation only: the model passed in comes back unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..adapter_state import AdapterState
from ..errors import ConfigError
from ..loading import attached
from ..models import is_masked_lm, is_sequence_classifier
from ..strategy import Composition
from ..task import DataFiles, Example, Task, check_tuning_split, get_task
from ..versions import package_versions
from ._scoring import (
    NORMALIZATIONS,
    Normalization,
    _ChoiceRequests,
    _ClassifierRequests,
    _GenerationRequests,
    _PerplexityRequests,
    argmax,
    model_max_length,
)
from ._stats import GOLD_LOGPROB, binomial_stderr, gold_logprob, mean_of_languages_stderr, mean_stderr

if TYPE_CHECKING:
    import torchmetrics

__all__ = [
    "MODEL_TYPES",
    "PURPOSES",
    "EvaluationResult",
    "ModelType",
    "Purpose",
    "adapter_summary",
    "check_languages",
    "check_options",
    "data_files_for",
    "evaluate",
    "resolve_adapter",
]

Purpose = Literal["report", "tuning"]
PURPOSES: tuple[str, ...] = ("report", "tuning")
ModelType = Literal["auto", "causal_lm", "seq_cls"]
MODEL_TYPES: tuple[str, ...] = ("auto", "causal_lm", "seq_cls")


@dataclass(frozen=True)
class EvaluationResult:
    """Scores per language and metric, with the record of what produced them."""

    scores: dict[str, dict[str, float]]
    """``{language: {metric: value}}``."""
    record: dict[str, Any]
    """Task (and its settings), split, purpose, limit, seed, examples per language and their SHA-256, adapter
    summary (with fingerprint), base model, scoring method, versions and time (JSON-able)."""
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per language, one entry per example (prediction and gold), when asked for with ``keep_predictions``."""
    stderr: dict[str, dict[str, float]] = field(default_factory=dict)
    """``{language: {metric: standard error}}`` where one is defined: binomial for accuracy, the sample standard
    error for ``gold_logprob`` (:mod:`adamergex.evaluation._stats`)."""

    def average(self) -> dict[str, float]:
        """Mean of each metric over the languages that report it."""
        metrics = sorted({m for per_lang in self.scores.values() for m in per_lang})
        out = {}
        for m in metrics:
            values = [s[m] for s in self.scores.values() if m in s]
            out[m] = math.fsum(values) / len(values)
        return out

    def average_stderr(self) -> dict[str, float]:
        """Standard error of each :meth:`average` whose every language has one: ``sqrt(Σ SE_l²)/L``."""
        out = {}
        for m in self.average():
            langs = [lang for lang, s in self.scores.items() if m in s]
            if langs and all(m in self.stderr.get(lang, {}) for lang in langs):
                out[m] = mean_of_languages_stderr([self.stderr[lang][m] for lang in langs])
        return out

    def only(self, metrics: Sequence[str]) -> EvaluationResult:
        """The result restricted to ``metrics`` (scores and standard errors; the record is kept)."""
        keep = set(metrics)
        return dataclasses.replace(
            self, scores={lang: {m: v for m, v in s.items() if m in keep} for lang, s in self.scores.items()},
            stderr={lang: {m: v for m, v in s.items() if m in keep} for lang, s in self.stderr.items()})

    def to_dict(self) -> dict[str, Any]:
        """``{"scores", "stderr", "average", "average_stderr", "record"}`` (and ``"predictions"`` when kept),
        JSON-able (an undefined standard error, from a single example, is ``null``)."""
        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: (v if math.isfinite(v) else None) for k, v in d.items()}

        out: dict[str, Any] = {"scores": self.scores, "stderr": {k: clean(v) for k, v in self.stderr.items()},
                               "average": self.average(), "average_stderr": clean(self.average_stderr()),
                               "record": self.record}
        if self.predictions:
            out["predictions"] = self.predictions
        return out

    def table(self) -> str:
        """A plain-text table: one row per language (and the average), one column per metric, with ``± SE``
        where a standard error is defined."""
        metrics = sorted({m for per_lang in self.scores.values() for m in per_lang})

        def cell(values: dict[str, float], errors: dict[str, float], m: str) -> str:
            if m not in values:
                return "-"
            se = errors.get(m)
            return f"{values[m]:.4f}" + (f" ± {se:.4f}" if se is not None and math.isfinite(se) else "")

        rows = [["language", *metrics]]
        for lang, per_lang in self.scores.items():
            rows.append([lang, *(cell(per_lang, self.stderr.get(lang, {}), m) for m in metrics)])
        if len(self.scores) > 1:
            rows.append(["average", *(cell(self.average(), self.average_stderr(), m) for m in metrics)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# -- inputs ------------------------------------------------------------------------------------------------------
def resolve_adapter(adapter: AdapterState | Composition | str | os.PathLike[str]) -> AdapterState | Composition:
    """A state or composition as is; a path is read as a merge output (a PEFT adapter directory or a directory
    with ``composition.json``).

    Raises:
        AdapterFormatError: missing or corrupt files.
        UnknownNameError: an adapter type that is not registered (the supported ones are listed).
    """
    if isinstance(adapter, (AdapterState, Composition)):
        return adapter
    from ..merging import load_merge_output

    return load_merge_output(adapter)


def adapter_summary(adapter: AdapterState | Composition) -> dict[str, Any]:
    """JSON-able description of an adapter or composition, with fingerprints."""
    if isinstance(adapter, AdapterState):
        summary = adapter.summary()
        if "merge" in adapter.metadata:
            summary["merge"] = {k: v for k, v in adapter.metadata["merge"].items() if k != "inputs"}
        return summary
    return {
        "composition": adapter.strategy,
        "head_from": adapter.head_from,
        "params": adapter.params,
        "adapters": {name: state.summary() for name, state in adapter.adapters.items()},
    }


def check_languages(task: Task, languages: str | Sequence[str]) -> list[str]:
    """``languages`` as a list: non-empty, distinct, and each one the task has (raises :class:`ConfigError`)."""
    langs = [languages] if isinstance(languages, str) else list(languages)
    if not langs:
        raise ConfigError(f"languages must name at least one language; task {task.name!r} has {list(task.languages)}")
    dupes = sorted({lang for lang in langs if langs.count(lang) > 1})
    if dupes:
        raise ConfigError(f"languages must be distinct, got {dupes} more than once")
    for lang in langs:
        task.check_language(lang)
    return langs


def check_options(
    task: Task, split: str, purpose: str, allow_test: bool, normalization: str, limit: int | None, seed: int
) -> None:
    """Raise :class:`ConfigError` for an evaluation setting that cannot hold (checked before any model loads)."""
    task.check_split(split)
    if purpose not in PURPOSES:
        raise ConfigError(f"purpose must be one of {list(PURPOSES)}, got {purpose!r}")
    if purpose == "tuning":
        check_tuning_split(split, allow_test)
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of examples, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def _check_model(model: Any, task: Task) -> Literal["decoder", "encoder"]:
    if is_masked_lm(model):
        raise ConfigError(
            f"a masked LM ({type(model).__name__}) has no left-to-right likelihood to score task "
            f"{task.name!r} with; evaluate a causal LM, or a sequence classifier on a classification task"
        )
    if not is_sequence_classifier(model):
        return "decoder"
    if task.kind != "classification":
        raise ConfigError(
            f"task {task.name!r} is a {task.kind} task, which a sequence classifier "
            f"({type(model).__name__}) cannot evaluate; use a causal LM (--model-type causal_lm)"
        )
    labels = getattr(getattr(model, "config", None), "num_labels", None)
    if task.num_labels and labels is not None and labels != task.num_labels:
        raise ConfigError(
            f"task {task.name!r} has {task.num_labels} labels but the classifier predicts {labels}; load the model "
            f"with num_labels={task.num_labels}"
        )
    return "encoder"


def data_files_for(
    data_files: Mapping[str, DataFiles] | None, langs: Sequence[str]
) -> dict[str, DataFiles | None]:
    """``{language: its files, or None for the Hub}``; every language evaluated must have files when any do."""
    if data_files is None:
        return {lang: None for lang in langs}
    missing = [lang for lang in langs if lang not in data_files]
    if missing:
        raise ConfigError(
            f"data_files must give files for every language evaluated; missing {missing}, given for "
            f"{sorted(data_files)}"
        )
    return {lang: data_files[lang] for lang in langs}


# -- scoring one language ---------------------------------------------------------------------------------------
def _metric_name(metric: Any) -> str:
    name = re.sub(r"^(Multiclass|Multilabel|Binary)", "", type(metric).__name__)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def metric_names(task: Task) -> list[str]:
    """The metric names :func:`evaluate` reports for ``task`` (what ``--metric`` may name), known before scoring."""
    import warnings

    if task.kind == "language_modeling":
        return ["nll_per_token", "perplexity"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "compute called before update": only the names are wanted
        names = set(_metric_values(task.metric()))
    if task.kind in ("classification", "multiple_choice"):
        names.add(GOLD_LOGPROB)
    return sorted(names)


def _metric_values(metric: torchmetrics.Metric) -> dict[str, float]:
    value = metric.compute()
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if getattr(value, "numel", lambda: 1)() != 1:
        raise ConfigError(f"metric {type(metric).__name__} must compute a scalar or a dict of scalars")
    return {_metric_name(metric): float(value)}


def _examples_hash(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(dataclasses.asdict(ex), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class _Scored:
    """One language scored: ``{metric: value}``, ``{metric: standard error}`` where defined, predictions."""

    scores: dict[str, float]
    stderr: dict[str, float]
    predictions: list[dict[str, Any]]


class _LanguageRequests:
    """One language's examples tokenised and batched for the task's kind and the model's architecture, once;
    :meth:`score` gives ``(scores, predictions)`` under any model that reads the same tokens (the base model, or
    it carrying an adapter). :func:`evaluate` builds one per language and call; a tuning study builds them once
    (:class:`~adamergex.evaluation.PreparedEvaluation`)."""

    def __init__(
        self, model: Any, tokenizer: Any, task: Task, examples: list[Example], arch: str, *, lang: str,
        normalization: Normalization, batch_size: int, max_length: int | None,
    ) -> None:
        self.task, self.lang = task, lang
        self._metric: Any = None  # one metric object, reset before each score (building one costs milliseconds)
        opts: dict[str, Any] = {"batch_size": batch_size, "max_length": max_length}
        self.references = [tuple(ex.references) for ex in examples]
        self.labels: list[int] = []
        self.requests: Any
        if task.kind == "language_modeling":
            self.requests = _PerplexityRequests(model, tokenizer, [ex.prompt for ex in examples], **opts)
            return
        if task.kind == "generation":
            self.requests = _GenerationRequests(model, tokenizer, [ex.prompt for ex in examples],
                                                max_new_tokens=task.max_new_tokens, **opts)
            return
        hidden = [i for i, ex in enumerate(examples) if ex.label is None]
        if hidden:
            raise ConfigError(
                f"task {task.name!r} ({lang}) has {len(hidden)} example(s) without a gold label (e.g. #{hidden[0]}); "
                "evaluate a split whose labels are public"
            )
        self.labels = [int(ex.label) for ex in examples if ex.label is not None]
        if arch == "encoder":
            self.requests = _ClassifierRequests(model, tokenizer, examples, **opts)
        else:
            self.requests = _ChoiceRequests(model, tokenizer, examples, normalization=normalization, **opts)

    def score(self, model: Any, *, progress: bool = False) -> _Scored:
        """The task's metrics under ``model``, their standard errors where one is defined, and one prediction
        record per example."""
        import torch

        desc = f"{self.task.name}/{self.lang}" if progress else None
        if isinstance(self.requests, _PerplexityRequests):
            logprob, tokens = self.requests.run(model, desc)
            nll = -logprob / max(tokens, 1)
            return _Scored({"perplexity": math.exp(nll), "nll_per_token": nll}, {}, [])
        if isinstance(self.requests, _GenerationRequests):
            continuations = self.requests.run(model, desc)
            answers = [self.task.extract_answer(c) for c in continuations]
            metric = self._fresh_metric()
            metric.update(answers, self.references)
            preds = [
                {"continuation": c, "answer": a, "references": list(r)}
                for c, a, r in zip(continuations, answers, self.references)
            ]
            return _Scored(_metric_values(metric), {}, preds)
        choice_scores = self.requests.scores(model, desc)  # (n, choices): normalised log-likelihoods or logits
        predicted = [argmax(s) for s in choice_scores]
        gold = [gold_logprob(s, g) for s, g in zip(choice_scores, self.labels)]
        metric = self._fresh_metric()
        metric.update(torch.tensor(predicted), torch.tensor(self.labels))
        scores = {**_metric_values(metric), GOLD_LOGPROB: math.fsum(gold) / len(gold)}
        stderr = {GOLD_LOGPROB: mean_stderr(gold)}
        n, correct = len(predicted), sum(p == g for p, g in zip(predicted, self.labels))
        if "accuracy" in scores and abs(scores["accuracy"] - correct / n) < 1e-6:  # micro accuracy: binomial
            stderr["accuracy"] = binomial_stderr(correct, n)
        records: list[dict[str, Any]] = [{"prediction": p, "label": g, GOLD_LOGPROB: lp}
                                       for p, g, lp in zip(predicted, self.labels, gold)]
        return _Scored(scores, stderr, records)

    def _fresh_metric(self) -> torchmetrics.Metric:
        if self._metric is None:
            self._metric = self.task.metric()
        else:
            self._metric.reset()
        metric: torchmetrics.Metric = self._metric
        return metric


def _load_examples(
    task: Task, langs: Sequence[str], split: str, files: Mapping[str, DataFiles | None], limit: int | None, seed: int
) -> dict[str, list[Example]]:
    """Every language's formatted examples (all loaded before any scoring: a bad file fails first)."""
    data: dict[str, list[Example]] = {}
    for lang in langs:
        rows = task.load(lang, split, data_files=files[lang], limit=limit, seed=seed)
        data[lang] = [task.format(row) for row in rows.to_list()]  # one Arrow conversion, not one per row
        if not data[lang]:
            raise ConfigError(f"task {task.name!r} has no {split} examples for {lang!r}")
    return data


def _jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot hold (paths, tuples) as strings or lists."""
    return json.loads(json.dumps(value, default=str))


# -- library entry point ---------------------------------------------------------------------------------------
def evaluate(
    model: Any,
    tokenizer: Any,
    task: str | Task,
    languages: str | Sequence[str],
    *,
    adapter: AdapterState | Composition | str | os.PathLike[str] | None = None,
    split: str = "validation",
    limit: int | None = None,
    seed: int = 0,
    data_files: Mapping[str, DataFiles] | None = None,
    batch_size: int = 16,
    normalization: Normalization = "sum",
    max_length: int | None = None,
    purpose: Purpose = "report",
    allow_test: bool = False,
    check_base_model: bool = True,
    keep_predictions: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """Score ``model`` (carrying ``adapter`` if given) on ``task`` in each of ``languages``.

    Args:
        model: A transformers causal LM, or a ``*ForSequenceClassification`` model for encoder classification.
        tokenizer: Its tokenizer (never modified).
        task: A registered task name or a task instance.
        languages: Languages to evaluate (one string for a single language).
        adapter: An ``AdapterState``, a stacking ``Composition``, or a merge output / PEFT adapter directory;
            attached for the evaluation only. ``None`` evaluates ``model`` as it is.
        split: ``train``, ``validation`` or ``test``.
        limit: Keep a seeded random subset of this many examples per language (recorded with ``seed``).
        seed: Seed of the ``limit`` subsample.
        data_files: Local files per language (``{language: path or {split: path}}``) instead of the Hub.
        batch_size: Sequences per forward pass.
        normalization: Log-likelihood scoring of choices: ``sum`` (default), ``token_mean`` or ``byte_mean``.
        max_length: Longest sequence the model reads (default: the model's and tokenizer's limit).
        purpose: ``report`` or ``tuning``; tuning on the test split is refused unless ``allow_test``.
        allow_test: Let ``purpose="tuning"`` read the test split.
        check_base_model: Refuse an adapter trained on another base model than ``model``.
        keep_predictions: Keep per-example predictions in the result.
        progress: Show a progress bar per language on stderr.

    Raises:
        UnknownNameError: unknown task, language or split (the known ones are listed), or adapter type.
        ConfigError: tuning on the test split, a bad option, missing labels, a model unfit for the task kind.
        IncompatibleAdaptersError: the adapter was trained on another base model (both names given).
        AdapterFormatError: the adapter directory is missing files or its tensors do not fit the model.
    """
    task_obj = get_task(task) if isinstance(task, str) else task
    langs = check_languages(task_obj, languages)
    check_options(task_obj, split, purpose, allow_test, normalization, limit, seed)
    files = data_files_for(data_files, langs)
    arch = _check_model(model, task_obj)
    resolved = resolve_adapter(adapter) if adapter is not None else None
    from ..loading import base_model_name

    record: dict[str, Any] = {
        "task": task_obj.name,
        "task_settings": _jsonable(dataclasses.asdict(task_obj)),
        "kind": task_obj.kind,
        "split": split,
        "purpose": purpose,
        "languages": langs,
        "limit": limit,
        "seed": seed,
        "data_files": _jsonable({k: v for k, v in files.items() if v is not None}) or None,
        "base_model": base_model_name(model),
        "adapter": adapter_summary(resolved) if resolved is not None else None,
        "adapter_path": str(adapter) if isinstance(adapter, (str, os.PathLike)) else None,
        "scoring": _scoring_record(model, tokenizer, task_obj, arch, normalization, batch_size, max_length),
        "examples": {},
        "examples_sha256": {},
        # as trained adapters record them (Lightning aside: evaluation does not use it)
        "versions": package_versions("adamergex", "torch", "transformers", "peft"),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    data = _load_examples(task_obj, langs, split, files, limit, seed)
    for lang, examples in data.items():
        record["examples"][lang] = len(examples)
        record["examples_sha256"][lang] = _examples_hash(examples)
    scores: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    requests = {
        lang: _LanguageRequests(model, tokenizer, task_obj, examples, arch, lang=lang, normalization=normalization,
                                batch_size=batch_size, max_length=max_length)
        for lang, examples in data.items()
    }
    stderr: dict[str, dict[str, float]] = {}
    with attached(model, resolved, check_base_model=check_base_model) as live:
        for lang, prepared in requests.items():
            scored = prepared.score(live, progress=progress)
            scores[lang], stderr[lang] = scored.scores, scored.stderr
            if keep_predictions:
                predictions[lang] = scored.predictions
    return EvaluationResult(scores, record, predictions, stderr)


def _scoring_record(
    model: Any, tokenizer: Any, task: Task, arch: str, normalization: str, batch_size: int, max_length: int | None
) -> dict[str, Any]:
    method = {
        "language_modeling": "perplexity",
        "generation": "greedy_generation",
        "classification": "classifier_logits" if arch == "encoder" else "loglikelihood",
        "multiple_choice": "loglikelihood",
    }[task.kind]
    out: dict[str, Any] = {
        "method": method,
        "batch_size": batch_size,
        "max_length": model_max_length(model, tokenizer, max_length),
    }
    if method == "loglikelihood":
        out["normalization"] = normalization
    if method == "greedy_generation":
        out["max_new_tokens"] = task.max_new_tokens
    params = next(iter(model.parameters()), None)
    if params is not None:
        out["dtype"] = str(params.dtype).removeprefix("torch.")
        out["device"] = str(params.device)
    return out
