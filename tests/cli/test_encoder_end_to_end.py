"""A user's multilingual encoder on their own files, every step from the command line (issue #13, "Tests and
check"): a BERT checkpoint with a pooler and no MLM head, a classification task from JSONL files with task
options and an encoder template, a shared MLM head and reference adapters on one-line-per-example text, a merge
with every registered strategy, evaluation with the task options the adapter recorded, and every merge output
(madx_stack included) loaded with plain PEFT giving the logits adamergex scores with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from adamergex.cli import main
from adamergex.registry import STRATEGIES

LABELS = ("sport", "food")
WORDS = {"en": {"sport": ("ball", "goal", "team"), "food": ("bread", "soup", "rice")},
         "fr": {"sport": ("balle", "but", "equipe"), "food": ("pain", "soupe", "riz")}}


def _sentences(lang: str, n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        label = LABELS[i % 2]
        words = WORDS[lang][label]
        out.append((f"{words[i % 3]} {words[(i + 1) % 3]} number {i}", label))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from adamergex.tiny import tiny_bert_classifier, train_tokenizer

    root = tmp_path_factory.mktemp("encoder")
    texts = {lang: _sentences(lang, 16) for lang in WORDS}
    tok = train_tokenizer([t for lang in texts for t, _ in texts[lang]], vocab_size=150)
    model = root / "encoder"  # BertForSequenceClassification weights: a pooler, no MLM head
    tiny_bert_classifier(len(tok), 2, hidden_size=32, name_or_path=str(model)).save_pretrained(model)
    tok.save_pretrained(model)
    files: dict[str, str] = {}
    for lang, rows in texts.items():
        (root / f"{lang}.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
        (root / f"{lang}.txt").write_text("".join(t + "\n" for t, _ in rows))
        files[lang] = str(root / f"{lang}.jsonl")
        files[f"{lang}_text"] = str(root / f"{lang}.txt")
    common = ["--model", str(model), "--no-progress-bar", "--seed", "0", "--batch-size", "4", "--max-steps", "3",
              "--on-stall", "warn"]
    ref_task = ["--task", "reference_text", "--task-options", "languages=[en,fr]", "packing=lines",
                "chunk_length=16"]
    assert main(["train", *common, *ref_task, "--language", "en", "--train-head", "--head-languages", "en", "fr",
                 "--data-files", f"en={files['en_text']}", f"fr={files['fr_text']}", "--lr", "0.01",
                 "--output", str(root / "head")]) == 0
    for lang in WORDS:
        assert main(["train", *common, *ref_task, "--language", lang, "--head", str(root / "head"),
                     "--data-files", files[f"{lang}_text"], "--adapter-options", "r=2",
                     "target_modules=[query,value]", "--lr", "0.01", "--output", str(root / f"ref_{lang}")]) == 0
    task_options = ["--task-options", "labels=[sport,food]", "languages=[en,fr]", "text_template='query: {text}'"]
    assert main(["train", *common, "--task", "text_classification", *task_options, "--language", "en",
                 "--data-files", files["en"], "--adapter-options", "r=2", "target_modules=[query,value]",
                 "--lr", "0.05", "--output", str(root / "task_en")]) == 0
    return {"root": root, "model": str(model), "files": files}


def test_the_adapters_record_what_made_them(run: dict[str, Any]) -> None:
    from adamergex.io import load_adapter

    task = load_adapter(run["root"] / "task_en").metadata
    assert task["training"]["task_options"]["text_template"] == "query: {text}"
    assert task["head"]["policy"] == "trained_with_adapter"
    ref = load_adapter(run["root"] / "ref_fr").metadata
    assert ref["head"]["policy"] == "shared" and ref["training"]["task_options"]["packing"] == "lines"


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_merges_evaluates_and_loads_in_plain_peft(run: dict[str, Any], strategy: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adamergex.evaluation import load_model, resolve_adapter
    from adamergex.loading import attached
    from adamergex.strategy import Composition
    from adamergex.task import get_task

    root = run["root"]
    out = root / f"merge_{strategy}"
    assert main(["merge", "--strategy", strategy, "--task", str(root / "task_en"), "--ref-source",
                 str(root / "ref_en"), "--ref-target", str(root / "ref_fr"), "--output", str(out)]) == 0
    result = root / f"eval_{strategy}.json"
    assert main(["evaluate", "--model", run["model"], "--adapter", str(out), "--task", "text_classification",
                 "--languages", "fr", "--split", "test", "--data-files", f"fr={run['files']['fr']}",
                 "--no-progress", "--output", str(result)]) == 0
    record = json.loads(result.read_text())
    assert record["record"]["task_options"]["from"]["labels"] == "adapter"  # taken from the task adapter
    assert 0.0 <= record["scores"]["fr"]["accuracy"] <= 1.0
    capsys.readouterr()

    merged = resolve_adapter(out)
    task = get_task("text_classification", labels=LABELS, languages=("en", "fr"), text_template="query: {text}")
    model, tok = load_model(run["model"], task=task, adapter=merged, device="cpu")
    batch = tok(["query: ball goal number 1", "query: pain soupe number 2"], return_tensors="pt", padding=True)
    with attached(model, merged) as wrapped, torch.no_grad():
        ours = wrapped(**batch).logits
    if isinstance(merged, Composition):  # only where no exact single adapter exists (not for LoRA)
        pytest.fail(f"{strategy} wrote a composition for LoRA adapters")
    base = AutoModelForSequenceClassification.from_pretrained(run["model"], num_labels=2)
    plain = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        theirs = plain(**AutoTokenizer.from_pretrained(run["model"])(
            ["query: ball goal number 1", "query: pain soupe number 2"], return_tensors="pt", padding=True)).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)
