from __future__ import annotations

import pytest

from adamergex.errors import ConfigError
from adamergex.tasks._packing import pack


def test_documents_are_joined_with_eos_and_cut_into_full_chunks() -> None:
    chunks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], chunk_length=4, eos_id=0)
    # stream: 1 2 3 0 4 5 0 6 7 8 9 0 -> three chunks of four
    assert chunks == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def test_the_final_partial_chunk_is_dropped() -> None:
    assert pack([[1, 2, 3, 4, 5]], chunk_length=4, eos_id=9) == [[1, 2, 3, 4]]


def test_empty_documents_add_nothing() -> None:
    assert pack([[], [1], [], [2]], chunk_length=2, eos_id=0) == [[1, 0], [2, 0]]
    assert pack([], chunk_length=8, eos_id=0) == []


def test_a_document_longer_than_a_chunk_spans_several() -> None:
    chunks = pack([list(range(1, 10))], chunk_length=3, eos_id=0)
    assert chunks == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert all(len(c) == 3 for c in chunks)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_chunk_length_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="chunk_length must be a positive integer"):
        pack([[1]], chunk_length=bad, eos_id=0)  # type: ignore[arg-type]
