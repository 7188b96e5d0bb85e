"""Evaluation: score a model, with an adapter, a merge output or a composition, per language on a task.

The public face of the subsystem; its modules are private to it:

* ``_harness``: :func:`evaluate` and :class:`EvaluationResult` (scores ``{language: {metric: value}}`` plus a
  record of exactly what was evaluated), and the input checks the command line and the tuner share;
* ``_scoring``: the scoring primitives (log-likelihood of choices, greedy generation, perplexity, encoder
  classification), batched longest-first;
* ``_batching``: padding, batching and tokenising helpers of the primitives;
* ``_models``: :func:`load_model`, the model an adapter is evaluated on;
* ``_prepared``: :class:`PreparedEvaluation`, data tokenised once and scored for many adapters (tuning trials);
* ``_stats``: the gold answer's log-probability (metric ``gold_logprob``) and standard errors;
* ``_slot``: :class:`AdapterSlot`, a PEFT wrapper built once into which adapter states are written in place.

Importing this package does not import Lightning (a test checks it): evaluation needs torch, transformers and
PEFT only.
"""

from __future__ import annotations

from ._harness import (
    MODEL_TYPES,
    PURPOSES,
    EvaluationResult,
    ModelType,
    Purpose,
    adapter_summary,
    check_languages,
    check_options,
    data_files_for,
    evaluate,
    metric_names,
    resolve_adapter,
)
from ._models import load_model
from ._prepared import AfterLanguage, PreparedEvaluation
from ._scoring import (
    NORMALIZATIONS,
    Normalization,
    choice_scores,
    classify,
    generate_answers,
    generate_continuations,
    loglikelihoods,
    model_max_length,
    perplexity,
    score_choices,
)
from ._slot import AdapterSlot
from ._stats import GOLD_LOGPROB, binomial_stderr, gold_logprob, mean_of_languages_stderr, mean_stderr

__all__ = [
    "GOLD_LOGPROB",
    "MODEL_TYPES",
    "NORMALIZATIONS",
    "PURPOSES",
    "AdapterSlot",
    "AfterLanguage",
    "EvaluationResult",
    "ModelType",
    "Normalization",
    "PreparedEvaluation",
    "Purpose",
    "adapter_summary",
    "binomial_stderr",
    "check_languages",
    "check_options",
    "choice_scores",
    "classify",
    "data_files_for",
    "evaluate",
    "generate_answers",
    "generate_continuations",
    "gold_logprob",
    "load_model",
    "metric_names",
    "loglikelihoods",
    "mean_of_languages_stderr",
    "mean_stderr",
    "model_max_length",
    "perplexity",
    "resolve_adapter",
    "score_choices",
]
