from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task
from adamergex.tasks._packing import pack


@pytest.fixture
def task():  # type: ignore[no-untyped-def]
    return get_task("reference_clm")


def test_defaults(task) -> None:  # type: ignore[no-untyped-def]
    assert task.kind == "language_modeling"
    assert task.chunk_length == 512
    assert task.languages == ("en", "fr", "de", "tr", "hi", "el", "ar", "vi", "zh", "es", "ru", "sw", "th")


def test_loads_and_formats_wikipedia_fixtures(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("sw", "train", data_files=str(fixtures / "reference_clm/sw_train.jsonl"))
    assert task.format(rows[0]) == Example(prompt="Mto ni mkondo wa maji unaotiririka kuelekea baharini au ziwani.")
    en = task.load("en", "train", data_files=str(fixtures / "reference_clm/en_train.jsonl"))
    assert task.format(en[0]).prompt.endswith("\n\nThey eat mostly fish.")  # text kept verbatim


def test_formatted_text_packs_into_chunks(task, fixtures: Path) -> None:  # type: ignore[no-untyped-def]
    rows = task.load("en", "train", data_files=str(fixtures / "reference_clm/en_train.jsonl"))
    ids = [list(task.format(r).prompt.encode("utf-8")) for r in rows]  # bytes as a stand-in tokenizer
    chunks = pack(ids, chunk_length=16, eos_id=256)
    assert chunks and all(len(c) == 16 for c in chunks)
    assert chunks[len(ids[0]) // 16][len(ids[0]) % 16] == 256  # the first document ends with EOS


def test_metric_is_perplexity(task) -> None:  # type: ignore[no-untyped-def]
    target = torch.tensor([[1, 2, -100]])
    perfect = torch.full((1, 3, 4), -1e4)
    perfect[0, 0, 1] = perfect[0, 1, 2] = 0.0
    metric = task.metric()
    metric.update(perfect, target)
    assert metric.compute().item() == pytest.approx(1.0)
    uniform = task.metric()
    uniform.update(torch.zeros(1, 3, 4), target)  # the ignored position does not count
    assert uniform.compute().item() == pytest.approx(4.0)


def test_bad_inputs(task, fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    path = str(fixtures / "reference_clm/sw_train.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'yo'; available: en, fr, de"):
        task.load("yo", "train", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        task.load("sw", "dev", data_files=path)
    bad = write_jsonl("no_text.jsonl", [{"id": "1", "title": "t"}])
    with pytest.raises(ConfigError, match=r"lacks \['text'\]"):
        task.load("sw", "train", data_files=bad)
    with pytest.raises(ConfigError, match="chunk_length must be a positive integer, got 0"):
        get_task("reference_clm", chunk_length=0)


def test_hub_streams_consecutive_slices(fake_hub) -> None:  # type: ignore[no-untyped-def]
    task = get_task("reference_clm", train_documents=1, eval_documents=1)
    fake_hub.rows = [{"id": str(i), "url": "u", "title": "t", "text": f"article {i}"} for i in range(3)]
    texts = {split: task.load("fr", split)["text"] for split in ("train", "validation", "test")}
    assert texts == {"train": ["article 0"], "validation": ["article 1"], "test": ["article 2"]}
    assert fake_hub.calls[0] == {
        "path": "wikimedia/wikipedia",
        "name": "20231101.fr",
        "split": "train",
        "revision": "b04c8d1ceb2f5cd4588862100d08de323dccfbaa",
        "streaming": True,
    }


def test_hub_slices_follow_the_options(task) -> None:  # type: ignore[no-untyped-def]
    src = task.hub_source("th", "test")
    assert (src.config, src.skip, src.take) == ("20231101.th", 10_500, 500)
    assert get_task("reference_clm", dump="20240101").hub_source("en", "train").config == "20240101.en"


def test_an_exhausted_stream_is_reported(fake_hub) -> None:  # type: ignore[no-untyped-def]
    task = get_task("reference_clm", train_documents=5)
    with pytest.raises(ConfigError, match="no documents after skipping 5"):
        task.load("fr", "validation")
