"""Packing tokenised documents into fixed-length chunks for the language-modelling reference tasks.

A list-returning front end to :func:`adamergex.packing.pack_token_ids`, the one packing implementation (training
uses it directly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from adamergex.errors import ConfigError
from adamergex.packing import pack_token_ids

__all__ = ["pack"]


def pack(token_id_lists: Iterable[Sequence[int]], chunk_length: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents, each followed by ``eos_id``, and cut the stream into chunks of ``chunk_length``.

    Empty documents contribute nothing (not even an ``eos_id``). The final partial chunk is dropped, as in the
    Hugging Face ``run_clm`` example, so every chunk has exactly ``chunk_length`` ids and none is padded.

    Raises:
        ConfigError: ``chunk_length`` is not a positive integer.
    """
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length <= 0:
        raise ConfigError(f"chunk_length must be a positive integer, got {chunk_length!r}")
    return pack_token_ids(token_id_lists, chunk_length, eos_id).tolist()  # type: ignore[no-any-return]
