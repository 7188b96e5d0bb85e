"""Packing tokenised documents into training items for language modelling: a stream, or whole lines.

:func:`pack_token_ids` is the one stream packing in adamergex (the reference tasks' ``packing="stream"``; training
packs with it and ``adamergex.tasks._packing.pack`` wraps it; framework/ never imports from tasks/, the reverse is
fine). :func:`group_segments` serves ``packing="lines_packed"``: whole lines gathered into items without ever
splitting one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["group_segments", "pack_token_ids"]


def pack_token_ids(docs: Iterable[Sequence[int]], chunk_length: int, separator: int | None) -> np.ndarray:
    """Documents joined end to end (``separator`` after each non-empty one) and cut into ``(n, chunk_length)``.

    Empty documents contribute nothing, not even a separator. The final partial chunk is dropped, as in the Hugging
    Face ``run_clm`` example, so no chunk is padded. Returns an int64 array rather than lists, which matters for
    Wikipedia-sized corpora (``.tolist()`` gives lists).

    Raises:
        ConfigError: ``chunk_length`` is not positive.
    """
    if chunk_length <= 0:
        raise ConfigError(f"chunk length must be a positive number of tokens, got {chunk_length}")
    parts: list[np.ndarray] = []
    for ids in docs:
        if len(ids) == 0:
            continue
        parts.append(np.asarray(ids, dtype=np.int64))
        if separator is not None:
            parts.append(np.asarray([separator], dtype=np.int64))
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    usable = len(stream) - len(stream) % chunk_length
    return stream[:usable].reshape(-1, chunk_length)


def group_segments(segments: Iterable[Sequence[int]], budget: int) -> list[np.ndarray]:
    """Segments (one per line, separator included) gathered in order into items of at most ``budget`` tokens,
    a new item starting whenever the next segment does not fit: no segment is ever split across items, nothing is
    dropped, and items are not padded (the collator pads them). Empty segments are skipped.

    Raises:
        ConfigError: ``budget`` is not positive, or a segment is longer than ``budget`` (truncate first).
    """
    if budget <= 0:
        raise ConfigError(f"item length must be a positive number of tokens, got {budget}")
    items: list[np.ndarray] = []
    current: list[np.ndarray] = []
    used = 0
    for index, seg in enumerate(segments):
        if len(seg) == 0:
            continue
        if len(seg) > budget:
            raise ConfigError(f"segment {index} has {len(seg)} tokens, more than the item length {budget}")
        if used + len(seg) > budget:
            items.append(np.concatenate(current))
            current, used = [], 0
        current.append(np.asarray(seg, dtype=np.int64))
        used += len(seg)
    if current:
        items.append(np.concatenate(current))
    return items
