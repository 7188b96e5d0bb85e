"""TaskDataModule, encoding per objective, deterministic sharded order and collation (adamergex.training)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from adamergex import TASKS
from adamergex.training import (
    IGNORE_INDEX,
    Collator,
    StreamBatchSampler,
    TaskDataModule,
    encode_examples,
)
from adamergex.errors import ConfigError, UnknownNameError
from adamergex.packing import pack_token_ids
from adamergex.task import Example, Task, TaskKind
from adamergex.tiny import train_tokenizer

TEXTS = [f"sample {i} says the river is {'cold' if i % 2 else 'warm'} today" for i in range(24)]


@dataclass(frozen=True)
class ToyCls(Task):
    name: ClassVar[str] = "toy_data_cls"
    kind: ClassVar[TaskKind] = "classification"
    required_columns: ClassVar[tuple[str, ...]] = ("sentence", "label")
    languages: tuple[str, ...] = ("en", "fr")
    num_labels: int = 2

    def format(self, example: Mapping[str, Any]) -> Example:
        label = int(example["label"])
        return Example(prompt=f"{example['sentence']}\nAnswer:", choices=(" no", " yes"), label=label,
                       text=example["sentence"])


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the CI box has 2 shared cores; OpenMP spinning makes tiny ops 50x slower


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(TEXTS + ["Answer: no yes"], vocab_size=400)


@pytest.fixture
def cls_file(tmp_path: Path) -> Path:
    path = tmp_path / "en_train.jsonl"
    path.write_text("\n".join(json.dumps({"sentence": t, "label": i % 2}) for i, t in enumerate(TEXTS)))
    return path


def test_pack_token_ids_separates_documents_and_drops_the_partial_chunk() -> None:
    chunks = pack_token_ids([[1, 2, 3], [], [4, 5]], 3, separator=9)
    assert chunks.tolist() == [[1, 2, 3], [9, 4, 5]]  # the trailing 9 is a partial chunk, dropped
    with pytest.raises(ConfigError, match="positive"):
        pack_token_ids([[1]], 0, separator=None)


def test_packing_has_one_implementation_that_takes_any_iterable() -> None:
    from adamergex import packing

    assert pack_token_ids is packing.pack_token_ids
    assert pack_token_ids((d for d in [[1, 2], [3]]), 2, separator=None).tolist() == [[1, 2]]


def test_decoder_targets_have_labels_on_the_target_only(tok: Any) -> None:
    ex = Example(prompt="sample 3 says\nAnswer:", choices=(" no", " yes"), label=1)
    (item,) = encode_examples([ex], tokenizer=tok, objective="causal_lm", task_kind="classification")
    n_prompt = len(tok(ex.prompt)["input_ids"])
    target = tok(" yes", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert item["labels"][:n_prompt].tolist() == [IGNORE_INDEX] * n_prompt
    assert item["labels"][n_prompt:].tolist() == target
    assert item["input_ids"][n_prompt:].tolist() == target


def test_long_prompts_are_cut_from_the_left_keeping_the_target(tok: Any) -> None:
    ex = Example(prompt=" ".join(TEXTS), target=" yes")
    (item,) = encode_examples([ex], tokenizer=tok, objective="causal_lm", task_kind="generation", max_length=10)
    assert len(item["input_ids"]) == 10
    assert (item["labels"] != IGNORE_INDEX).sum() == len(tok(" yes", add_special_tokens=False)["input_ids"]) + 1


def test_mlm_masks_only_ordinary_tokens_and_repeats_with_the_seed(tok: Any) -> None:
    examples = [Example(prompt=t) for t in TEXTS]
    a = encode_examples(examples, tokenizer=tok, objective="masked_lm", task_kind="language_modeling",
                        max_length=16, seed=3)
    b = encode_examples(examples, tokenizer=tok, objective="masked_lm", task_kind="language_modeling",
                        max_length=16, seed=3)
    c = encode_examples(examples, tokenizer=tok, objective="masked_lm", task_kind="language_modeling",
                        max_length=16, seed=4)
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert any(not np.array_equal(x["labels"], y["labels"]) for x, y in zip(a, c))
    specials = set(tok.all_special_ids)
    for item in a:
        assert len(item["input_ids"]) == 16
        selected = item["labels"] != IGNORE_INDEX
        assert selected.any()
        assert not set(item["labels"][selected].tolist()) & specials
    rate = np.mean([np.mean(it["labels"] != IGNORE_INDEX) for it in a])
    assert 0.05 < rate < 0.35


def test_objectives_refuse_tasks_they_cannot_train(tok: Any) -> None:
    with pytest.raises(ConfigError, match="masked LM trains on language_modeling"):
        encode_examples([Example(prompt="x", target="y")], tokenizer=tok, objective="masked_lm",
                        task_kind="generation")
    with pytest.raises(ConfigError, match="Example.text"):
        encode_examples([Example(prompt="x", label=0)], tokenizer=tok, objective="sequence_classification",
                        task_kind="classification")
    with pytest.raises(ConfigError, match="fewer than one chunk"):
        encode_examples([Example(prompt="tiny")], tokenizer=tok, objective="causal_lm",
                        task_kind="language_modeling", max_length=64)


def test_two_ranks_see_the_single_process_batch_and_a_restart_continues_the_stream() -> None:
    single = StreamBatchSampler(10, 4, seed=7)
    ranks = [StreamBatchSampler(10, 2, world_size=2, rank=r, seed=7) for r in range(2)]
    it_single, it_ranks = iter(single), [iter(r) for r in ranks]
    for _ in range(6):  # crosses two epoch boundaries
        assert next(it_single) == next(it_ranks[0]) + next(it_ranks[1])
    restarted = iter(StreamBatchSampler(10, 4, seed=7, start=6))
    assert next(restarted) == next(it_single)
    first_epoch = [i for k in range(5) for i in StreamBatchSampler(10, 2, seed=1).batch(k)]
    assert sorted(first_epoch) == list(range(10))


def test_length_grouped_batches_keep_the_stream_contract_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(5, 60, size=96)]
    grouped = StreamBatchSampler(96, 8, seed=3, lengths=lengths, group_by_length=4)
    plain = StreamBatchSampler(96, 8, seed=3)
    # a window of 4 batches holds the same items as the plain stream's 4 batches, regrouped by length
    for w in range(3):
        window = [grouped.batch(k) for k in range(4 * w, 4 * w + 4)]
        same_positions = [i for k in range(4 * w, 4 * w + 4) for i in plain.batch(k)]
        assert sorted(i for b in window for i in b) == sorted(same_positions)
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in window)
        assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))  # contiguous length bands
    # every item once per pass; two ranks see the one-process batch; a restart continues; the seed decides
    first_pass = [i for k in range(12) for i in grouped.batch(k)]
    assert sorted(first_pass) == list(range(96))
    ranks = [StreamBatchSampler(96, 4, world_size=2, rank=r, seed=3, lengths=lengths, group_by_length=4)
             for r in range(2)]
    assert all(grouped.batch(k) == ranks[0].batch(k) + ranks[1].batch(k) for k in range(14))
    restarted = iter(StreamBatchSampler(96, 8, seed=3, start=6, lengths=lengths, group_by_length=4))
    assert [next(restarted) for _ in range(3)] == [grouped.batch(k) for k in range(6, 9)]
    assert [grouped.batch(k) for k in range(4)] != [
        StreamBatchSampler(96, 8, seed=4, lengths=lengths, group_by_length=4).batch(k) for k in range(4)]

    def padded(sampler: StreamBatchSampler) -> int:
        return sum(8 * max(lengths[i] for i in sampler.batch(k)) for k in range(12))

    assert padded(grouped) < 0.8 * padded(plain)


def test_length_grouping_refuses_bad_settings(tok: Any, cls_file: Path) -> None:
    with pytest.raises(ConfigError, match="group_by_length must be 0 .off. or a positive number of batches, got -1"):
        StreamBatchSampler(10, 2, lengths=[1] * 10, group_by_length=-1)
    with pytest.raises(ConfigError, match=r"group_by_length needs one length per item \(10\), got none"):
        StreamBatchSampler(10, 2, group_by_length=2)
    with pytest.raises(ConfigError, match="group_by_length must be 0 .off. or a positive number of batches, got True"):
        TaskDataModule(ToyCls(), "en", tok, "causal_lm", data_files=str(cls_file),
                       group_by_length=True)  # type: ignore[arg-type]
    dm = TaskDataModule(ToyCls(), "en", tok, "causal_lm", data_files=str(cls_file), batch_size=4, group_by_length=3)
    batches = iter(dm.train_dataloader())
    assert all(next(batches)["input_ids"].shape[0] == 4 for _ in range(7))


def test_collator_pads_right_and_masks_labels() -> None:
    batch = Collator(pad_id=0, pad_to_multiple_of=4)(
        [{"input_ids": np.array([5, 6, 7]), "labels": np.array([-100, 6, 7])},
         {"input_ids": np.array([8]), "labels": np.array([8])}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    packed = Collator()([{"input_ids": np.array([1, 2])}, {"input_ids": np.array([3, 4])}])
    assert "attention_mask" not in packed and torch.equal(packed["labels"], packed["input_ids"])


def test_datamodule_encodes_fingerprints_and_serves_a_deterministic_stream(tok: Any, cls_file: Path) -> None:
    with TASKS.scoped("toy_data_cls", ToyCls):
        dm = TaskDataModule("toy_data_cls", "en", tok, "sequence_classification", data_files=str(cls_file),
                            batch_size=4, seed=5)
        dm.setup()
        again = TaskDataModule("toy_data_cls", "en", tok, "sequence_classification", data_files=str(cls_file),
                               batch_size=4, seed=5)
        again.setup()
        assert dm.fingerprint == again.fingerprint and len(dm.fingerprint) == 64
        assert dm.label_counts == {0: 12, 1: 12}
        first = next(iter(dm.train_dataloader()))
        assert torch.equal(first["input_ids"], next(iter(again.train_dataloader()))["input_ids"])
        assert first["labels"].shape == (4,) and first["attention_mask"].shape == first["input_ids"].shape

        cls_file.write_text(cls_file.read_text().replace("river", "stream"))
        changed = TaskDataModule("toy_data_cls", "en", tok, "sequence_classification", data_files=str(cls_file))
        changed.setup()
        assert changed.fingerprint != dm.fingerprint


def test_datamodule_names_what_exists_on_bad_input(tok: Any, cls_file: Path, tmp_path: Path) -> None:
    with TASKS.scoped("toy_data_cls", ToyCls):
        with pytest.raises(UnknownNameError, match="available: .*toy_data_cls"):
            TaskDataModule("toy_data_clz", "en", tok, "sequence_classification")
        with pytest.raises(UnknownNameError, match="no language 'xx'; available: en, fr"):
            TaskDataModule("toy_data_cls", "xx", tok, "sequence_classification")
        with pytest.raises(UnknownNameError, match="unknown split 'dev'; available: train, validation, test"):
            TaskDataModule("toy_data_cls", "en", tok, "sequence_classification", val_split="dev")
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"text": "no sentence column", "label": 0}) + "\n")
        dm = TaskDataModule("toy_data_cls", "en", tok, "sequence_classification", data_files=str(bad))
        with pytest.raises(ConfigError, match=r"lacks \['sentence'\]"):
            dm.setup()
        late = TaskDataModule("toy_data_cls", "en", data_files=str(cls_file))
        with pytest.raises(ConfigError, match="tokenizer and an objective"):
            late.setup()
        late.connect(tokenizer=tok, objective="causal_lm", max_length=32)
        late.setup()
        assert late.train_set is not None and len(late.train_set) == len(TEXTS)


def test_setup_reuses_encoded_data_only_when_nothing_that_shapes_it_changed(tok: Any, cls_file: Path) -> None:
    from adamergex.task import get_task

    task = get_task("world_nli", train_size=60, validation_size=12, test_size=12)

    def module(task: Task = task, language: str = "src", **kw: Any) -> TaskDataModule:
        dm = TaskDataModule(task, language, tok, **{"objective": "causal_lm", "batch_size": 4, "seed": 0, **kw})
        dm.setup("fit")
        return dm

    first = module()
    again = module(seed=7)  # the seed orders batches only: same encoding, reused
    assert again.train_set is first.train_set and again.fingerprint == first.fingerprint
    assert next(iter(again.train_dataloader()))["input_ids"].shape[0] == 4
    changes = ({"language": "lex"}, {"max_length": 16}, {"limit": 30}, {"task": get_task("world_nli", train_size=61)})
    for changed in changes:
        other = module(**changed)
        assert other.train_set is not first.train_set, changed
    fresh = TaskDataModule(task, "src", tok, "causal_lm", batch_size=4)
    fresh._setup_uncached()
    assert [it["input_ids"].tolist() for it in fresh.train_set.items] == \
        [it["input_ids"].tolist() for it in first.train_set.items]
    # MLM masks depend on the seed; local files are always read again
    ref = get_task("world_reference", train_size=30, validation_size=4, test_size=4)
    m0, m1 = module(task=ref, objective="masked_lm"), module(task=ref, objective="masked_lm", seed=1)
    assert m1.train_set is not m0.train_set
    assert module(task=ref, objective="masked_lm").train_set is m0.train_set
    files = TaskDataModule(ToyCls(), "en", tok, "causal_lm", data_files=str(cls_file))
    files.setup("fit")
    files2 = TaskDataModule(ToyCls(), "en", tok, "causal_lm", data_files=str(cls_file))
    files2.setup("fit")
    assert files2.train_set is not files.train_set
