"""What commands write (issue #12): never onto their inputs, ``--overwrite`` only over adamergex's own outputs,
no temporaries left behind (SIGTERM, dead processes), modes that follow the umask, and no non-finite merge."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from adamergex.cli import main
from adamergex.io import save_adapter

from tests._adapters import make_state


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "adapters"
    return {role: save_adapter(make_state("lora", seed=seed), root / role)
            for seed, role in enumerate(("task", "ref_source", "ref_target"), start=1)}


def merge_args(dirs: dict[str, Path], output: Path | str, *extra: str, kind: str = "lora") -> list[str]:
    return ["merge", "--strategy", "adamergex", "--task", str(dirs["task"]), "--ref-source", str(dirs["ref_source"]),
            "--ref-target", str(dirs["ref_target"]), "--output", str(output), *extra]


def one_line(err: str) -> str:
    """The command's one error line (library warnings printed while building test adapters aside)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("adamergex ")]
    assert len(lines) == 1, err
    return lines[0]


# -- item 6: outputs never onto inputs -------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["is", "contains", "inside"])
def test_merge_refuses_an_output_that_is_contains_or_lies_inside_an_input(
        dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], where: str) -> None:
    output = {"is": dirs["ref_source"], "contains": dirs["task"].parent,
              "inside": dirs["task"] / "merged"}[where]
    before = {p: p.read_bytes() for d in dirs.values() for p in d.iterdir()}
    assert main(merge_args(dirs, output, "--overwrite")) == 2
    line = one_line(capsys.readouterr().err)
    assert {"is": "is the --ref-source input", "contains": "contains the --task input",
            "inside": "lies inside the --task input"}[where] in line
    assert {p: p.read_bytes() for d in dirs.values() for p in d.iterdir()} == before


