"""Checks of trained adapters that results report next to the scores.

:func:`reference_check` reads a reference adapter's held-out loss before and after training (recorded by
:func:`adamergex.training.train_adapter` with ``val_split`` and ``val_at_start``: ``metadata["training"]
["validation"]["initial"]`` and ``["validation"]``) and says whether it fell. A reference adapter whose held-out loss
did not fall carries no language vector worth adding: AdaMergeX's ``ref_target ⊖ ref_source`` is then noise, and
the results flag it rather than let a null result pass for a finding about the method. With ``val_every``, the
whole held-out curve (``["validation"]["curve"]``) comes along, and ``converged`` says whether its last interval
still moved it by more than :data:`CONVERGED_SHARE` of its total fall (a budget too short to converge).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CONVERGED_SHARE", "MIN_FALL", "reference_check"]

MIN_FALL = 0.0
"""A held-out loss counts as fallen when ``end < start − MIN_FALL`` (nats)."""
CONVERGED_SHARE = 0.1
"""A curve counts as converged when its last interval fell by at most this share of ``start − end``."""


def reference_check(state: Any) -> dict[str, Any]:
    """``{"val_loss_start", "val_loss_end", "fell", "converged", "curve"}`` of one adapter.

    ``fell`` is ``None`` (unknown) when either loss was not recorded (trained without ``val_split`` /
    ``val_at_start``), else whether ``val_loss_end < val_loss_start − MIN_FALL``. ``curve`` is the recorded
    ``[{"step", "loss"}, ...]`` (empty without one); ``converged`` is ``None`` with fewer than three points or a
    loss that did not fall, else whether ``curve[-2].loss − curve[-1].loss <= CONVERGED_SHARE · (start − end)``.
    """
    training: Mapping[str, Any] = (getattr(state, "metadata", None) or {}).get("training", {}) or {}
    validation = training.get("validation") or {}
    start = (validation.get("initial") or {}).get("val/loss")
    end = validation.get("val/loss")
    fell = None if start is None or end is None else bool(end < start - MIN_FALL)
    curve = [dict(p) for p in validation.get("curve") or []]
    converged = None
    if fell and len(curve) >= 3:
        converged = bool(curve[-2]["loss"] - curve[-1]["loss"] <= CONVERGED_SHARE * (start - end))
    return {"val_loss_start": start, "val_loss_end": end, "fell": fell, "converged": converged, "curve": curve}
