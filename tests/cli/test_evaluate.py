"""``adamergex evaluate`` end to end on tiny models saved to disk (no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adamergex.cli import main
from adamergex.io import save_adapter
from adamergex.registry import TASKS
from tests.evaluation.test_evaluation import (  # noqa: F401  (fixtures)
    ToyChoiceTask, lora_state, one_thread, tok, toy_rows, write_jsonl,
)


@pytest.fixture
def saved(tmp_path: Path, tok: Any) -> Any:
    """A tiny Llama and its tokenizer saved to ``model/``, a LoRA adapter for it in ``adapter/``, toy data."""
    from adamergex.tiny import tiny_llama

    model_dir = tmp_path / "model"
    model = tiny_llama(len(tok), seed=0, name_or_path=str(model_dir))
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    save_adapter(lora_state(model, seed=1, base=str(model_dir)), tmp_path / "adapter")
    save_adapter(lora_state(model, seed=1, base="org/other-model"), tmp_path / "foreign")
    data = [f"{lang}={write_jsonl(tmp_path / f'{lang}.jsonl', toy_rows())}" for lang in ("en", "fr")]
    with TASKS.scoped("toy_choice", ToyChoiceTask):
        yield {"dir": tmp_path, "model": str(model_dir), "data": data}


def run(saved: Any, *extra: str, adapter: str = "adapter") -> list[str]:
    return ["evaluate", "--model", saved["model"], "--adapter", str(saved["dir"] / adapter), "--task", "toy_choice",
            "--languages", "en,fr", "--data-files", *saved["data"], "--no-progress", *extra]


def test_cli_scores_writes_json_and_refuses_to_overwrite(saved: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = saved["dir"] / "results.json"
    assert main(run(saved, "--limit", "5", "--seed", "2", "--output", str(out), "--predictions")) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["language", "accuracy", "gold_logprob"] and "average" in table
    assert "±" in table.splitlines()[1]  # each score with its standard error
    data = json.loads(out.read_text())
    assert set(data["scores"]) == {"en", "fr"} and 0.0 <= data["scores"]["en"]["accuracy"] <= 1.0
    record = data["record"]
    assert (record["limit"], record["seed"], record["split"], record["examples"]) == (5, 2, "validation",
                                                                                      {"en": 5, "fr": 5})
    assert record["adapter_path"] == str(saved["dir"] / "adapter") and record["base_model"] == saved["model"]
    assert record["scoring"]["method"] == "loglikelihood" and len(data["predictions"]["fr"]) == 5
    assert main(run(saved, "--output", str(out))) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(run(saved, "--output", str(out), "--overwrite", "--limit", "3")) == 0
    assert json.loads(out.read_text())["record"]["limit"] == 3


def test_cli_refusals_name_what_exists(saved: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run(saved, adapter="foreign")) == 2
    err = capsys.readouterr().err
    assert "'org/other-model'" in err and repr(saved["model"]) in err
    assert main(run(saved, adapter="foreign") + ["--no-base-model-check"]) == 0
    capsys.readouterr()
    assert main([*run(saved)[:7], "--languages", "en,xx"]) == 2
    assert "no language 'xx'; available: en, fr, de" in capsys.readouterr().err
    assert main(run(saved, "--split", "test", "--purpose", "tuning")) == 2
    assert "tuning on split 'test' is refused" in capsys.readouterr().err
    assert main([*run(saved)[:5], "--task", "nope", "--languages", "en"]) == 2
    assert "unknown task 'nope'; available:" in capsys.readouterr().err


def test_cli_picks_a_sequence_classifier_from_the_adapter_task_type(tmp_path: Path, tok: Any,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from adamergex.tiny import tiny_bert_classifier

    model_dir = tmp_path / "bert"
    model = tiny_bert_classifier(len(tok), 3, name_or_path=str(model_dir))
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    state = lora_state(model, seed=2, head="classifier", task_type="SEQ_CLS", targets=("query", "value"))
    save_adapter(state, tmp_path / "cls")
    out = tmp_path / "r.json"
    data = write_jsonl(tmp_path / "en.jsonl", toy_rows())
    with TASKS.scoped("toy_choice", ToyChoiceTask):
        rc = main(["evaluate", "--model", str(model_dir), "--adapter", str(tmp_path / "cls"), "--task", "toy_choice",
                   "--languages", "en", "--data-files", f"en={data}", "--output", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["record"]["scoring"]["method"] == "classifier_logits"


def test_cli_refuses_a_head_the_checkpoint_lacks_and_the_adapter_does_not_bring(
    tmp_path: Path, tok: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from adamergex.tiny import tiny_bert_classifier, tiny_bert_mlm

    model_dir = tmp_path / "mlm"  # a pretrained encoder: no classifier, no pooler
    tiny_bert_mlm(len(tok), name_or_path=str(model_dir)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    classifier = tiny_bert_classifier(len(tok), 3, name_or_path=str(model_dir))
    state = lora_state(classifier, seed=2, head="classifier", task_type="SEQ_CLS", targets=("query", "value"))
    save_adapter(state, tmp_path / "cls")
    data = write_jsonl(tmp_path / "en.jsonl", toy_rows(1))
    with TASKS.scoped("toy_choice", ToyChoiceTask):
        rc = main(["evaluate", "--model", str(model_dir), "--adapter", str(tmp_path / "cls"), "--task", "toy_choice",
                   "--languages", "en", "--data-files", f"en={data}", "--no-progress"])
    assert rc == 2
    assert "has no weights for ['bert.pooler.dense'], so they would be evaluated at random" in capsys.readouterr().err


# -- issue #12, item 14: one line naming the file or the flag --------------------------------------------------
def test_data_files_that_are_not_utf8_or_empty_are_named(saved: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bad = saved["dir"] / "latin1.jsonl"
    bad.write_bytes('{"premise": "café", "hypothesis": "b", "label": "a"}\n'.encode("latin-1"))
    empty = saved["dir"] / "empty.jsonl"
    empty.write_bytes(b"")
    base = ["evaluate", "--model", saved["model"], "--task", "toy_choice", "--languages", "en", "--no-progress"]
    assert main([*base, "--data-files", f"en={bad}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("adamergex ")]  # no progress bars
    assert len(err) == 1 and f"data file {str(bad)!r} must be UTF-8 text; byte 16 (line 1) is b'\\xe9'" in err[0]
    assert main([*base, "--data-files", f"en={empty}"]) == 2
    assert f"data file {str(empty)!r} is empty" in capsys.readouterr().err


def test_a_model_directory_without_tokenizer_files_names_them(saved: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    bare = saved["dir"] / "bare-model"
    shutil.copytree(saved["model"], bare)
    for p in bare.iterdir():
        if "token" in p.name or p.name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
            p.unlink()
    assert main(["evaluate", "--model", str(bare), "--task", "toy_choice", "--languages", "en",
                 "--data-files", *saved["data"][:1], "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"model directory {bare} has no tokenizer: none of tokenizer.json" in err
    assert "Traceback" not in err


def test_a_base_model_mismatch_names_the_command_line_flag(saved: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run(saved, adapter="foreign")) == 2
    assert "pass --no-base-model-check" in capsys.readouterr().err
