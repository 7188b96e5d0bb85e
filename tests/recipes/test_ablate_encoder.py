"""``benchmarks/ablations/encoder_local_files.yaml`` end to end on a tiny BERT and tiny generated files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from adamergex.cli import main
from adamergex.recipes.ablate import read_rows

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "benchmarks" / "ablations" / "encoder_local_files.yaml"
TINY = [
    "seeds=[0]", "reference.options.chunk_length=16", "strategies[1].tune.n_trials=2",
    "adapters[0].task={max_steps: 10, lr: 5.0e-3, batch_size: 8}",
    "adapters[0].reference={max_steps: 4, lr: 1.0e-3, batch_size: 4, on_stall: warn}",
    "adapters[1].task={max_steps: 10, lr: 5.0e-2, batch_size: 8}",
    "adapters[1].reference={max_steps: 4, lr: 1.0e-2, batch_size: 4, on_stall: warn}",
    "head.train={max_steps: 4, lr: 1.0e-3, batch_size: 4, on_stall: warn}",
]


def _data(root: Path) -> None:
    from adamergex.tiny import tiny_bert_mlm, train_tokenizer

    words = {"en": (["good", "great", "nice"], ["bad", "awful", "poor"]),
             "fr": (["bon", "super", "joli"], ["mauvais", "nul", "triste"])}
    rng, texts = random.Random(0), []
    for lang, (pos, neg) in words.items():
        for split, n in (("train", 48), ("validation", 12), ("test", 16)):
            rows = [{"text": f"{rng.choice(pos if i % 2 else neg)} film {rng.choice(['today', 'here'])}",
                     "label": i % 2} for i in range(n)]
            (root / f"{lang}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            texts += [r["text"] for r in rows]
        docs = [" ".join(rng.choice([*pos, *neg, "film", "the"]) for _ in range(12)) for _ in range(20)]
        (root / f"{lang}_wiki.txt").write_text("\n".join(docs) + "\n")
        texts += docs
    tok = train_tokenizer(texts, vocab_size=200)
    tiny_bert_mlm(len(tok), hidden_size=32).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")


@pytest.mark.slow  # 12 tiny trainings (head, 2 types × (task, 2 references, upper bound)): ~45 s on 2 cores
def test_encoder_template_runs_end_to_end_on_a_tiny_bert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _data(tmp_path)
    monkeypatch.setenv("ENCODER", str(tmp_path / "model"))
    monkeypatch.setenv("DATA", str(tmp_path))
    args = ["ablate", str(CONFIG), "--output", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"),
            "--no-progress"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 0
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 2 * 5 and all(r["status"] == "ok" for r in rows.values()), \
        {c: r.get("error") for c, r in rows.items()}
    assert all(len(r["items"]) == 16 for r in rows.values())
    heads = [p for p in (tmp_path / "cache").glob("*/*/head")]
    assert len(heads) == 1  # the shared MLM head, trained once
    assert main(["report", str(tmp_path / "run")]) == 0
