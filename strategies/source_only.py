"""Source-only baseline (Eng-FT in the AdaMergeX paper, https://arxiv.org/abs/2402.18913).

The task adapter trained in the source language is used in the target language unchanged:

    target = task

It equals ``adamergex`` at ``t = 0``. Reference adapters are accepted and ignored so every strategy can be called
with the same roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adamergex.adapter_state import AdapterState
from adamergex.strategy import StrategyConfig, register_strategy

__all__ = ["SourceOnlyConfig", "source_only"]


@dataclass(frozen=True)
class SourceOnlyConfig(StrategyConfig):
    """``source_only`` has no hyperparameters."""


@register_strategy(
    "source_only",
    config=SourceOnlyConfig,
    roles=("task",),
    optional_roles=("ref_source", "ref_target"),
    paper="https://arxiv.org/abs/2402.18913",
    identity={},
)
def source_only(adapters: Mapping[str, AdapterState], cfg: SourceOnlyConfig) -> AdapterState:
    """The task adapter alone, unchanged (ΔW_task, or l_task)."""
    task = adapters["task"]
    metadata = {k: v for k, v in task.metadata.items() if k not in ("source", "merge")}
    metadata["merge"] = {"space": "identity", "weights": [1.0], "effective_terms": 1}
    return task.replace(metadata=metadata)
