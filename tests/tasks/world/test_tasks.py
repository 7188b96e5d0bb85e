"""World tasks: seeded, parallel, disjoint splits in every language; correct labels; chance-level scoring."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
import torch

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.registry import TASKS
from adamergex.task import SPLITS, get_task
from adamergex.tasks.world import LANGUAGES
from adamergex.tasks.world.grammar import Clause

SMALL = {"train_size": 60, "validation_size": 30, "test_size": 30}
WORLD_TASKS = ("world_arith", "world_nli", "world_qa", "world_reference")


def _dump(task_name: str, seed: int, language: str, split: str) -> bytes:
    ds = get_task(task_name, world_seed=seed, **SMALL).load(language, split)
    return json.dumps(ds.to_list(), ensure_ascii=False, sort_keys=True).encode()


def test_world_tasks_are_registered() -> None:
    assert set(WORLD_TASKS) <= set(TASKS.names())


@pytest.mark.parametrize("task_name", WORLD_TASKS)
def test_same_seed_byte_identical_other_seed_different(task_name: str) -> None:
    a = _dump(task_name, 0, "morph", "test")
    assert a == _dump(task_name, 0, "morph", "test")
    assert a != _dump(task_name, 1, "morph", "test")


def test_byte_identical_across_processes_and_hash_seeds() -> None:
    code = (
        "import hashlib, json; from adamergex.task import get_task; "
        "ds = get_task('world_nli', train_size=30, validation_size=30, test_size=30).load('sov', 'validation'); "
        "print(hashlib.sha256(json.dumps(ds.to_list(), sort_keys=True).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    expected = get_task("world_nli", train_size=30, validation_size=30, test_size=30).load("sov", "validation")
    assert out.stdout.strip() == hashlib.sha256(json.dumps(expected.to_list(), sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("task_name", WORLD_TASKS)
def test_every_split_of_every_language_loads_and_formats(task_name: str) -> None:
    task = get_task(task_name, **SMALL)
    for language in LANGUAGES:
        for split in SPLITS:
            ds = task.load(language, split)
            assert len(ds) == SMALL[f"{split}_size"]
            assert set(ds["language"]) == {language}
            for row in ds.select(range(5)):
                ex = task.format(row)
                assert ex.prompt
                if task.kind == "classification":
                    assert len(ex.choices) == 3 and ex.target == ex.choices[ex.label]
                elif task.kind == "generation":
                    assert ex.target.strip() == ex.references[0] and ex.target.startswith(" ")
                    assert task.extract_answer(ex.target + " . question :") == ex.references[0]


@pytest.mark.parametrize("task_name", ("world_arith", "world_nli", "world_qa"))
def test_splits_are_parallel_across_languages_and_disjoint(task_name: str) -> None:
    task = get_task(task_name, **SMALL)
    items = {split: task.items(split) for split in SPLITS}
    assert not set(items["train"]) & set(items["test"])
    assert not set(items["validation"]) & set(items["test"])
    gold = {lang: [task.gold(r) for r in task.load(lang, "test")] for lang in LANGUAGES}
    if task_name == "world_qa":  # names are transliterated in morph: compare the others
        gold.pop("morph")
    assert all(g == gold["src"] for g in gold.values())


def _truth(premise: tuple[Clause, ...], hyp: Clause) -> bool | None:
    """An independent reading of a hypothesis against a premise: True, False, or None (unknown)."""
    value: bool | None = None
    for fact in premise:
        if fact.subj != hyp.subj or fact.verb != hyp.verb:
            continue
        if hyp.verb in ("live", "be"):
            value = (fact.obl or fact.obj) == (hyp.obl or hyp.obj)
        elif hyp.verb == "like":
            value = True if fact.obj == hyp.obj else None
        else:
            assert fact.obj is not None and hyp.obj is not None and isinstance(fact.obj.n, int)
            if (fact.obj.word, fact.obj.color) != (hyp.obj.word, hyp.obj.color):
                continue
            n, k = fact.obj.n, hyp.obj.n
            if hyp.obj.cmp == "more":
                value = n > k  # type: ignore[operator]
            elif hyp.obj.cmp == "fewer":
                value = n < k  # type: ignore[operator]
            else:
                value = True if k is None else n == k
    if value is None:
        return None
    return value != hyp.neg


@pytest.mark.parametrize("difficulty", ["full", "simple"])
def test_nli_labels_follow_from_the_premise(difficulty: str) -> None:
    task = get_task("world_nli", difficulty=difficulty, train_size=600, validation_size=30, test_size=30)
    for premise, hyp, label in task.items("train"):
        assert hyp.question
        expected = {True: 0, None: 1, False: 2}[_truth(premise, hyp)]
        assert label == expected, (premise, hyp, label)


def test_arith_answers_are_the_final_count() -> None:
    task = get_task("world_arith", max_steps=3, **SMALL)
    for story, question, answer in task.items("train"):
        who, noun = question.subj, question.obj
        count = 0
        for c in story:
            if c.subj != who:
                continue
            assert c.obj is not None and c.obj.word == noun.word and isinstance(c.obj.n, int)  # type: ignore[union-attr]
            sign = {"have": 0, "buy": 1, "find": 1, "lose": -1, "give": -1}[c.verb]
            count = c.obj.n if sign == 0 else count + sign * c.obj.n
        assert count == answer >= 0


def test_qa_answers_occur_once_in_the_context() -> None:
    task = get_task("world_qa", **SMALL)
    for row in task.load("src", "train"):
        words = row["context"].split()
        assert row["answer"] in words
    for row in task.load("morph", "test"):  # the bare name; the context may inflect it
        assert row["answer"] in row["context"]


def _constant_score(task: Any, language: str, prediction: str) -> float:
    ds = task.load(language, "test")
    metric = task.metric()
    if task.kind == "classification":
        golds = torch.tensor([task.format(r).label for r in ds])
        metric.update(torch.full_like(golds, int(prediction)), golds)
    else:
        examples = [task.format(r) for r in ds]
        metric.update([task.extract_answer(" " + prediction)] * len(examples), [e.references for e in examples])
    value = metric.compute()
    return float(value["exact_match"] if isinstance(value, dict) else value)


@pytest.mark.parametrize("task_name", ("world_arith", "world_nli", "world_qa"))
def test_a_constant_predictor_scores_at_chance(task_name: str) -> None:
    task = get_task(task_name, train_size=90, validation_size=90, test_size=90)
    for language in ("src", "morph"):
        chance = task.chance(language, "test")
        golds = Counter(task.gold(r) for r in task.load(language, "test"))
        best = golds.most_common(1)[0][0]
        assert _constant_score(task, language, best) == pytest.approx(chance)
        if task_name == "world_nli":
            assert chance == pytest.approx(1 / 3)
            for label in ("0", "1", "2"):
                assert _constant_score(task, language, label) == pytest.approx(1 / 3)


def test_unknown_names_list_the_available_ones() -> None:
    task = get_task("world_nli", **SMALL)
    with pytest.raises(UnknownNameError, match="available: src, lex, sov, morph"):
        task.load("fr", "test")
    with pytest.raises(UnknownNameError, match="available: train, validation, test"):
        task.load("src", "dev")
    with pytest.raises(UnknownNameError, match="world_arith, world_nli, world_qa, world_reference"):
        get_task("world_foo")
    with pytest.raises(UnknownNameError, match="available: src, lex, sov, morph"):
        get_task("world_nli", languages=("src", "xx"))
    with pytest.raises(ConfigError, match="train_size must be a positive integer"):
        get_task("world_nli", train_size=0)


def test_local_data_files_in_the_same_schema_load(tmp_path: Any) -> None:
    task = get_task("world_arith", **SMALL)
    rows = task.load("lex", "test").to_list()
    path = tmp_path / "lex_test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    local = task.load("lex", "test", data_files={"test": str(path)})
    assert local.to_list() == rows
    assert task.format(local[0]) == task.format(rows[0])


def test_native_prompts_write_the_frame_in_the_target_language() -> None:
    ex_default = get_task("world_nli", **SMALL).format(get_task("world_nli", **SMALL).load("lex", "test")[0])
    native = get_task("world_nli", native_prompts=True, **SMALL)
    ex_native = native.format(native.load("lex", "test")[0])
    assert ex_default.choices == (" yes", " maybe", " no")
    assert not set(ex_native.choices) & set(ex_default.choices)
    assert "question" in ex_default.prompt and "question" not in ex_native.prompt


@pytest.mark.parametrize("task_name", WORLD_TASKS)
def test_world_tasks_follow_the_task_contract(task_name: str) -> None:
    import dataclasses

    cls = TASKS.get(task_name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert cls.name == task_name and cls.__module__.startswith("adamergex.tasks.world.")
    task = get_task(task_name)
    assert task.source_language == "src" and task.languages == LANGUAGES
    assert task.metric() is not task.metric()
