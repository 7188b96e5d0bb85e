"""`adamergex merge` / `adamergex strategies` end to end; bad input writes nothing to --output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adamergex.cli import main
from adamergex.io import load_adapter, save_adapter
from adamergex.cli.strategies import strategy_table
from tests._adapters import make_state

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for seed, role in enumerate(("task", "ref_source", "ref_target"), start=1):
        out[role] = save_adapter(make_state("lora", seed=seed, head=role == "task"), tmp_path / role)
    return out


def run(dirs: dict[str, Path], output: Path, *extra: str) -> int:
    return main(["merge", "--task", str(dirs["task"]), "--ref-source", str(dirs["ref_source"]),
                 "--ref-target", str(dirs["ref_target"]), "--output", str(output), *extra])


def test_merge_writes_a_peft_adapter_with_provenance(dirs: dict[str, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert run(dirs, tmp_path / "out", "--strategy", "adamergex", "--param", "t=0.5", "--rank", "4") == 0
    merged = load_adapter(tmp_path / "out")
    assert merged.metadata["merge"]["strategy"] == "adamergex"
    assert merged.metadata["merge"]["params"]["t"] == 0.5
    assert merged.metadata["merge"]["compression"]["rank"] == 4
    assert merged.params[merged.modules[0]]["lora_A"].shape[0] == 4
    assert json.loads(capsys.readouterr().out)["compression"]["rank"] == 4


def test_stack_strategy_writes_one_adapter_or_a_composition(dirs: dict[str, Path], tmp_path: Path) -> None:
    assert run(dirs, tmp_path / "single", "--strategy", "madx_stack") == 0  # LoRA: one exact PEFT adapter
    assert load_adapter(tmp_path / "single").metadata["merge"]["form"] == "single_adapter"
    assert run(dirs, tmp_path / "out", "--strategy", "madx_stack", "--param", "form=composition") == 0
    record = json.loads((tmp_path / "out" / "composition.json").read_text())
    assert record["head_from"] == "task" and record["adapters"] == ["ref_target", "task"]
    assert record["reason"] == "form='composition' was asked for"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "tie"], "unknown strategy 'tie'; available: adamergex"),
        (["--strategy", "adamergex", "--param", "tt=1"], "has no parameter 'tt'"),
        (["--strategy", "adamergex", "--param", "t=-2"], r"t must be in \[0.0, inf\], got -2.0"),
        (["--strategy", "adamergex", "--param", "t"], "--param must look like NAME=VALUE"),
        (["--strategy", "madx_stack", "--param", "form=composition", "--rank", "2"],
         "rank applies to merged LoRA adapters"),
    ],
)
def test_bad_input_fails_with_a_message_and_writes_nothing(dirs, tmp_path: Path, capsys, extra, message) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    assert run(dirs, out, *extra) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_corrupt_input_and_other_base_model_write_nothing(dirs: dict[str, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    (dirs["ref_target"] / "adapter_model.safetensors").write_bytes(b"junk")
    assert run(dirs, tmp_path / "out", "--strategy", "adamergex") == 2
    assert "ref_target adapter: " in capsys.readouterr().err
    save_adapter(make_state("lora", seed=9, base="other-llama"), dirs["ref_target"], overwrite=True)
    assert run(dirs, tmp_path / "out", "--strategy", "adamergex") == 2
    assert "'tiny-llama'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(dirs: dict[str, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("results")
    assert run(dirs, out, "--strategy", "source_only") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    assert run(dirs, out, "--strategy", "source_only", "--overwrite") == 2  # not an adamergex output: kept
    assert "is not an adamergex output (it holds keep.txt)" in capsys.readouterr().err
    assert (out / "keep.txt").exists()
    merged = tmp_path / "merged"
    assert run(dirs, merged, "--strategy", "source_only") == 0
    assert run(dirs, merged, "--strategy", "source_only", "--overwrite") == 0


def test_strategies_command_lists_roles_and_parameters(capsys) -> None:  # noqa: ANN001
    assert main(["strategies"]) == 0
    text = capsys.readouterr().out
    assert "adamergex  (merge; roles: task, ref_source, ref_target)" in text
    assert "--param t=1.0" in text


def test_readme_strategy_table_is_generated_from_the_registry() -> None:
    assert strategy_table("markdown") in README.read_text(), (
        "README's strategy table is stale: regenerate it with `adamergex strategies --format markdown`"
    )
