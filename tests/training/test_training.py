"""Lightning adapter training (adamergex.training): losses, heads, MAD-X stacking, stalls, resume, CLI, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from adamergex import TASKS
from adamergex.errors import ConfigError, OutputExistsError, UnknownNameError
from adamergex.io import load_adapter, state_from_peft_model
from adamergex.loading import attach
from adamergex.task import Example, Task, TaskKind
from adamergex.tiny import tiny_bert_classifier, tiny_bert_mlm, tiny_llama, train_tokenizer
from adamergex.cli.train import cli_train
from adamergex.training._train import _state_from_full_state_dict
from adamergex.training import (
    AdapterTrainingModule,
    ReferenceHead,
    TrainingStalledError,
    linear_cross_entropy,
    prepare_model,
    train_adapter,
    train_reference_head,
)

ROOT = Path(__file__).resolve().parents[2]
WORDS = "river mountain cold warm bright dark quick slow green blue".split()
TEXTS = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 9)) + f" number {i}." for i in range(40)]


@dataclass(frozen=True)
class ToyLm(Task):
    name: ClassVar[str] = "toy_lm"
    kind: ClassVar[TaskKind] = "language_modeling"
    required_columns: ClassVar[tuple[str, ...]] = ("text",)
    languages: tuple[str, ...] = ("en", "fr")

    def format(self, example: Mapping[str, Any]) -> Example:
        return Example(prompt=example["text"])


@dataclass(frozen=True)
class ToyCls(Task):
    name: ClassVar[str] = "toy_cls"
    kind: ClassVar[TaskKind] = "classification"
    required_columns: ClassVar[tuple[str, ...]] = ("sentence", "label")
    languages: tuple[str, ...] = ("en", "fr")
    num_labels: int = 2

    def format(self, example: Mapping[str, Any]) -> Example:
        return Example(prompt=f"{example['sentence']}\nAnswer:", choices=(" no", " yes"),
                       label=int(example["label"]), text=example["sentence"])


@pytest.fixture(autouse=True)
def _setup() -> Any:
    torch.set_num_threads(1)  # 2 shared cores: OpenMP spinning makes tiny ops 50x slower
    with TASKS.scoped("toy_lm", ToyLm), TASKS.scoped("toy_cls", ToyCls):
        yield


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(TEXTS + ["Answer: no yes good bad"], vocab_size=320)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def lm_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "lm.jsonl", [{"text": t} for t in TEXTS])


@pytest.fixture
def cls_file(tmp_path: Path) -> Path:
    rows = [{"sentence": f"{'good' if i % 2 else 'bad'} {t}", "label": i % 2} for i, t in enumerate(TEXTS)]
    return write_jsonl(tmp_path / "cls.jsonl", rows)


def llama(tok: Any) -> Any:
    return tiny_llama(len(tok), hidden_size=32, layers=2, heads=4, intermediate_size=48)


LM = dict(max_length=16, batch_size=4, lr=1e-2, adapter_options={"r": 4}, stall_min_steps=1000)


# -- losses ---------------------------------------------------------------------------------------------------------
def test_linear_cross_entropy_matches_full_logits_in_value_and_gradients() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(50, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (37,))
    labels[::5] = -100
    ours = linear_cross_entropy(hidden, weight, bias, labels, chunk_size=8)
    ours.backward()
    got = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    ref = F.cross_entropy(F.linear(hidden, weight, bias), labels, ignore_index=-100, reduction="sum")
    ref.backward()
    assert torch.allclose(ours.double(), ref, rtol=1e-6)
    for g, t in zip(got, (hidden, weight, bias)):
        assert torch.allclose(g, t.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_fused_loss_equals_the_models_own_logits(tok: Any, kind: str) -> None:
    model = llama(tok) if kind == "causal" else tiny_bert_mlm(len(tok), hidden_size=32)
    peft_model = prepare_model(model, adapter_options={"r": 4}).eval()  # no dropout: both paths see one network
    ids = torch.randint(5, len(tok), (3, 12))
    labels = ids.clone() if kind == "causal" else torch.where(torch.rand(3, 12) < 0.3, ids, -100)
    batch = {"input_ids": ids, "labels": labels}
    objective = "causal_lm" if kind == "causal" else "masked_lm"
    fused = AdapterTrainingModule(peft_model, objective, loss_chunk_size=5)
    plain = AdapterTrainingModule(peft_model, objective, fused_loss=False)
    a, n_a, _ = fused.compute_loss(batch)
    b, n_b, _ = plain.compute_loss(batch)
    assert fused._fused and not plain._fused and n_a == n_b
    assert torch.allclose(a, b, rtol=1e-5)


# -- end to end -----------------------------------------------------------------------------------------------------
def test_lm_adapter_is_saved_in_peft_format_with_metadata_and_repeats_with_the_seed(tok: Any, lm_file: Path,
                                                                                    tmp_path: Path) -> None:
    from peft import PeftModel

    out = tmp_path / "adapter"
    state = train_adapter(llama(tok), tok, "toy_lm", "en", data_files=str(lm_file), max_steps=6, seed=3, output=out,
                          checkpoint_every=3, **LM)
    again = train_adapter(llama(tok), tok, "toy_lm", "en", data_files=str(lm_file), max_steps=6, seed=3, **LM)
    assert state.fingerprint() == again.fingerprint()
    assert {"adapter_config.json", "adapter_model.safetensors", "adamergex.json", "lightning"} <= set(os.listdir(out))
    assert (out / "lightning" / "checkpoints" / "last.ckpt").exists()
    ckpt = torch.load(out / "lightning" / "checkpoints" / "last.ckpt", weights_only=False)
    assert all("lora_" in k for k in ckpt["state_dict"])  # trainable tensors only, not the base model

    loaded = load_adapter(out)
    assert loaded.fingerprint() == state.fingerprint()
    meta = loaded.metadata
    assert (meta["task"], meta["language"], meta["base_model"], meta["seed"]) == ("toy_lm", "en", "tiny-llama", 3)
    assert len(meta["data"]["fingerprint"]) == 64 and meta["data"]["source"] == str(lm_file)
    assert meta["training"]["max_steps"] == 6 and meta["training"]["adapter_options"] == {"r": 4}
    assert meta["head"]["policy"] == "base_model" and meta["head"]["modules"] == ["lm_head"]

    base = llama(tok)
    peft_model = PeftModel.from_pretrained(base, out)
    ref = attach(llama(tok), loaded)
    ids = torch.randint(5, len(tok), (1, 8))
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-6)
    with pytest.raises(OutputExistsError, match="overwrite"):
        train_adapter(llama(tok), tok, "toy_lm", "en", data_files=str(lm_file), max_steps=1, output=out, **LM)


def test_ia3_and_prompt_target_training_on_a_decoder(tok: Any, cls_file: Path) -> None:
    state = train_adapter(llama(tok), tok, "toy_cls", "en", adapter="ia3", data_files=str(cls_file), max_steps=3,
                          max_length=32, batch_size=4, stall_min_steps=1000)
    assert state.kind == "ia3" and state.metadata["objective"] == "causal_lm"
    assert not state.saved_modules


def test_seq2seq_model_trains_on_prompt_and_target(tok: Any, cls_file: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(cfg)
    state = train_adapter(model, tok, "toy_cls", "en", data_files=str(cls_file), max_steps=2, max_length=32,
                          batch_size=4, adapter_options={"r": 4, "target_modules": ["q", "v"]}, stall_min_steps=1000)
    assert state.metadata["objective"] == "seq2seq_lm" and state.config["task_type"] == "SEQ_2_SEQ_LM"
    assert any(".decoder." in m for m in state.params) and any(".encoder." in m for m in state.params)


def test_classifier_saves_head_and_pooler_so_a_fresh_load_reproduces_it(tok: Any, cls_file: Path) -> None:
    model = tiny_bert_classifier(len(tok), 2, hidden_size=32, seed=0)
    # new_modules: what a load of a checkpoint without a pooler reports (adamergex train passes it)
    state = train_adapter(model, tok, "toy_cls", "en", data_files=str(cls_file), max_steps=25, lr=5e-3,
                          batch_size=8, max_length=32, adapter_options={"r": 4}, val_split="train", seed=1,
                          new_modules=["bert.pooler.dense"], base_dropout="on")
    keys = set(state.saved_modules)
    assert any("classifier" in k for k in keys) and any("pooler" in k for k in keys)
    assert state.metadata["head"] == {"policy": "trained_with_adapter", "modules": ["classifier", "bert.pooler.dense"]}
    assert state.metadata["training"]["validation"]["val/accuracy"] > 0.9
    attempt = state.metadata["training"]["attempts"][-1]
    assert attempt["checked"] and not attempt["stalled"] and attempt["final_loss"] < attempt["baseline_loss"]

    ids = tok(["good river", "bad mountain"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        trained = model(**ids).logits
        # The next load meets the same encoder but a new random pooler and classifier: the adapter brings both.
        base = tiny_bert_classifier(len(tok), 2, hidden_size=32, seed=0)
        for p in [*base.bert.pooler.parameters(), *base.classifier.parameters()]:
            p.normal_()
        assert torch.allclose(attach(base, state)(**ids).logits, trained, atol=1e-5)


def test_madx_task_adapter_trains_on_top_of_a_frozen_language_adapter(tok: Any, lm_file: Path,
                                                                      cls_file: Path) -> None:
    lang = train_adapter(llama(tok), tok, "toy_lm", "en", data_files=str(lm_file), max_steps=3, **LM)
    model = llama(tok)
    task = train_adapter(model, tok, "toy_cls", "en", data_files=str(cls_file), max_steps=3, max_length=32,
                         batch_size=4, lr=1e-2, adapter_options={"r": 4}, stack_on=[lang], stall_min_steps=1000)
    assert task.metadata["stack_on"] == [{"kind": "lora", "language": "en", "task": "toy_lm",
                                          "sha256": lang.fingerprint()}]
    assert set(task.params) == set(lang.params)
    assert not any("stack" in m for m in task.params)
    # PEFT wrapped ``model`` in place: its layers hold the frozen language adapter, unchanged, and the new one.
    q_proj = model.model.layers[0].self_attn.q_proj
    factors = lang.params["base_model.model.model.layers.0.self_attn.q_proj"]
    assert torch.equal(q_proj.lora_A["stack_0"].weight, factors["lora_A"])
    assert torch.equal(q_proj.lora_B["stack_0"].weight, factors["lora_B"])
    assert q_proj.active_adapters == ["stack_0", "default"]


def test_shared_reference_head_is_trained_once_then_frozen_and_recorded(tok: Any, lm_file: Path,
                                                                        tmp_path: Path) -> None:
    model = tiny_bert_mlm(len(tok), hidden_size=32, seed=0)
    head = train_reference_head(model, tok, "toy_lm", ["en", "fr"], data_files={"en": str(lm_file),
                                "fr": str(lm_file)}, max_steps=3, max_length=16, batch_size=4,
                                output=tmp_path / "head", stall_min_steps=1000)
    tied = model.bert.embeddings.word_embeddings.weight
    assert head.tensors and not any(torch.equal(t, tied) for t in head.tensors.values() if t.shape == tied.shape)
    loaded = ReferenceHead.load(tmp_path / "head")
    assert loaded.fingerprint() == head.fingerprint() and loaded.metadata["language"] == ["en", "fr"]

    fresh = tiny_bert_mlm(len(tok), hidden_size=32, seed=5)
    state = train_adapter(fresh, tok, "toy_lm", "fr", data_files=str(lm_file), max_steps=3, head=tmp_path / "head",
                          **LM)
    assert state.metadata["head"]["policy"] == "shared"
    assert state.metadata["head"]["sha256"] == head.fingerprint()
    params = dict(fresh.named_parameters())
    assert all(torch.equal(params[n], t) for n, t in head.tensors.items())  # unchanged by adapter training
    assert not state.saved_modules


# -- dead runs ------------------------------------------------------------------------------------------------------
def test_a_loss_that_does_not_fall_is_retried_then_reported(tok: Any, tmp_path: Path) -> None:
    rows = [{"sentence": f"{TEXTS[i // 2]}", "label": i % 2} for i in range(40)]  # same text, both labels
    data = write_jsonl(tmp_path / "noise.jsonl", rows)
    kwargs = dict(data_files=str(data), max_steps=6, lr=1e-4, batch_size=8, max_length=24, stall_min_steps=5,
                  adapter_options={"r": 2})
    with pytest.raises(TrainingStalledError, match="majority-class predictor"):
        train_adapter(tiny_bert_classifier(len(tok), 2, hidden_size=32), tok, "toy_cls", "en", on_stall="error",
                      **kwargs)
    with pytest.warns(UserWarning, match="retrying at lr=3e-05"), pytest.raises(TrainingStalledError) as err:
        train_adapter(tiny_bert_classifier(len(tok), 2, hidden_size=32), tok, "toy_cls", "en", max_retries=1,
                      **kwargs)
    assert '"lr": 3e-05' in str(err.value)
    with pytest.warns(UserWarning, match="saved anyway"):
        state = train_adapter(tiny_bert_classifier(len(tok), 2, hidden_size=32), tok, "toy_cls", "en",
                              on_stall="warn", **kwargs)
    assert state.metadata["training"]["attempts"][0]["stalled"]


# -- resume ---------------------------------------------------------------------------------------------------------
class _Interrupt(pl.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("simulated preemption")


def test_interrupted_run_resumes_to_the_same_adapter(tok: Any, lm_file: Path, tmp_path: Path) -> None:
    common = dict(data_files=str(lm_file), max_steps=8, checkpoint_every=2, grad_accum=2, warmup_steps=2, **LM)
    full = train_adapter(llama(tok), tok, "toy_lm", "en", output=tmp_path / "full", **common)
    with pytest.raises(RuntimeError, match="simulated preemption"):
        train_adapter(llama(tok), tok, "toy_lm", "en", output=tmp_path / "cut",
                      trainer_options={"callbacks": [_Interrupt(5)]}, **common)
    assert not (tmp_path / "cut" / "adapter_model.safetensors").exists()
    resumed = train_adapter(llama(tok), tok, "toy_lm", "en", output=tmp_path / "cut", resume=True, **common)
    assert resumed.metadata["training"]["attempts"][0]["resumed_from"].endswith("last.ckpt")
    for m in full.params:
        for n in full.params[m]:
            assert torch.allclose(full.params[m][n], resumed.params[m][n], atol=1e-6), (m, n)


# -- bad input ------------------------------------------------------------------------------------------------------
def test_bad_input_fails_naming_what_exists(tok: Any, lm_file: Path, tmp_path: Path) -> None:
    def run(**kw: Any) -> Any:
        args = dict(task="toy_lm", language="en", data_files=str(lm_file), max_steps=1, **LM)
        args.update(kw)
        return train_adapter(llama(tok), tok, args.pop("task"), args.pop("language"), **args)

    with pytest.raises(UnknownNameError, match="unknown task 'toy_lmm'; available: .*toy_lm"):
        run(task="toy_lmm")
    with pytest.raises(UnknownNameError, match="no language 'de'; available: en, fr"):
        run(language="de")
    with pytest.raises(UnknownNameError, match="unknown split 'dev'"):
        run(val_split="dev")
    with pytest.raises(UnknownNameError, match="unknown adapter type 'lorra'; available: .*lora"):
        run(adapter="lorra")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"body": "x"}])
    with pytest.raises(ConfigError, match=r"lacks \['text'\]"):
        run(data_files=str(bad))
    with pytest.raises(ConfigError, match="bf16-mixed"):
        run(precision="bf16-true")
    with pytest.raises(ConfigError, match="last.ckpt does not exist"):
        run(output=tmp_path / "nothing", resume=True)


# -- FSDP-style gathered state dicts ----------------------------------------------------------------------------------
def test_adapter_from_a_gathered_wrapped_state_dict_equals_the_live_one(tok: Any) -> None:
    model = tiny_bert_classifier(len(tok), 2, hidden_size=32)
    peft_model = prepare_model(model, adapter_options={"r": 4})
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    wrapped = {f"model.{k.replace('layer.0.', 'layer.0._fsdp_wrapped_module.')}": v
               for k, v in peft_model.state_dict().items()}
    gathered = _state_from_full_state_dict(peft_model, wrapped, "default")
    assert gathered.fingerprint() == state_from_peft_model(peft_model).fingerprint()


# -- public names -----------------------------------------------------------------------------------------------------
def test_public_names_stay_importable_from_adamergex_training() -> None:
    import adamergex.errors
    import adamergex.training as training

    assert [n for n in training.__all__ if not hasattr(training, n)] == []
    assert training.TrainingStalledError is adamergex.errors.TrainingStalledError
    assert issubclass(TrainingStalledError, adamergex.errors.FrameworkError)
    assert issubclass(TrainingStalledError, RuntimeError)


# -- CLI ------------------------------------------------------------------------------------------------------------
def test_cli_trains_from_yaml_with_flag_overrides(tok: Any, lm_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "model"
    llama(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    config = tmp_path / "run.yaml"
    config.write_text((ROOT / "tests/fixtures/training/train_lora.yaml").read_text()
                      .replace("MODEL_DIR", str(model_dir)).replace("DATA_FILE", str(lm_file))
                      .replace("OUTPUT_DIR", str(tmp_path / "out")))
    assert cli_train(["--config", str(config), "--print-config", "--lr", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert "lr: 0.02" in printed and "task: toy_lm" in printed and "r: 4" in printed
    assert cli_train(["--config", str(config), "--max-steps", "2", "--no-progress-bar"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["language"] == "en"
    state = load_adapter(tmp_path / "out")
    assert state.base_model == str(model_dir) and state.metadata["training"]["max_steps"] == 2
    with pytest.raises(ConfigError, match="unknown option"):
        cli_train(["--config", str(write_jsonl(tmp_path / "bad.yaml", [{"modell": "x"}]))])
    from adamergex.cli import main

    assert main(["train", "--model", str(model_dir), "--task", "toy_lm", "--language", "xx", "--output",
                 str(tmp_path / "o2")]) == 2
    assert "no language 'xx'; available: en, fr" in capsys.readouterr().err


# -- benchmark ------------------------------------------------------------------------------------------------------
def test_benchmark_cpu_preset_runs_and_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks/train_throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.main(["--device", "cpu", "--preset", "tiny", "--steps", "2", "--warmup", "1"])
    assert summary["ratio_lightning_over_plain"] > 0 and summary["paths"]["lightning"]["fused_loss"]
    assert "ratio lightning / plain =" in capsys.readouterr().out


# -- DDP --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_the_single_process_adapter(tmp_path: Path) -> None:
    script = ROOT / "tests/fixtures/training/ddp_train.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    outs = {}
    for devices in (1, 2):
        outs[devices] = tmp_path / f"ddp{devices}"
        subprocess.run([sys.executable, str(script), str(outs[devices]), str(devices)], check=True, env=env,
                       timeout=600, cwd=tmp_path)
    one, two = load_adapter(outs[1]), load_adapter(outs[2])
    assert two.metadata["training"]["world_size"] == 2 and one.metadata["training"]["world_size"] == 1
    assert one.metadata["training"]["global_batch"] == two.metadata["training"]["global_batch"] == 8
    for m in one.params:
        for n in one.params[m]:
            assert torch.allclose(one.params[m][n], two.params[m][n], atol=1e-5), (m, n)
