"""Per-example statistics of a scored language: the gold answer's log-probability and standard errors.

* **gold log-probability** of example *i* with choice scores ``s_i`` (decoders: the normalised log-likelihood
  of each choice after the prompt; encoders: the classifier's logits) and gold index ``g_i``::

      gold_logprob_i = log_softmax(s_i)[g_i] = s_i[g_i] − log Σ_j exp(s_i[j])

  a continuous score (≤ 0, 0 for a certain right answer) that moves with every trial where accuracy ties; the
  metric ``gold_logprob`` is its mean over the examples.
* **standard errors**: accuracy (the fraction of ``k`` correct out of ``n``) has the binomial
  ``SE = sqrt(p·(1 − p)/n)``, ``p = k/n``; a mean of per-example values ``x_i`` the sample standard error
  ``SE = s/√n`` with ``s² = Σ(x_i − x̄)²/(n − 1)`` (``nan`` for one example). A mean over ``L`` languages,
  scored on independent examples, has ``SE = sqrt(Σ SE_l²)/L``.

All sums are ``math.fsum`` in float64, so the numbers do not depend on batching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["GOLD_LOGPROB", "binomial_stderr", "gold_logprob", "mean_of_languages_stderr", "mean_stderr"]

GOLD_LOGPROB = "gold_logprob"
"""Metric name of the mean gold-answer log-probability (classification and multiple-choice tasks)."""


def gold_logprob(scores: Sequence[float], gold: int) -> float:
    """``log_softmax(scores)[gold]``, computed stably in float64 (``-inf`` scores are choices with no mass)."""
    values = [float(s) for s in scores]
    top = max(values)
    if math.isinf(top):
        return math.nan
    return values[gold] - (top + math.log(math.fsum(math.exp(v - top) for v in values)))


def binomial_stderr(correct: int, n: int) -> float:
    """``sqrt(p·(1 − p)/n)`` with ``p = correct/n`` (``nan`` for ``n = 0``)."""
    if n <= 0:
        return math.nan
    p = correct / n
    return math.sqrt(p * (1.0 - p) / n)


def mean_stderr(values: Sequence[float]) -> float:
    """Sample standard error ``s/√n`` of the mean of ``values`` (``nan`` for fewer than two)."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def mean_of_languages_stderr(stderrs: Sequence[float]) -> float:
    """Standard error of the mean of ``L`` independent per-language values: ``sqrt(Σ SE_l²)/L``."""
    if not stderrs:
        return math.nan
    return math.sqrt(math.fsum(se * se for se in stderrs)) / len(stderrs)
