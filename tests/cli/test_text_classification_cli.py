"""``text_classification`` from the command line end to end (issue #13 items 4, 10 and the #10 leftover):
train with ``--task-options``, then evaluate and tune with the options the adapter recorded (and an override),
the ``gold_logprob`` objective with standard errors, and per-group tuning whose best parameters ``adamergex
merge --param`` reproduces. A tiny BERT classifier and tiny JSONL files in two languages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from adamergex.cli import main
from adamergex.io import load_adapter

LABELS = ("a", "b")
WORDS = {"en": ("apple", "bread"), "fr": ("pomme", "pain")}


def rows(lang: str, n: int) -> list[dict[str, Any]]:
    return [{"text": f"{WORDS[lang][i % 2]} {'very ' * (i % 3)}good", "label": LABELS[i % 2]} for i in range(n)]


def write(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Model, data and three LoRA adapters trained through ``adamergex train`` with task options."""
    from adamergex.tiny import tiny_bert_classifier, train_tokenizer

    root = tmp_path_factory.mktemp("tc")
    data = {lang: write(root / f"{lang}.jsonl", rows(lang, 12)) for lang in WORDS}
    tok = train_tokenizer([r["text"] for lang in WORDS for r in rows(lang, 12)], vocab_size=120)
    model_dir = root / "model"
    tiny_bert_classifier(len(tok), 2, name_or_path=str(model_dir)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    options = ["--task-options", "labels=[a,b]", "languages=[en,fr]"]
    for name, lang, seed in (("task", "en", 1), ("ref_source", "en", 2), ("ref_target", "fr", 3)):
        code = main(["train", "--model", str(model_dir), "--task", "text_classification", *options,
                     "--language", lang, "--data-files", data[lang], "--adapter", "lora",
                     "--adapter-options", "r=2", "target_modules=[query,value]", "--max-steps", "2",
                     "--batch-size", "4", "--lr", "0.05", "--seed", str(seed), "--on-stall", "warn",
                     "--no-progress-bar", "--output", str(root / name)])
        assert code == 0
    return {"root": root, "model": str(model_dir), "data": data}


def test_training_records_the_task_options(setup: dict[str, Any]) -> None:
    meta = load_adapter(setup["root"] / "task").metadata
    assert meta["task"] == "text_classification"
    assert meta["training"]["task_options"] == {"labels": ["a", "b"], "languages": ["en", "fr"]}


def evaluate_args(setup: dict[str, Any], *extra: str) -> list[str]:
    return ["evaluate", "--model", setup["model"], "--adapter", str(setup["root"] / "task"), "--task",
            "text_classification", "--languages", "en,fr", "--data-files", f"en={setup['data']['en']}",
            f"fr:validation={setup['data']['fr']}", "--no-progress", *extra]


def test_evaluate_takes_the_adapters_task_options(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "eval.json"
    assert main(evaluate_args(setup, "--output", str(out), "--predictions")) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["language", "accuracy", "gold_logprob"] and "±" in table
    result = json.loads(out.read_text())
    assert result["record"]["task_options"] == {"values": {"labels": ["a", "b"], "languages": ["en", "fr"]},
                                                "from": {"labels": "adapter", "languages": "adapter"}}
    for lang in ("en", "fr"):
        preds = result["predictions"][lang]
        n, correct = len(preds), sum(p["prediction"] == p["label"] for p in preds)
        assert result["scores"][lang]["accuracy"] == pytest.approx(correct / n)
        assert result["stderr"][lang]["accuracy"] == pytest.approx(math.sqrt(correct / n * (1 - correct / n) / n))
        values = [p["gold_logprob"] for p in preds]
        mean = sum(values) / n
        assert result["scores"][lang]["gold_logprob"] == pytest.approx(mean)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        assert result["stderr"][lang]["gold_logprob"] == pytest.approx(sd / math.sqrt(n))
    avg_se = math.sqrt(sum(result["stderr"][x]["accuracy"] ** 2 for x in ("en", "fr"))) / 2
    assert result["average_stderr"]["accuracy"] == pytest.approx(avg_se)


def test_gold_logprob_is_the_log_softmax_of_the_logits_at_the_gold_label(setup: dict[str, Any],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """By hand: the model with the adapter, one example at a time (no padding, no batching)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = setup["root"] / "eval_en.json"
    assert main(evaluate_args(setup, "--languages", "en", "--data-files", setup["data"]["en"], "--predictions",
                              "--batch-size", "5", "--output", str(out))) == 0
    got = json.loads(out.read_text())
    tok = AutoTokenizer.from_pretrained(setup["model"])
    base = AutoModelForSequenceClassification.from_pretrained(setup["model"])
    model = PeftModel.from_pretrained(base, str(setup["root"] / "task")).eval()
    hand = []
    with torch.no_grad():
        for row in rows("en", 12):
            logits = model(**tok(row["text"], return_tensors="pt")).logits[0].double()
            hand.append(float(torch.log_softmax(logits, -1)[LABELS.index(row["label"])]))
    assert [p["gold_logprob"] for p in got["predictions"]["en"]] == pytest.approx(hand, abs=1e-5)
    assert got["scores"]["en"]["gold_logprob"] == pytest.approx(sum(hand) / len(hand), abs=1e-5)
    capsys.readouterr()


def test_an_explicit_task_option_wins_key_by_key(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "eval_override.json"
    assert main(evaluate_args(setup, "--languages", "en", "--data-files", setup["data"]["en"],
                              "--task-options", "languages=[en]", "--output", str(out))) == 0
    record = json.loads(out.read_text())["record"]
    assert record["task_options"]["from"] == {"labels": "adapter", "languages": "command line"}
    assert record["task_settings"]["languages"] == ["en"]
    # a bad value for a recorded option is the task's own error, naming the option
    assert main(evaluate_args(setup, "--task-options", "labels=[a,a]")) == 2
    assert "labels must be distinct, got ['a', 'a']" in capsys.readouterr().err


def tune_args(setup: dict[str, Any], output: Path, *extra: str) -> list[str]:
    root = setup["root"]
    return ["tune", "--model", setup["model"], "--task", "text_classification", "--languages", "fr",
            "--task-adapter", str(root / "task"), "--ref-source", str(root / "ref_source"),
            "--ref-target", str(root / "ref_target"), "--data-files", setup["data"]["fr"], "--n-trials", "3",
            "--output", str(output), *extra]


def test_tune_on_gold_logprob_with_the_adapters_options_and_standard_errors(
        setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    assert main(tune_args(setup, tmp_path / "t", "--metric", "gold_logprob")) == 0
    captured = capsys.readouterr()
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert json.loads(captured.out) == best
    assert best["record"]["metric"] == "gold_logprob"
    assert best["record"]["task_options"] == {"labels": ["a", "b"], "languages": ["en", "fr"]}
    assert best["task_options_from"] == {"labels": "adapter", "languages": "adapter"}
    assert best["best_stderr"] > 0 and len(best["trials"]) == 3
    assert best["trials"][0]["value"] == best["best_value"] and best["trials"][0]["stderr"] == best["best_stderr"]
    assert best["trials"][0]["number"] in best["within_one_stderr"]
    assert "best trial: gold_logprob" in captured.err and "within one standard error" in captured.err
    study = optuna.load_study(study_name=best["study_name"], storage=f"sqlite:///{tmp_path / 't' / 'study.db'}")
    for trial in study.trials:
        per_lang = trial.user_attrs["per_language"]["fr"]
        assert trial.user_attrs["stderr"] == per_lang["stderr"] > 0 and per_lang["examples"] == 12
        assert per_lang["value"] == trial.value
    # accuracy's standard error is the binomial one
    assert main(tune_args(setup, tmp_path / "acc", "--n-trials", "1")) == 0
    acc = json.loads((tmp_path / "acc" / "best.json").read_text())
    p = acc["best_value"]
    assert acc["best_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 12))


def test_tune_per_group_and_merge_reproduces_the_best_adapter(setup: dict[str, Any], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import optuna
    from safetensors.torch import load_file

    assert main(tune_args(setup, tmp_path / "g", "--groups", "t=0-0,1-1", "--metric", "gold_logprob")) == 0
    best = json.loads((tmp_path / "g" / "best.json").read_text())
    assert set(best["best_params"]) == {"t@0-0", "t@1-1"}
    study = optuna.load_study(study_name=best["study_name"], storage=f"sqlite:///{tmp_path / 'g' / 'study.db'}")
    assert all(set(t.params) == {"t@0-0", "t@1-1"} for t in study.trials)
    root = setup["root"]
    params = [x for k, v in best["best_params"].items() for x in ("--param", f"{k}={v!r}")]
    assert main(["merge", "--strategy", "adamergex", "--task", str(root / "task"), "--ref-source",
                 str(root / "ref_source"), "--ref-target", str(root / "ref_target"), *params,
                 "--output", str(tmp_path / "merged")]) == 0
    a = load_file(str(tmp_path / "merged" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "g" / "best_adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()


@pytest.mark.parametrize(("extra", "message"), [
    (("--groups", "t"), "--groups takes NAME=GROUP,GROUP... (e.g. t=0-7,8-15), got 't'"),
    (("--groups", "t=0-0,0-0"), "repeats group(s) ['0-0']"),
    (("--groups", "t=9-9"), "group(s) t@9-9 match no adapted module"),
    (("--groups", "q=0-0"), "cannot search 'q' per group; parameters with groups: t"),
    (("--data-files", "de=x.jsonl"), "--data-files entry 'de=x.jsonl': 'de' is neither a language"),
    (("--metric", "f1"), "reports (accuracy, gold_logprob), got 'f1'"),
])
def test_tune_refuses_bad_groups_and_data_before_the_model_loads(
        setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
        message: str) -> None:
    args = tune_args(setup, tmp_path / "bad")
    if extra[0] == "--data-files":
        i = args.index("--data-files")
        args[i + 1] = extra[1]
    else:
        args += list(extra)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_labels_that_do_not_fit_the_saved_classifier_are_one_line(setup: dict[str, Any], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForSequenceClassification

    saved = tmp_path / "classifier"  # a checkpoint with its own 2-label classifier head
    AutoModelForSequenceClassification.from_pretrained(setup["model"], num_labels=2).save_pretrained(saved)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(setup["model"]) / name).exists():
            (saved / name).write_bytes((Path(setup["model"]) / name).read_bytes())
    capsys.readouterr()
    code = main(["evaluate", "--model", str(saved), "--task", "text_classification", "--task-options",
                 "labels=[a,b,c]", "languages=[en,fr]", "--languages", "en", "--data-files",
                 f"en={setup['data']['en']}", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "has a classifier for 2 labels but task 'text_classification' declares 3" in err
