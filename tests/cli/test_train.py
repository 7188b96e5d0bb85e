"""``adamergex train`` as a user meets it (issues #12, #13): dropout mode, what trains, validation at step 0,
overwrite and resume safety, one-line errors and a quiet console, on tiny models built here."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from adamergex import TASKS
from adamergex.cli import main
from adamergex.io import load_adapter
from adamergex.task import Example, Task, TaskKind
from adamergex.tiny import tiny_bert_classifier, tiny_bert_mlm, tiny_llama, train_tokenizer
from adamergex.training import train_adapter
from adamergex.training._system import trains_in_eval_base

WORDS = "river mountain cold warm bright dark quick slow green blue".split()
TEXTS = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 9)) + f" number {i}." for i in range(32)]
CLS = ["--task", "text_classification", "--task-options", "languages=[en,fr]", "labels=[neg,pos]",
       "--language", "en", "--batch-size", "4", "--max-length", "24", "--adapter-options", "r=2"]


@dataclass(frozen=True)
class ToyLm(Task):
    name: ClassVar[str] = "toy_lm"
    kind: ClassVar[TaskKind] = "language_modeling"
    required_columns: ClassVar[tuple[str, ...]] = ("text",)
    languages: tuple[str, ...] = ("en",)

    def format(self, example: Mapping[str, Any]) -> Example:
        return Example(prompt=example["text"])


@dataclass(frozen=True)
class ToyGen(Task):
    name: ClassVar[str] = "toy_gen"
    kind: ClassVar[TaskKind] = "generation"
    required_columns: ClassVar[tuple[str, ...]] = ("text",)
    languages: tuple[str, ...] = ("en",)

    def format(self, example: Mapping[str, Any]) -> Example:
        return Example(prompt=example["text"], target=" " + example["text"].split()[0])


@pytest.fixture(autouse=True)
def _setup() -> Any:
    torch.set_num_threads(1)
    with TASKS.scoped("toy_lm", ToyLm), TASKS.scoped("toy_gen", ToyGen):
        yield


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(TEXTS + ["good bad"], vocab_size=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tok: Any) -> dict[str, Path]:
    """Data files and saved models: a BERT classifier checkpoint with a pooler and one without (an encoder saved
    without its pooler, as many are), a BERT masked LM and a llama, each with its tokenizer."""
    root = tmp_path_factory.mktemp("train_cli")
    rows = [{"text": f"{'good' if i % 2 else 'bad'} {t}", "label": i % 2} for i, t in enumerate(TEXTS)]
    (root / "cls.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "lm.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n")
    out = {"cls": root / "cls.jsonl", "lm": root / "lm.jsonl"}
    with_pooler = tiny_bert_classifier(len(tok), 2, hidden_size=16, layers=1, heads=2)
    for name, model in (("bert_pooler", with_pooler), ("llama", _llama(tok)),
                        ("mlm", tiny_bert_mlm(len(tok), hidden_size=16, layers=1, heads=2))):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    from transformers import BertConfig, BertModel

    encoder = BertModel(BertConfig(**{**with_pooler.config.to_dict(), "architectures": None}),
                        add_pooling_layer=False)  # an encoder checkpoint without pooler (nor classifier)
    encoder.save_pretrained(root / "bert_nopooler")
    tok.save_pretrained(root / "bert_nopooler")
    out["bert_nopooler"] = root / "bert_nopooler"
    return out


def _llama(tok: Any) -> Any:
    return tiny_llama(len(tok), hidden_size=16, layers=1, heads=2, intermediate_size=24)


def train(*argv: str) -> int:
    return main(["train", "--no-progress-bar", *argv])


# -- #13.1 dropout mode ----------------------------------------------------------------------------------------------
class _Modes(pl.Callback):
    """Records ``{module name: training}`` of the model during the first training step."""

    def __init__(self) -> None:
        self.modes: dict[str, bool] = {}
        self.kinds: dict[str, nn.Module] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if not self.modes:
            self.modes = {n: m.training for n, m in pl_module.model.named_modules()}
            self.kinds = dict(pl_module.model.named_modules())


def _model_for(objective: str, tok: Any) -> tuple[Any, str, Path | None]:
    from transformers import T5Config, T5ForConditionalGeneration

    if objective == "causal_lm":
        return _llama(tok), "toy_lm", None
    if objective == "masked_lm":
        return tiny_bert_mlm(len(tok), hidden_size=16, layers=1, heads=2), "toy_lm", None
    if objective == "sequence_classification":
        return tiny_bert_classifier(len(tok), 2, hidden_size=16, layers=1, heads=2), "text_classification", None
    cfg = T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                   decoder_start_token_id=0, pad_token_id=0)
    return T5ForConditionalGeneration(cfg), "toy_gen", None


@pytest.mark.parametrize("objective", ["causal_lm", "masked_lm", "sequence_classification", "seq2seq_lm"])
def test_every_dropout_module_is_in_the_mode_base_dropout_asks_for(objective: str, tok: Any,
                                                                  files: dict[str, Path]) -> None:
    for setting in ("off", "on"):
        model, task, _ = _model_for(objective, tok)
        model.eval()  # as from_pretrained returns it: the mode must not depend on how the model arrived
        spy = _Modes()
        data = files["cls"] if task == "text_classification" else files["lm"]
        opts = ({"task_options": {"languages": ["en"], "labels": ["neg", "pos"]}}
                if task == "text_classification" else {})
        state = train_adapter(model, tok, task, "en", data_files=str(data), max_steps=1, batch_size=4,
                              max_length=16, adapter_options={"lora_dropout": 0.1, "r": 2}, base_dropout=setting,
                              trainer_options={"callbacks": [spy]}, stall_min_steps=100, **opts)
        assert state.metadata["training"]["base_dropout"] == setting
        dropouts = {n: m for n, m in spy.kinds.items() if isinstance(m, nn.modules.dropout._DropoutNd)}
        adapter = {n for n in dropouts if "default" in n.split(".")}
        assert adapter, sorted(dropouts)
        # llama's dropout is functional, read from its attention modules' mode (checked below); the others have
        # dropout modules of their own
        assert objective == "causal_lm" or len(dropouts) > len(adapter), sorted(dropouts)
        for name in dropouts:
            expected = setting == "on" or name in adapter
            assert spy.modes[name] is expected, (setting, name)
        if setting == "off":  # attention modules apply functional dropout by their own mode: off too
            assert all(spy.modes[n] is trains_in_eval_base(n, m, "default") for n, m in spy.kinds.items())
        else:
            assert all(spy.modes.values())


def test_base_dropout_is_recorded_and_the_eval_mode_warning_shows_only_when_unexpected(
        files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert train("--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]),
                 "--output", str(tmp_path / "off"), "--max-steps", "2") == 0
    assert "in eval mode" not in capfd.readouterr().err  # off: eval-mode modules are the point
    assert load_adapter(tmp_path / "off").metadata["training"]["base_dropout"] == "off"
    assert train("--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]),
                 "--output", str(tmp_path / "on"), "--max-steps", "2", "--base-dropout", "on") == 0
    assert load_adapter(tmp_path / "on").metadata["training"]["base_dropout"] == "on"
    assert train("--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]),
                 "--output", str(tmp_path / "x"), "--base-dropout", "sometimes") == 2
    assert "base_dropout must be off or on; got 'sometimes'" in capfd.readouterr().err


# -- #13.2 what trains -----------------------------------------------------------------------------------------------
def test_the_pooler_trains_only_where_the_checkpoint_lacks_one(files: dict[str, Path], tmp_path: Path,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    from adamergex.loading import attach

    for name, saved in (("bert_pooler", ["classifier"]), ("bert_nopooler", ["classifier", "bert.pooler.dense"])):
        out = tmp_path / name
        assert train("--model", str(files[name]), *CLS, "--data-files", str(files["cls"]), "--output", str(out),
                     "--max-steps", "2") == 0, capfd.readouterr().err
        state = load_adapter(out)
        assert sorted(state.config["modules_to_save"]) == sorted(saved)
        assert state.metadata["head"]["modules"] == saved
        # it attaches (bert.pooler beside bert.pooler.dense made attaching fail with KeyError)
        model = tiny_bert_classifier(300, 2, hidden_size=16, layers=1, heads=2)
        attach(model, state, check_base_model=False)
    err = capfd.readouterr().err
    assert "lacks bert.pooler.dense, classifier; trained and saved with the adapter" in err
    # modules_to_save honoured as given (the saved classifier stays the checkpoint's) ...
    out = tmp_path / "given"
    assert train("--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]), "--output",
                 str(out), "--max-steps", "2", "--adapter-options", "modules_to_save=[bert.pooler]") == 0
    assert load_adapter(out).config["modules_to_save"] == ["bert.pooler"]
    # ... and what the checkpoint lacks is added to it: it would be random at every load
    out = tmp_path / "given_new"
    assert train("--model", str(files["bert_nopooler"]), *CLS, "--data-files", str(files["cls"]), "--output",
                 str(out), "--max-steps", "2", "--adapter-options", "modules_to_save=[bert.pooler]") == 0
    assert sorted(load_adapter(out).config["modules_to_save"]) == ["bert.pooler", "classifier"]


class _Optimizer(pl.Callback):
    def __init__(self) -> None:
        self.groups: list[dict[str, Any]] = []
        self.clipped: list[Any] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.groups = [{"lr": g["initial_lr"], "params": [names[id(p)] for p in g["params"]]}
                       for g in trainer.optimizers[0].param_groups]

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        self.clipped.append(trainer.gradient_clip_val)


def test_head_lr_is_a_param_group_of_the_saved_modules_and_clipping_can_be_off(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def counting(params: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
        calls.append(max_norm)
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting)
    spy = _Optimizer()
    import adamergex.training._system as system

    real_fit = system._fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), spy]
        return real_fit(*args, **kwargs)

    monkeypatch.setattr("adamergex.training._train._fit", fit)
    out = tmp_path / "a"
    assert train("--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]), "--output",
                 str(out), "--max-steps", "2", "--lr", "0.01", "--head-lr", "0.001") == 0
    adapter, head = spy.groups
    assert adapter["lr"] == 0.01 and all("lora_" in n for n in adapter["params"])
    assert head["lr"] == 0.001 and head["params"] and all("modules_to_save" in n for n in head["params"])
    assert calls == [1.0, 1.0]  # the default clips at 1.0
    meta = load_adapter(out).metadata["training"]
    assert meta["head_lr"] == 0.001 and meta["gradient_clip"] == 1.0
    calls.clear()
    assert train("--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]), "--output",
                 str(tmp_path / "b"), "--max-steps", "2", "--gradient-clip", "none") == 0
    assert calls == [] and spy.clipped[-1] is None
    assert [g["lr"] for g in spy.groups] == [1e-4, 1e-4]  # head_lr defaults to lr
    assert load_adapter(tmp_path / "b").metadata["training"]["gradient_clip"] is None


# -- #13.3 validation before training --------------------------------------------------------------------------------
def test_validation_at_step_0_is_recorded_and_does_not_change_the_result(files: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    common = ["--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]), "--max-steps", "3",
              "--val-split", "train", "--base-dropout", "on", "--lr", "0.01"]
    assert train(*common, "--output", str(tmp_path / "a")) == 0
    assert train(*common, "--output", str(tmp_path / "b"), "--no-val-at-start") == 0
    a, b = load_adapter(tmp_path / "a"), load_adapter(tmp_path / "b")
    val = a.metadata["training"]["validation"]
    assert set(val["initial"]) == {"val/loss", "val/accuracy"} and val["initial"]["val/loss"] != val["val/loss"]
    assert "initial" not in b.metadata["training"]["validation"]
    assert a.fingerprint() == b.fingerprint()  # RNG states are restored after the opening validation


# -- #12.7 overwrite, #12.8 resume -----------------------------------------------------------------------------------
class _Boom(pl.Callback):
    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == 2:
            raise RuntimeError("simulated failure")


def test_a_failed_overwrite_leaves_the_old_run_and_nothing_beside_it(files: dict[str, Path], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    common = ["--model", str(files["llama"]), "--task", "toy_lm", "--language", "en", "--data-files",
              str(files["lm"]), "--output", str(out), "--max-steps", "3", "--checkpoint-every", "1",
              "--batch-size", "4", "--max-length", "16", "--adapter-options", "r=2"]
    assert train(*common) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("lightning/checkpoints/last.ckpt") in before
    import adamergex.training._train as trainmod

    real_fit = trainmod._fit
    monkeypatch.setattr(trainmod, "_fit", lambda *a, **k: real_fit(*a, **{**k, "callbacks": [*k["callbacks"],
                                                                                           _Boom()]}))
    with pytest.raises(RuntimeError, match="simulated failure"):
        train(*common, "--overwrite", "--lr", "0.5")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the old adapter and its checkpoints, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging directory left
    monkeypatch.setattr(trainmod, "_fit", real_fit)
    assert train(*common, "--overwrite", "--lr", "0.5") == 0
    assert load_adapter(out).metadata["training"]["lr"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_never_touches_inputs_or_what_adamergex_did_not_write(
        files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """#12.6 for train: an output that is, holds or lies in an input is refused, and --overwrite replaces only a
    previous adamergex training output (an adapter, a shared head, a run's lightning/ directory)."""
    data = tmp_path / "data"
    data.mkdir()
    lm = data / "lm.jsonl"
    lm.write_bytes(files["lm"].read_bytes())
    common = ["--model", str(files["llama"]), "--task", "toy_lm", "--language", "en", "--max-steps", "2",
              "--batch-size", "4", "--max-length", "16", "--adapter-options", "r=2", "--data-files", str(lm)]
    capfd.readouterr()
    for output, message in ((data, "contains the --data-files"), (files["llama"], "is the --model input"),
                            (files["llama"] / "sub", "lies inside the --model input")):
        assert train(*common, "--output", str(output), "--overwrite") == 2
        err = capfd.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert lm.read_bytes() == files["lm"].read_bytes()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("keep me")
    assert train(*common, "--output", str(notes), "--overwrite") == 2
    err = capfd.readouterr().err
    assert "is not an adamergex training output (it holds thesis.tex)" in err
    assert (notes / "thesis.tex").read_text() == "keep me"
    run = tmp_path / "run"
    assert train(*common, "--output", str(run)) == 0
    assert train(*common, "--output", str(run), "--overwrite", "--lr", "0.02") == 0  # a previous run: replaced
    assert load_adapter(run).metadata["training"]["lr"] == 0.02


def test_train_reads_the_one_data_files_syntax_and_checks_adapter_options_first(
        files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from adamergex.cli.train import parse_train_args

    base = ["--model", str(files["llama"]), "--task", "toy_lm", "--language", "en"]
    lm = str(files["lm"])
    for entries, expected in (([lm], lm), ([f"en={lm}"], lm), ([f":train={lm}"], {"train": lm}),
                              ([f"en:train={lm}"], {"train": lm}), ([f"train={lm}"], {"train": lm})):
        cmd, _, _ = parse_train_args([*base, "--output", "o", "--data-files", *entries])
        assert cmd.data_files_value == expected, entries
    capfd.readouterr()
    for option, message in (("rr=4", "did you mean r"), ("r=0", "r must be a positive integer")):
        assert train(*base, "--data-files", lm, "--output", str(tmp_path / "o"), "--adapter-options", option) == 2
        err = capfd.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_resume_refuses_a_run_that_differs_from_the_checkpoints(files: dict[str, Path], tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    common = ["--model", str(files["llama"]), "--task", "toy_lm", "--language", "en", "--data-files",
              str(files["lm"]), "--output", str(out), "--max-steps", "3", "--checkpoint-every", "1",
              "--batch-size", "4", "--max-length", "16", "--adapter-options", "r=2"]
    assert train(*common) == 0
    capfd.readouterr()
    assert train(*common, "--resume", "--lr", "0.02", "--seed", "3") == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "lr was 0.0001, now 0.02" in err and "seed was 0, now 3" in err and "--overwrite" in err
    other = tmp_path / "other.jsonl"
    other.write_text(files["lm"].read_text().replace("river", "lake"))
    assert train(*[c if c != str(files["lm"]) else str(other) for c in common], "--resume") == 2
    assert "data_fingerprint was" in capfd.readouterr().err
    # settings that may change on resume: progress, checkpointing, devices
    assert train(*common, "--resume", "--checkpoint-every", "2", "--log-every", "3") == 0
    # a checkpoint that is not weights-only is refused, saying why
    torch.save({"state_dict": {}, "x": nn.Linear(1, 1)}, out / "lightning/checkpoints/last.ckpt")
    assert train(*common, "--resume") == 2
    assert "is not a weights-only checkpoint" in capfd.readouterr().err


# -- #12.12, #12.14 one-line refusals --------------------------------------------------------------------------------
def test_bad_input_is_refused_in_one_line_before_anything_is_written(files: dict[str, Path], tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import adamergex.training._train as trainmod

    def no_data(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("data were read before the refusal")

    base = ["--model", str(files["bert_pooler"]), *CLS, "--data-files", str(files["cls"]), "--max-steps", "2"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok", "label": 0}\n{"text": "caf\xe9", "label": 1}\n')
    no_tok = tmp_path / "no_tok"
    tiny_bert_classifier(300, 2, hidden_size=16, layers=1, heads=2).save_pretrained(no_tok)
    capfd.readouterr()
    cases = {
        "use_dora=true asks for DoRA, which is its own adapter type: pass adapter 'dora' (--adapter dora)":
            [*base, "--output", str(tmp_path / "o"), "--adapter-options", "use_dora=true"],
        "lr must be a positive finite number, got inf": [*base, "--output", str(tmp_path / "o"), "--lr", "inf"],
        f"output {a_file} is a file; --output must name a directory": [*base, "--output", str(a_file)],
        f"data file '{empty}' is empty": [*base, "--output", str(tmp_path / "o"), "--data-files", str(empty)],
        f"data file '{latin}' must be UTF-8 text; byte 40 (line 2)": [*base, "--output", str(tmp_path / "o"),
                                                             "--data-files", str(latin)],
        f"model directory {no_tok} has no tokenizer: none of tokenizer.json": [
            "--model", str(no_tok), *CLS, "--data-files", str(files["cls"]), "--output", str(tmp_path / "o")],
    }
    for message, argv in cases.items():
        if "use_dora" in message or "inf" in message:
            monkeypatch.setattr(trainmod.TaskDataModule, "from_config", no_data)
        assert train(*argv) == 2, message
        err = capfd.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (message, err)
        monkeypatch.undo()
        assert not (tmp_path / "o").exists() and a_file.read_text() == "x"
    assert train(*base, "--output", str(tmp_path / "o"), "--adapter", "dora") == 0  # the way it points to


def test_a_non_finite_loss_is_not_saved_anyway(files: dict[str, Path], tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    # A base model with one NaN weight makes every loss NaN whatever the optimiser does. (A huge --lr used to be
    # the trigger, but whether it overflows to NaN or is normalised away by the final RMSNorm depends on the
    # library versions: Adam's v overflows to inf, A stops moving, and the residual stream's huge-but-finite
    # values give an all-zero hidden state and a finite loss of exactly log V.)
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan_llama"
    shutil.copytree(files["llama"], broken)
    weights = load_file(str(broken / "model.safetensors"))
    key = next(k for k in weights if k.endswith("norm.weight"))
    weights[key][0] = float("nan")
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    assert train("--model", str(broken), "--task", "toy_lm", "--language", "en", "--data-files",
                 str(files["lm"]), "--output", str(tmp_path / "o"), "--max-steps", "4", "--batch-size", "4",
                 "--max-length", "16", "--on-stall", "warn", "--stall-min-steps", "2") == 2
    err = capfd.readouterr().err
    assert "saved anyway" not in err and "the loss is not finite: nothing is saved" in err
    assert not (tmp_path / "o" / "adapter_model.safetensors").exists()


# -- #13.11 a quiet console -----------------------------------------------------------------------------------------
def test_the_console_shows_one_line_per_phase_and_a_step_bar(files: dict[str, Path], tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--model", str(files["bert_nopooler"]), *CLS, "--data-files", str(files["cls"]),
            "--max-steps", "2", "--val-split", "train"]
    assert main([*argv, "--output", str(tmp_path / "a")]) == 0
    err = capfd.readouterr().err
    for noise in ("MISSING", "UNEXPECTED", "Tip", "Epoch 0/", "v_num", "GPU available", "in eval mode",
                  "Generating", "Loading weights", "deprecated", "max_steps=2` reached"):
        assert noise not in err, (noise, err)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines[0].startswith("adamergex train: ") and "lacks bert.pooler.dense, classifier" in lines[0]
    assert any(ln.startswith("validation at step 0: accuracy ") for ln in lines)
    assert any(ln.startswith("validation at step 2: accuracy ") for ln in lines)
    assert any(ln.startswith("train: 100%") and "2/2" in ln and "loss " in ln and "lr " in ln for ln in lines)
    # shared-head training on an MLM checkpoint without its head: no "checkpoint seem corrupted"
    assert main(["train", "--model", str(files["bert_nopooler"]), "--task", "toy_lm", "--language", "en",
                 "--data-files", str(files["lm"]), "--max-steps", "1", "--objective", "masked_lm", "--train-head",
                 "--output", str(tmp_path / "head"), "--batch-size", "4", "--max-length", "16"]) == 0
    assert "corrupted" not in capfd.readouterr().err
    assert main([*argv, "--output", str(tmp_path / "b"), "--verbose"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" in err  # --verbose brings the libraries' notes back


def test_a_staging_directory_left_by_a_killed_overwrite_is_removed_by_the_next_run(
        files: dict[str, Path], tmp_path: Path) -> None:
    """#12.9 for train: --overwrite trains into a staging directory named like every adamergex temporary (host
    and PID), so one left by a process that died (SIGKILL) is removed at the next run into the same output."""
    import subprocess
    import sys

    from adamergex.io import _HOST

    out = tmp_path / "run"
    common = ["--model", str(files["llama"]), "--task", "toy_lm", "--language", "en", "--data-files",
              str(files["lm"]), "--output", str(out), "--max-steps", "2", "--batch-size", "4", "--max-length", "16",
              "--adapter-options", "r=2"]
    assert train(*common) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    stale = tmp_path / f".run.tmp-{_HOST}-{dead.pid}-abc123"
    (stale / "lightning").mkdir(parents=True)
    assert train(*common, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
