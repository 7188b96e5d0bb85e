"""What every world task shares: generated splits, the prompt frame, and the chance level.

A world task draws *items* (language-independent meanings: clauses and a gold answer) from the world seed, one
random stream per split, and renders each item in the requested language. The splits of all languages are
therefore parallel (the same items in every language, like a translated benchmark), and an item never appears
in two splits. Rows always carry a ``language`` column, so local ``data_files`` in the same schema work too.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import SPLITS, Task

from .corpus import Setting, get_setting
from .grammar import LANGUAGES, Language
from .world import rng_for

if TYPE_CHECKING:
    import random

    import datasets

__all__ = ["WorldTask"]


@dataclass(frozen=True)
class WorldTask(Task):
    """Base of the world tasks: data generated from ``world_seed`` (nothing is downloaded).

    Subclasses implement :meth:`draw` (one random item, hashable) and :meth:`row` (an item rendered in a
    language, as a dict of the task's columns), plus the :class:`~adamergex.task.Task` hooks ``format`` and
    ``metric``.
    """

    dataset_id: str = ""
    """Unused: world data is generated from ``world_seed``."""
    languages: tuple[str, ...] = LANGUAGES
    """Languages with data: ``src`` (source), then ``lex``, ``sov``, ``morph`` (see ``tasks.world.grammar``)."""
    source_language: str = "src"
    """Language the task adapter is trained in."""
    world_seed: int = 0
    """Seed of the world, its languages and every split (the same seed gives byte-identical data)."""
    train_size: int = 2000
    """Examples in ``train`` (per language; the splits of all languages are parallel)."""
    validation_size: int = 300
    """Examples in ``validation``."""
    test_size: int = 300
    """Examples in ``test``."""
    native_prompts: bool = False
    """Write the prompt frame (``question``, ``answer``) and the answer words (``yes``/``maybe``/``no``) in the
    example's language. Off by default: like the real tasks, prompts stay in the source language and only the
    content is in the target language (AdaMergeX's zero-shot setting)."""

    def __post_init__(self) -> None:
        for fname in ("train_size", "validation_size", "test_size"):
            value = getattr(self, fname)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{self.name}: {fname} must be a positive integer, got {value!r}")
        if isinstance(self.world_seed, bool) or not isinstance(self.world_seed, int):
            raise ConfigError(f"{self.name}: world_seed must be an integer, got {self.world_seed!r}")
        unknown = [lang for lang in (*self.languages, self.source_language) if lang not in LANGUAGES]
        if unknown:
            raise UnknownNameError(
                f"{self.name}: unknown world language(s) {unknown}; available: {', '.join(LANGUAGES)}"
            )

    # -- hooks for subclasses ------------------------------------------------------------------------------------
    def draw(self, setting: Setting, rng: random.Random, index: int) -> Hashable:
        """One random item (a language-independent meaning); ``index`` is its position in the split."""
        raise NotImplementedError

    def row(self, item: Any, setting: Setting, lang: Language) -> dict[str, Any]:
        """``item`` rendered in ``lang`` as a row of the task's columns (``language`` is added by the caller)."""
        raise NotImplementedError

    # -- generation ------------------------------------------------------------------------------------------
    @property
    def setting(self) -> Setting:
        """The world and languages of ``world_seed``."""
        return get_setting(self.world_seed)

    def split_size(self, split: str) -> int:
        """Number of examples in ``split``."""
        self.check_split(split)
        return int(getattr(self, f"{split}_size"))

    def items(self, split: str) -> list[Any]:
        """The items of ``split`` (cached; shared by every language)."""
        self.check_split(split)
        return _items(self)[split]

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        """World tasks have no Hub data: the split is generated (see :meth:`generate`)."""
        return self.generate(language, split)

    def generate(self, language: str, split: str) -> datasets.Dataset:
        """``split`` of ``language`` generated from the world seed (byte-identical for the same task fields)."""
        import datasets

        self.check_language(language)
        self.check_split(split)
        setting = self.setting
        lang = setting.language(language)
        rows = [{**self.row(item, setting, lang), "language": language} for item in self.items(split)]
        return datasets.Dataset.from_list(rows)

    # -- prompts ----------------------------------------------------------------------------------------------------
    def prompt_word(self, word: str, language: str) -> str:
        """A prompt-frame or answer word (``question``, ``answer``, ``yes``...) as this task writes it for
        examples in ``language`` (see :attr:`native_prompts`)."""
        if language not in LANGUAGES:
            raise UnknownNameError(f"unknown world language {language!r}; available: {', '.join(LANGUAGES)}")
        code = language if self.native_prompts else self.source_language
        return self.setting.language(code).word(word)

    def frame(self, context: str, question: str, language: str) -> str:
        """The shared prompt: ``<context> question : <question> answer :``."""
        q, a = self.prompt_word("question", language), self.prompt_word("answer", language)
        return f"{context} {q} : {question} {a} :" if context else f"{q} : {question} {a} :"

    @staticmethod
    def language_of(example: Mapping[str, Any]) -> str:
        """The ``language`` column of a raw example (required by every world task)."""
        lang = example.get("language")
        if lang not in LANGUAGES:
            raise UnknownNameError(
                f"world examples need a 'language' column with one of {', '.join(LANGUAGES)}, got {lang!r}"
            )
        return str(lang)

    # -- scoring ----------------------------------------------------------------------------------------------------
    def gold(self, example: Mapping[str, Any]) -> str:
        """The gold answer of a raw example as one string (class id for classification)."""
        formatted = self.format(example)
        if self.kind in ("classification", "multiple_choice"):
            return str(formatted.label)
        return formatted.references[0]

    def chance(self, language: str, split: str) -> float:
        """Accuracy of the best constant predictor on ``split``: the share of its most frequent gold answer
        (1/3 for three balanced classes)."""
        ds = self.generate(language, split)
        counts = Counter(self.gold(ex) for ex in ds)
        return max(counts.values()) / len(ds)


@functools.lru_cache(maxsize=32)
def _items(task: WorldTask) -> dict[str, list[Any]]:
    """Every split's items, drawn in split order so that later splits skip items of earlier ones."""
    setting = task.setting
    seen: set[Hashable] = set()
    out: dict[str, list[Any]] = {}
    for split in SPLITS:
        rng = rng_for(task.name, task.world_seed, split)
        size = task.split_size(split)
        items: list[Any] = []
        attempts = 0
        while len(items) < size:
            attempts += 1
            if attempts > 50 * size + 1000:
                raise ConfigError(
                    f"{task.name}: could not draw {size} distinct {split} items from world {task.world_seed}; "
                    "lower the split sizes"
                )
            item = task.draw(setting, rng, len(items))
            if item in seen:
                continue
            seen.add(item)
            items.append(item)
        rng.shuffle(items)  # draws may follow a pattern (NLI cycles through its labels)
        out[split] = items
    return out
