"""A prepared evaluation: a task's data loaded and tokenised once, scored for many adapters (encode once, score
many).

:func:`~adamergex.evaluation.evaluate` does everything for one adapter: loads and formats the data, tokenises
and batches it, wraps the model with PEFT, scores, unwraps, and writes a record (fingerprints, versions).
A tuning study scores a new merge output per trial on the same data and model, so :class:`PreparedEvaluation`
does the adapter-independent part once:

* the examples of every language, loaded, formatted and tokenised into padded batches (the requests of
  ``_harness._LanguageRequests``, the very objects ``evaluate`` builds and scores, so the scores are the same
  bit for bit);
* the model, wrapped with PEFT once, in an :class:`~adamergex.evaluation._slot.AdapterSlot` whose tensors each
  :meth:`PreparedEvaluation.score` overwrites in place with the state's.

A stacking :class:`~adamergex.strategy.Composition` (``madx_stack``) is several adapters activated together with
one head: it is not written into the slot but attached and detached around its scoring as ``evaluate`` does
(the tokenised requests are still reused). The model is the bare model whenever :meth:`score` is not running.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..adapter_state import AdapterState
from ..loading import attached
from ..strategy import Composition
from ..task import DataFiles, Task, get_task
from ._harness import (
    Purpose,
    _check_model,
    _LanguageRequests,
    _load_examples,
    check_languages,
    check_options,
    data_files_for,
    resolve_adapter,
)
from ._scoring import Normalization
from ._slot import AdapterSlot

__all__ = ["AfterLanguage", "PreparedEvaluation"]

AfterLanguage = Callable[[str, dict[str, float]], None]
"""Called with each language and its scores as soon as they are known (a tuner reports them, and may raise to
stop the evaluation early, e.g. ``optuna.TrialPruned``)."""


class PreparedEvaluation:
    """``task`` on ``model`` in ``languages``, prepared once: :meth:`score` gives what
    :func:`~adamergex.evaluation.evaluate` would give in ``scores``, for any adapter, without reloading or
    re-tokenising the data or re-wrapping the model.

    The arguments are :func:`~adamergex.evaluation.evaluate`'s (``purpose`` defaults to ``"tuning"``, which
    refuses the test split unless ``allow_test``).

    Raises:
        UnknownNameError: unknown task, language or split (the known ones are listed).
        ConfigError: tuning on the test split, a bad option, missing labels, a model unfit for the task kind.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: str | Task,
        languages: str | Sequence[str],
        *,
        split: str = "validation",
        limit: int | None = None,
        seed: int = 0,
        data_files: Mapping[str, DataFiles] | None = None,
        batch_size: int = 16,
        normalization: Normalization = "sum",
        max_length: int | None = None,
        purpose: Purpose = "tuning",
        allow_test: bool = False,
        check_base_model: bool = True,
    ) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        self.languages = check_languages(self.task, languages)
        check_options(self.task, split, purpose, allow_test, normalization, limit, seed)
        files = data_files_for(data_files, self.languages)
        arch = _check_model(model, self.task)
        self.model, self.check_base_model = model, check_base_model
        data = _load_examples(self.task, self.languages, split, files, limit, seed)
        self.examples = {lang: len(examples) for lang, examples in data.items()}
        self.requests = {
            lang: _LanguageRequests(model, tokenizer, self.task, examples, arch, lang=lang,
                                    normalization=normalization, batch_size=batch_size, max_length=max_length)
            for lang, examples in data.items()
        }
        self.slot = AdapterSlot(model, check_base_model=check_base_model)
        self.last_stderr: dict[str, dict[str, float]] = {}
        """``{language: {metric: standard error}}`` of the languages the last :meth:`score` call scored (as
        :attr:`EvaluationResult.stderr <adamergex.evaluation.EvaluationResult.stderr>`; filled language by
        language, so an ``after_language`` callback reads the current one's)."""
        self._lock = threading.Lock()  # one slot, one model: trials of one study score one after another

    def score(
        self,
        adapter: AdapterState | Composition | str | os.PathLike[str] | None,
        *,
        languages: Sequence[str] | None = None,
        after_language: AfterLanguage | None = None,
        progress: bool = False,
    ) -> dict[str, dict[str, float]]:
        """``{language: {metric: value}}`` of the model carrying ``adapter`` (``None``: the bare model).

        Args:
            adapter: A state (written into the slot in place), a stacking composition (attached for the call),
                or a merge output / PEFT adapter directory.
            languages: A subset of the prepared languages, in this order (default: all of them).
            after_language: Called after each language (see :data:`AfterLanguage`); what it raises propagates,
                and the model is bare again.
            progress: A progress bar per language on stderr.

        Raises:
            ConfigError: a language that was not prepared.
            IncompatibleAdaptersError: the adapter was trained on another base model (unless disabled).
            AdapterFormatError: the adapter's tensors do not fit the model.
        """
        langs = list(self.languages if languages is None else languages)
        unknown = [lang for lang in langs if lang not in self.requests]
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"languages {unknown} were not prepared; prepared: {self.languages}")
        resolved = resolve_adapter(adapter) if adapter is not None else None
        with self._lock, self._carrying(resolved) as live:
            scores: dict[str, dict[str, float]] = {}
            stderr: dict[str, dict[str, float]] = {}
            for lang in langs:
                scored = self.requests[lang].score(live, progress=progress)
                scores[lang], stderr[lang] = scored.scores, scored.stderr
                self.last_stderr = stderr
                if after_language is not None:
                    after_language(lang, scores[lang])
        return scores

    def close(self) -> None:
        """Free the PEFT wrapper (the model is bare already)."""
        self.slot.close()

    def _carrying(self, adapter: AdapterState | Composition | None) -> Any:
        if isinstance(adapter, AdapterState):
            return self.slot.carrying(adapter)
        return self._attached(adapter)

    @contextlib.contextmanager
    def _attached(self, adapter: Composition | None) -> Iterator[Any]:
        """A composition activates several adapters and picks a head: attached per call, as evaluate() does,
        with ``requires_grad`` and train/eval modes given back as they were (PEFT's wrapping changes them)."""
        grad = [(p, p.requires_grad) for p in self.model.parameters()]
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            with attached(self.model, adapter, check_base_model=self.check_base_model) as live:
                yield live
        finally:
            for param, flag in grad:
                param.requires_grad_(flag)
            for module, mode in modes:
                module.training = mode
