"""Packing tokenised documents into fixed-length chunks for language-modelling training.

The one implementation in adamergex: :mod:`adamergex.data` packs reference-task text with it, and
``adamergex.tasks._packing.pack`` is meant to wrap it (framework/ never imports from tasks/, the reverse is fine).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["pack_token_ids"]


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
