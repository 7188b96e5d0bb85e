"""Encoder text templates (``text_template``/``text_pair_template``): one rendering in the task's ``format`` and one
source of encoder input (``adamergex.task.encoder_inputs``), so training batches and evaluation inputs agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.task import Example, check_text_template, encoder_inputs, get_task
from adamergex.tiny import tiny_bert_classifier, train_tokenizer

ROWS = [
    {"q": "where is the station", "doc": "the station is north", "title": "trains", "label": "yes"},
    {"q": "what is bread", "doc": "cats sleep a lot", "title": "food", "label": "no"},
    {"q": "who sings", "doc": "the choir sings", "title": "music", "label": "yes"},
    {"q": "when is dawn", "doc": "bread needs flour", "title": "time", "label": "no"},
]


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer([f"query: passage: {r['q']} {r['doc']} {r['title']}" for r in ROWS], vocab_size=300)


def unpadded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask)]


def test_training_batches_and_evaluation_inputs_are_the_same_templated_text(tok: Any, tmp_path: Path) -> None:
    from adamergex.evaluation import evaluate
    from adamergex.training import TaskDataModule

    path = tmp_path / "en.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    task = get_task("text_classification", languages=("en",), labels=("no", "yes"), text_column="q",
                    text_pair_column="doc", text_template="query: {text}", text_pair_template="passage: {title}. {doc}")
    dm = TaskDataModule(task, "en", tok, "sequence_classification", data_files={"train": str(path)}, batch_size=2)
    loader = iter(dm.train_dataloader())
    trained = [seq for _ in range(2) for batch in [next(loader)] for seq in unpadded(batch["input_ids"],
                                                                                   batch["attention_mask"])]
    seen: list[tuple[int, ...]] = []
    model = tiny_bert_classifier(len(tok), 2, seed=0).eval()
    model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.extend(unpadded(kw["input_ids"], kw["attention_mask"])), with_kwargs=True)
    evaluate(model, tok, task, ["en"], split="test", data_files={"en": {"test": str(path)}}, progress=False)
    expected = [tuple(tok(f"query: {r['q']}", f"passage: {r['title']}. {r['doc']}")["input_ids"]) for r in ROWS]
    assert sorted(trained) == sorted(seen) == sorted(expected)  # both paths read exactly the templated pair
    assert tok.decode(list(expected[0])).startswith("query: where is the station")


def test_pair_tasks_template_both_segments() -> None:
    xnli = get_task("xnli", text_template="query: {text}", text_pair_template="query: {hypothesis}")
    ex = xnli.format({"premise": "It rains.", "hypothesis": "It is wet.", "label": 0})
    assert (ex.text, ex.text_pair) == ("query: It rains.", "query: It is wet.")
    assert ex.prompt.startswith("It rains.")  # decoder prompts are untouched
    pawsx = get_task("pawsx")  # the default templates are the columns unchanged
    ex = pawsx.format({"sentence1": "a {b}", "sentence2": "c", "label": 1})
    assert (ex.text, ex.text_pair) == ("a {b}", "c")  # braces in the data are text, not fields


def test_bad_templates_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"`text_template` must name at least one field"):
        get_task("text_classification", labels=("a", "b"), text_template="query: ")
    with pytest.raises(ConfigError, match=r"`text_pair_template` is not a valid template"):
        get_task("xnli", text_pair_template="{text_pair")
    with pytest.raises(ConfigError, match=r"`text_template`: template fields are column names"):
        check_text_template("{text.upper}", "text_template")
    with pytest.raises(ConfigError, match="text_pair_template applies to text pairs; set text_pair_column"):
        get_task("text_classification", labels=("a", "b"), text_pair_template="passage: {text_pair}")
    with pytest.raises(ConfigError, match=r"names \{text_pair\}, which single texts lack"):
        get_task("text_classification", labels=("a", "b"), text_template="{text} {text_pair}")
    task = get_task("text_classification", languages=("en",), labels=("a", "b"), text_template="{titel}: {text}")
    with pytest.raises(ConfigError, match=r"option `text_template` \('\{titel\}: \{text\}'\) names field 'titel', "
                                          r"which the examples lack; available: label, text, text_pair"):
        task.format({"text": "x", "label": 0})


def test_encoder_inputs_refuse_missing_text_and_mixed_pairs() -> None:
    assert encoder_inputs([Example("p", text="a"), Example("p", text="b")], where="w") == (["a", "b"], None)
    with pytest.raises(ConfigError, match=r"evaluation: encoder classification reads Example.text, which "
                                          r"examples \[1\] lack"):
        encoder_inputs([Example("p", text="a"), Example("p")], where="evaluation")
    with pytest.raises(ConfigError, match="must be set for every example or for none; example 0 has it, "
                                          "example 1 does not"):
        encoder_inputs([Example("p", text="a", text_pair="b"), Example("p", text="c")], where="w")
