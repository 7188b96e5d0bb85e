"""A reference task built from the user's own plain text, one set of files per language.

For languages or domains Wikipedia does not serve. Files are ``.txt`` (one document per line) or JSON Lines /
CSV / Parquet with a ``text`` column, passed as ``data_files``; there is no Hub dataset. The objective follows the
model: causal LM for decoders, masked LM for encoders, unless ``objective`` forces one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.registry import TASKS

from ._reference import TextReferenceTask, check_mlm_probability

if TYPE_CHECKING:
    import datasets

__all__ = ["ReferenceTextTask"]

_OBJECTIVES = ("auto", "clm", "mlm")


@TASKS.register("reference_text")
@dataclass(frozen=True)
class ReferenceTextTask(TextReferenceTask):
    """Language modelling on local text files: ``Example(prompt=line or document)``.

    ``languages`` must be set (e.g. ``get_task("reference_text", languages=("en", "yo"))``).
    """

    name: ClassVar[str] = "reference_text"

    objective: Literal["clm", "mlm", "auto"] = "auto"
    """``clm`` (decoders), ``mlm`` (encoders) or ``auto``: whichever the model's type calls for."""
    mlm_probability: float = 0.15
    """Fraction of tokens selected for masking when the objective is ``mlm``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.objective not in _OBJECTIVES:
            raise ConfigError(f"objective must be one of {list(_OBJECTIVES)}, got {self.objective!r}")
        check_mlm_probability(self.mlm_probability)

    def resolve_objective(self, *, is_encoder: bool) -> Literal["clm", "mlm"]:
        """The objective for a model: ``mlm`` for encoders, ``clm`` for decoders, or the forced one.

        Raises:
            ConfigError: a forced objective the model cannot train (``clm`` on an encoder, ``mlm`` on a decoder).
        """
        wanted: Literal["clm", "mlm"] = "mlm" if is_encoder else "clm"
        if self.objective != "auto" and self.objective != wanted:
            model = "an encoder" if is_encoder else "a decoder"
            raise ConfigError(
                f"objective={self.objective!r} cannot train {model}; use objective='{wanted}' or 'auto'"
            )
        return wanted

    def check_language(self, language: str) -> None:
        if not self.languages:
            raise UnknownNameError(
                "task 'reference_text' has no languages; set `languages` to those your data_files cover, "
                f"got a request for {language!r}"
            )
        super().check_language(language)

    def load_hub(self, language: str, split: str) -> datasets.Dataset:
        raise ConfigError(
            "task 'reference_text' reads local files only and has no Hub dataset; pass data_files "
            "(a .txt file with one document per line, or JSON Lines/CSV/Parquet with a 'text' column)"
        )
