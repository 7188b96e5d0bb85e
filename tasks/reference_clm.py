"""The AdaMergeX reference task for decoders: causal language modelling on Wikipedia text of each language.

See ``adamergex.tasks._reference`` for the data and splits; https://arxiv.org/abs/2402.18913 (Sec. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from adamergex.registry import TASKS

from ._reference import WikipediaReferenceTask

__all__ = ["ReferenceClmTask"]


@TASKS.register("reference_clm")
@dataclass(frozen=True)
class ReferenceClmTask(WikipediaReferenceTask):
    """Causal LM on Wikipedia: ``Example(prompt=article)``, packed into ``chunk_length`` tokens for training."""

    name: ClassVar[str] = "reference_clm"
