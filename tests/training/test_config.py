"""Training options in groups: one flat name each, validated once, every one settable from the CLI and YAML."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from adamergex.cli.train import _IMPLIED, TrainCommand, _parser, parse_train_args
from adamergex.errors import ConfigError
from adamergex.training import OptimConfig, StallConfig, TrainingConfig

REQUIRED = ["--model", "m", "--task", "t", "--language", "en", "--output", "out"]


def test_option_names_are_unique_across_groups_and_round_trip() -> None:
    names = TrainingConfig.option_names()
    fields = [f.name for group in ("adapter", "data", "optim", "trainer", "run", "stall")
              for f in dataclasses.fields(type(getattr(TrainingConfig(), group)))]
    assert len(fields) == len(set(fields)) == len(names)
    cfg = TrainingConfig.of(lr=0.02, max_steps=7, on_stall="warn", val_limit=3, adapter_name="x")
    assert (cfg.optim.lr, cfg.optim.max_steps, cfg.stall.on_stall, cfg.data.val_limit) == (0.02, 7, "warn", 3)
    assert TrainingConfig.of(**cfg.flat()) == cfg
    assert TrainingConfig.of(cfg, lr=0.5).optim == dataclasses.replace(cfg.optim, lr=0.5)


def test_every_library_option_has_a_flag() -> None:
    flags = {a.dest for a in _parser()._actions}
    missing = sorted(set(TrainingConfig.option_names()) - flags - set(_IMPLIED))
    assert missing == []
    # the implied ones are the command's own fields, in their command-line form
    assert {"data_files", "head", "stack_on", "devices", "progress_bar"} <= {f.name for f in dataclasses.fields(TrainCommand)}


def test_the_options_the_cli_lacked_are_set_from_flags_and_yaml(tmp_path: Path) -> None:
    _, cfg, _ = parse_train_args([
        *REQUIRED, "--gradient-clip", "none", "--loss-chunk-size", "64", "--val-limit", "5", "--max-retries", "1",
        "--min-loss-drop", "0.1", "--retry-lr-factor", "0.5", "--stall-min-steps", "3", "--log-every", "2",
        "--trainer-options", "deterministic=true", "--adapter-name", "lang",
    ])
    assert cfg.optim.gradient_clip is None and cfg.trainer.loss_chunk_size == 64 and cfg.data.val_limit == 5
    assert cfg.stall == StallConfig(max_retries=1, min_loss_drop=0.1, retry_lr_factor=0.5, stall_min_steps=3)
    assert cfg.trainer.log_every == 2 and cfg.trainer.trainer_options == {"deterministic": True}
    assert cfg.adapter.adapter_name == "lang"
    config = tmp_path / "run.yaml"
    config.write_text("gradient_clip: 0.5\nmax_retries: 0\ntrainer_options: {deterministic: true}\n")
    _, cfg, _ = parse_train_args([*REQUIRED, "--config", str(config), "--trainer-options", "benchmark=false"])
    assert cfg.optim.gradient_clip == 0.5 and cfg.stall.max_retries == 0
    assert cfg.trainer.trainer_options == {"deterministic": True, "benchmark": False}  # merged key by key


@pytest.mark.parametrize(("options", "message"), [
    ({"lr": 0.0}, "lr must be a positive finite number, got 0.0"),
    ({"lr": float("inf")}, "lr must be a positive finite number, got inf"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"gradient_clip": -1.0}, "gradient_clip must be a positive finite number, got -1.0"),
    ({"scheduler": "step"}, "scheduler must be linear, cosine or constant; got 'step'"),
    ({"on_stall": "ignore"}, "on_stall must be retry, error or warn; got 'ignore'"),
    ({"retry_lr_factor": 1.5}, r"retry_lr_factor must be in \(0, 1\), got 1.5"),
    ({"precision": "bf16-true"}, "would train the adapter in half precision"),
    ({"devices": 0}, "devices must be a positive number or 'auto'; got 0"),
    ({"resume": True}, "resume needs output"),
    ({"objective": "lm"}, "objective must be one of causal_lm"),
    ({"lrr": 1.0}, r"unknown training option\(s\) \['lrr'\]; available: .*lr"),
])
def test_each_option_is_validated_once_with_its_name(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainingConfig.of(**options)


def test_the_command_line_reports_the_library_s_message(capsys: pytest.CaptureFixture[str]) -> None:
    from adamergex.cli import main

    assert main(["train", *REQUIRED, "--lr", "inf"]) == 2
    assert "adamergex train: error: lr must be a positive finite number, got inf" in capsys.readouterr().err
    assert main(["train", *REQUIRED, "--gradient-clip", "x"]) == 2
    assert "--gradient-clip must be a number (float), got 'x'" in capsys.readouterr().err


def test_groups_are_frozen_values() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        OptimConfig().lr = 1.0  # type: ignore[misc]
