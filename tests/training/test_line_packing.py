"""``packing="lines"`` / ``"lines_packed"`` of the reference tasks: items never cross a line, every line's tokens are
there (up to truncation), and padding is outside the loss, for the causal and the masked LM objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.packing import group_segments
from adamergex.task import get_task
from adamergex.tiny import train_tokenizer
from adamergex.training import IGNORE_INDEX, TaskDataModule, encode_examples

LINES = [
    "In the beginning was the word.",
    "",  # blank lines are skipped, as stream packing skips empty documents
    "And the word was with the river, and the river was long and wide and slow in the summer heat of the valley.",
    "The birds sang at dawn over the hills.",
    "Short verse.",
    "Night fell.",
]
LENGTH = 24


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(LINES * 3, vocab_size=300)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "verses.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def line_ids(tok: Any) -> list[list[int]]:
    return [tok(line, add_special_tokens=False)["input_ids"] for line in LINES if line]


def items_for(tok: Any, path: Path, objective: str, packing: str) -> TaskDataModule:
    task = get_task("reference_text", languages=("en",), packing=packing, chunk_length=LENGTH,
                    objective="mlm" if objective == "masked_lm" else "clm")
    dm = TaskDataModule(task, "en", tok, objective, data_files={"train": str(path)}, batch_size=2)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("packing", ["lines", "lines_packed"])
def test_causal_items_are_whole_lines_and_padding_is_outside_the_loss(tok: Any, text_file: Path,
                                                                        packing: str) -> None:
    from adamergex.tiny import tiny_llama

    dm = items_for(tok, text_file, "causal_lm", packing)
    assert dm.train_set is not None
    eos = tok.eos_token_id
    segments = [(ids + [eos])[:LENGTH] for ids in line_ids(tok)]
    assert any(len(ids) + 1 > LENGTH for ids in line_ids(tok))  # one line is truncated
    items = [list(it["input_ids"]) for it in dm.train_set.items]
    assert all(len(it) <= LENGTH for it in items)
    if packing == "lines":
        assert items == segments  # one line per item, in order: nothing crosses a line, every token is there
    else:  # whole lines per item, in order: the items are the segments regrouped at segment boundaries
        assert sum(items, []) == sum(segments, [])
        bounds = set(np.cumsum([len(s) for s in segments]).tolist())
        assert set(np.cumsum([len(i) for i in items]).tolist()) <= bounds
        assert len(items) < len(segments)  # short lines did share items
    batch = dm.collator(dm.train_set.items[:3])
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()
    assert torch.equal(batch["labels"][~pad], batch["input_ids"][~pad])
    # the padded batch's loss is the token-weighted mean of the items' own losses: padding contributes nothing
    model = tiny_llama(len(tok), hidden_size=16, layers=1, heads=2, intermediate_size=24, seed=0).eval()
    with torch.no_grad():
        batched = float(model(**batch).loss)
        own = [(float(model(input_ids=torch.tensor([it]), labels=torch.tensor([it])).loss), len(it) - 1)
               for it in items[:3]]
    assert batched == pytest.approx(sum(loss * n for loss, n in own) / sum(n for _, n in own), rel=1e-5)


@pytest.mark.parametrize("packing", ["lines", "lines_packed"])
def test_masked_items_are_whole_lines_in_cls_sep_and_padding_is_outside_the_loss(tok: Any, text_file: Path,
                                                                                 packing: str) -> None:
    dm = items_for(tok, text_file, "masked_lm", packing)
    assert dm.train_set is not None
    cls, sep = tok.bos_token_id, tok.eos_token_id  # this tokenizer's CLS/SEP stand-ins (no cls/sep tokens)
    segments = [ids[: LENGTH - 2] + [sep] for ids in line_ids(tok)]
    items = dm.train_set.items
    # undo the masking where a label was drawn: the original token is the label there
    originals = [np.where(it["labels"] != IGNORE_INDEX, it["labels"], it["input_ids"]).tolist() for it in items]
    assert all(o[0] == cls and o[-1] == sep and len(o) <= LENGTH for o in originals)
    bodies = [o[1:] for o in originals]
    if packing == "lines":
        assert bodies == segments
    else:
        assert sum(bodies, []) == sum(segments, [])
        bounds = set(np.cumsum([len(s) for s in segments]).tolist())
        assert set(np.cumsum([len(b) for b in bodies]).tolist()) <= bounds
        assert len(bodies) < len(segments)
    assert all((it["labels"] != IGNORE_INDEX).any() for it in items)  # every item has a masked target
    batch = dm.collator(items[:3])
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["input_ids"][pad] == tok.pad_token_id).all()


def test_stream_is_the_default_and_unchanged(tok: Any, text_file: Path) -> None:
    dm = items_for(tok, text_file, "causal_lm", "stream")
    assert dm.train_set is not None
    assert all(len(it["input_ids"]) == LENGTH and "labels" not in it for it in dm.train_set.items)
    assert get_task("reference_text", languages=("en",)).packing == "stream"
    assert dm.fingerprint != items_for(tok, text_file, "causal_lm", "lines").fingerprint


def test_bad_packing_and_empty_text_are_refused(tok: Any) -> None:
    with pytest.raises(ConfigError, match=r"packing must be one of \['stream', 'lines', 'lines_packed'\], got 'line'"):
        get_task("reference_text", languages=("en",), packing="line")
    from adamergex.task import Example

    with pytest.raises(ConfigError, match="has no non-empty line"):
        encode_examples([Example(prompt="")], tokenizer=tok, objective="causal_lm", task_kind="language_modeling",
                        packing="lines")
    with pytest.raises(ConfigError, match="segment 1 has 3 tokens, more than the item length 2"):
        group_segments([[1], [1, 2, 3]], 2)
    assert [s.tolist() for s in group_segments([[1], [], [2, 3], [4, 5, 6], [7]], 3)] == [[1, 2, 3], [4, 5, 6], [7]]
