"""The AdaMergeX reference task for encoders: masked language modelling on Wikipedia text of each language.

See ``adamergex.tasks._reference`` for the data and splits; https://arxiv.org/abs/2402.18913 (Sec. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from adamergex.registry import TASKS

from ._reference import WikipediaReferenceTask, check_mlm_probability

__all__ = ["ReferenceMlmTask"]


@TASKS.register("reference_mlm")
@dataclass(frozen=True)
class ReferenceMlmTask(WikipediaReferenceTask):
    """Masked LM on Wikipedia: ``Example(prompt=article)``, packed into ``chunk_length`` tokens, then masked."""

    name: ClassVar[str] = "reference_mlm"

    mlm_probability: float = 0.15
    """Fraction of tokens selected for masking (BERT's 80/10/10 replacement applies to them)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_mlm_probability(self.mlm_probability)