def test_merge_refuses_an_input_reached_through_a_symlink(dirs: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link"
    link.symlink_to(dirs["task"])
    assert main(merge_args(dirs, link, "--overwrite")) == 2
    assert "is the --task input" in capsys.readouterr().err
    assert (dirs["task"] / "adapter_model.safetensors").exists()


def test_overwrite_replaces_only_a_previous_adamergex_output(dirs: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    (foreign / "figures").mkdir()
    assert main(merge_args(dirs, foreign, "--overwrite")) == 2
    line = one_line(capsys.readouterr().err)
    assert "is not an adamergex output (it holds figures/, thesis.tex)" in line
    assert (foreign / "thesis.tex").read_text() == "years of work"
    merged = tmp_path / "merged"
    assert main(merge_args(dirs, merged)) == 0
    assert main(merge_args(dirs, merged, "--param", "t=0.5", "--overwrite")) == 0
    assert json.loads((merged / "adamergex.json").read_text())["merge"]["params"]["t"] == 0.5


def test_evaluate_output_checks_come_before_the_run(tmp_path: Path, dirs: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "en.jsonl"
    data.write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n')
    base = ["evaluate", "--model", str(tmp_path / "no-model"), "--adapter", str(dirs["task"]), "--task", "xnli",
            "--languages", "en", "--data-files", f"en={data}"]
    assert main([*base, "--output", str(tmp_path)]) == 2  # a directory: refused before any model loads
    assert "--output " + str(tmp_path) + " is a directory; it must be a file path" in one_line(capsys.readouterr().err)
    assert main([*base, "--output", str(data), "--overwrite"]) == 2
    assert "is the --data-files en input" in capsys.readouterr().err
    assert main([*base, "--output", str(dirs["task"] / "scores.json")]) == 2
    assert "lies inside the --adapter input" in capsys.readouterr().err
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    assert main([*base, "--output", str(notes), "--overwrite"]) == 2
    assert "is not an adamergex evaluation result" in capsys.readouterr().err
    assert notes.read_text() == '{"my": "notes"}'


def test_demo_overwrite_replaces_only_demo_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}')
    assert main(["demo", "--size", "tiny", "--output", str(out), "--overwrite", "--no-progress"]) == 2
    assert "is not a previous adamergex demo output" in one_line(capsys.readouterr().err)
    assert (out / "results.json").read_text() == '{"mine": 1}'
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--size", "tiny", "--output", str(tmp_path / "file"), "--no-progress"]) == 2
    assert "is a file; it must be a directory" in capsys.readouterr().err
    # OUTPUT/run is the runner's run directory: a folder of the user's there is never replaced
    (tmp_path / "mine" / "run").mkdir(parents=True)
    (tmp_path / "mine" / "run" / "notes.txt").write_text("x")
    assert main(["demo", "--size", "tiny", "--output", str(tmp_path / "mine"), "--overwrite", "--no-progress"]) == 2
    assert "is not a demo run directory" in one_line(capsys.readouterr().err)
    assert (tmp_path / "mine" / "run" / "notes.txt").read_text() == "x"
    # an unfinished run of other options is resumed by nothing and replaced only with --overwrite
    (tmp_path / "other" / "run").mkdir(parents=True)
    (tmp_path / "other" / "run" / "run.json").write_text('{"config_hash": "0000000000000000"}')
    assert main(["demo", "--size", "tiny", "--output", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "unfinished demo run of other options" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in (tmp_path / "other" / "run").iterdir()) == ["run.json"]


# -- item 9: temporaries ---------------------------------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_write(dirs: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    from adamergex.io import _HOST

    out = tmp_path / "merged"
    stale = tmp_path / f".merged.tmp-{_HOST}-{dead_pid()}-abc123"
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    stale_json = tmp_path / f".merged.tmp-{_HOST}-{dead_pid()}-x1"
    stale_json.write_text("{")
    live = tmp_path / f".merged.tmp-{_HOST}-{os.getpid()}-def456"  # a live writer's: kept
    live.mkdir()
    assert main(merge_args(dirs, out)) == 0
    assert not stale.exists() and not stale_json.exists() and live.exists()
    assert (out / "adapter_model.safetensors").exists()


SLOW_SAVE = """
import sys, time, pathlib, safetensors.torch as st
real = st.save_file
def slow(tensors, filename, metadata=None):
    real(tensors, filename, metadata=metadata)
    pathlib.Path(sys.argv[1]).write_text("saving")
    time.sleep(60)
st.save_file = slow
from adamergex.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_during_a_save_leaves_no_temporary(dirs: dict[str, Path], tmp_path: Path) -> None:
    flag, out = tmp_path / "flag", tmp_path / "merged"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(flag), *merge_args(dirs, out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not flag.exists():
        assert time.time() < deadline and proc.poll() is None, "the merge never reached its save"
        time.sleep(0.05)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".merged.tmp-")]  # the save is in flight
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # still dies of SIGTERM, as schedulers expect
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")] and not out.exists()


# -- item 10: modes follow the umask ------------------------------------------------------------------------------
@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_outputs_follow_the_umask(dirs: dict[str, Path], tmp_path: Path, umask: int, dir_mode: int,
                                  file_mode: int) -> None:
    from adamergex.io import write_json_atomic

    old = os.umask(umask)
    try:
        assert main(merge_args(dirs, tmp_path / "merged")) == 0
        write_json_atomic(tmp_path / "best.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "merged").stat().st_mode) == dir_mode
    for p in [*(tmp_path / "merged").iterdir(), tmp_path / "best.json"]:
        assert stat.S_IMODE(p.stat().st_mode) == file_mode, p


# -- item 14: a file system that refuses the write ---------------------------------------------------------------
def test_a_read_only_or_full_file_system_is_one_line_naming_the_path(
        dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import safetensors.torch

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "merged"
    assert main(merge_args(dirs, out)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot write {out}: No space left on device" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]

    def read_only(*_: Any, **__: Any) -> str:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    assert main(merge_args(dirs, out)) == 2
    assert f"cannot write {out}: Read-only file system" in one_line(capsys.readouterr().err)


def test_merge_output_that_is_a_file_is_refused_up_front(dirs: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out.txt").write_text("x")
    assert main(merge_args(dirs, tmp_path / "out.txt", "--overwrite")) == 2
    assert "--output " + str(tmp_path / "out.txt") + " is a file; it must be a directory" in one_line(
        capsys.readouterr().err)
    assert (tmp_path / "out.txt").read_text() == "x"


# -- item 11: merge outputs are finite ----------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "strategy", "extra"), [
    ("lora", "adamergex", []),
    ("lora", "adamergex", ["--rank", "4"]),
    ("ia3", "adamergex", ["--param", "ia3_form=log"]),
    ("lora", "task_arithmetic", []),
])
def test_a_merge_that_overflows_is_refused_naming_module_and_tensor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, strategy: str, extra: list[str]) -> None:
    d = {role: save_adapter(make_state(kind, seed=seed), tmp_path / role)
         for seed, role in enumerate(("task", "ref_source", "ref_target"), start=1)}
    out = tmp_path / "merged"
    argv = merge_args(d, out, "--param", "t=1e39", *extra)
    argv[argv.index("adamergex")] = strategy
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    line = one_line(err)
    assert f"the merge output of strategy {strategy!r}" in line and "t=1e+39" in line
    assert "must be finite" in line and "tensor " in line and ":" in line.split("tensor ", 1)[1]
    assert not out.exists()


# -- item 13: a LoRA config that disagrees with its tensors ------------------------------------------------------
@pytest.mark.parametrize("pattern", [False, True])
def test_a_lora_config_whose_rank_disagrees_with_its_tensors_is_refused(
        dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], pattern: bool) -> None:
    cfg_path = dirs["ref_target"] / "adapter_config.json"
    config = json.loads(cfg_path.read_text())
    if pattern:  # r agrees, but rank_pattern names another rank for one module
        config["rank_pattern"] = {"q_proj": 8}
    else:
        config["r"] = 8
    cfg_path.write_text(json.dumps(config))
    assert main(merge_args(dirs, tmp_path / "merged")) == 2
    line = one_line(capsys.readouterr().err)
    assert "has rank 4 in its tensors" in line and ("rank_pattern says 8" if pattern else "r says 8") in line
    assert not (tmp_path / "merged").exists()
