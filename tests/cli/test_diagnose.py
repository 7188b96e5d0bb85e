"""`adamergex diagnose` end to end on adapters saved with ``save_adapter``; bad input writes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adamergex.cli import main
from adamergex.io import load_adapter, save_adapter
from tests._states import concat, ia3, lora

SHAPES = {f"base_model.model.model.layers.{i}.self_attn.{n}": (24, 32) for i in range(2) for n in ("q_proj", "v_proj")}
LANGS = ("en", "fr", "de")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """nli and the reference corpus in en, fr, de with one low-rank divergence per target shared by both:
    ``X_l = X_en ⊕ D_l`` (so the signal is 1 and the language null near 0); plus an (IA)³ and an other-base one."""
    root = tmp_path_factory.mktemp("adapters")
    g = torch.Generator().manual_seed(0)
    base = {"nli": lora(g, SHAPES, rank=4, scale=2.0), "clm": lora(g, SHAPES, rank=4, scale=2.0)}
    shift = {lang: lora(g, SHAPES, rank=2, scale=2.0) for lang in LANGS[1:]}
    out = {}
    for task, state in base.items():
        for lang in LANGS:
            adapter = state if lang == "en" else concat(state, shift[lang])
            out[f"{task}_{lang}"] = save_adapter(adapter, root / f"{task}_{lang}")
    out["ia3_fr"] = save_adapter(ia3(g, SHAPES), root / "ia3_fr")
    out["other_base_fr"] = save_adapter(base["clm"].replace(base_model="other"), root / "other_base_fr")
    return out


def flags(saved: dict[str, Path], *names: str) -> list[str]:
    args = []
    for name in names:
        task, lang = name.split("_")[0], name.split("_")[-1]
        role = "task" if task == "nli" else "reference"
        args += ["--adapter", f"{role}:{'clm' if role == 'reference' else task}:{lang}={saved[name]}"]
    return args


ALL = [f"{t}_{lang}" for t in ("nli", "clm") for lang in LANGS]


def test_diagnose_writes_json_markdown_and_plot(saved: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diag"
    assert main(["diagnose", *flags(saved, *ALL), "--source-language", "en", "--output", str(out)]) == 0
    record = json.loads((out / "diagnose.json").read_text())
    rows = record["components"]["delta"]["comparisons"]
    signal = [r for r in rows if r["type"] == "signal"]
    assert len(signal) == 2 and all(abs(r["pooled"]["cosine"] - 1.0) < 1e-6 for r in signal)
    assert all(abs(c - 1.0) < 1e-6 for r in signal for c in r["per_group"].values())
    # D_fr and D_de are independent: 5/sqrt(d) with d = 4 modules · 24 · 32
    assert all(abs(r["pooled"]["cosine"]) < 5 / (4 * 24 * 32) ** 0.5 for r in rows if r["type"] == "null_language")
    assert record["groups"] == ["0", "1"] and record["source_language"] == "en"
    by_name = {a["name"]: a for a in record["adapters"]}
    assert by_name[str(saved["nli_fr"])]["sha256"] == load_adapter(saved["nli_fr"]).fingerprint()
    assert by_name[str(saved["clm_en"])]["role"] == "reference"
    text = (out / "diagnose.md").read_text()
    assert "| signal (task_vs_reference) | 2 | 1.000 | 0.000 | 1.000 | 1.000 |" in text
    assert "| null_seed | 0 | not available: needs one task and language with adapters of two seeds" in text
    assert (out / "diagnose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr()
    assert "delta signal (task_vs_reference): pooled cosine 1.000 [1.000, 1.000], n=2" in printed.out
    assert "wrote " in printed.err
    assert sorted(p.name for p in out.iterdir()) == ["diagnose.json", "diagnose.md", "diagnose.png"]


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_manifest_gives_the_same_numbers(saved: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    """Manifest paths are relative to the manifest; YAML and JSON both read; seeds are kept as given."""
    manifest = tmp_path / "sub" / f"m.{suffix}"
    manifest.parent.mkdir()
    entries = []
    for name in ALL:
        task = name.split("_")[0]
        entry = {"task": task, "language": name.split("_")[1], "path": os.path.relpath(saved[name], manifest.parent)}
        if task == "clm":
            entry["role"] = "reference"
        else:
            entry["seed"] = 7
        entries.append(entry)
    if suffix == "json":
        manifest.write_text(json.dumps({"adapters": entries}))
    else:
        import yaml

        manifest.write_text(yaml.safe_dump({"adapters": entries}))
    out = tmp_path / "diag"
    assert main(["diagnose", "--manifest", str(manifest), "--source-language", "en", "--output", str(out)]) == 0
    record = json.loads((out / "diagnose.json").read_text())
    signal = [r for r in record["components"]["delta"]["comparisons"] if r["type"] == "signal"]
    assert all(abs(r["pooled"]["cosine"] - 1.0) < 1e-6 for r in signal)
    assert {a["seed"] for a in record["adapters"] if a["task"] == "nli"} == {"7"}
    assert record["adapters"][0]["name"].startswith("../")


@pytest.mark.parametrize(
    ("names", "extra", "message"),
    [
        ([], ["--adapter", "task:nli=somewhere"], r"--adapter must look like ROLE:TASK:LANG\[:SEED\]=DIR"),
        ([], ["--adapter", "ref:clm:en=somewhere"], "role must be one of task, reference, got 'ref'"),
        ([], [], "diagnose needs adapters: give --adapter ROLE:TASK:LANG"),
        (["nli_en", "nli_fr"], [], r"at least two tasks \(the reference counts as one\), got 1: nli"),
        (["nli_en", "clm_en"], [], r"at least two languages \(the source and a target\), got en"),
        (["nli_en", "nli_fr", "clm_fr"], [], r"task 'clm' has no adapter in the source language 'en' "
                                              r"\(--source-language\)"),
        (["nli_en", "nli_fr", "clm_en"], ["--adapter"], "one type; .*'lora', .*ia3_fr is 'ia3'"),
        (["nli_en", "nli_fr", "clm_en", "other_base_fr"], [], "one base model; .*'tiny', .* on 'other'"),
        (["nli_en", "nli_fr", "clm_en"], ["--adapter", "reference:clm:fr=/nonexistent/dir"],
         "adapter directory /nonexistent/dir does not exist"),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(saved: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], names: list[str],
                                                          extra: list[str], message: str) -> None:
    if extra == ["--adapter"]:
        extra = ["--adapter", f"reference:clm:fr={saved['ia3_fr']}"]
    args = flags(saved, *names)
    if names and names[-1] == "other_base_fr":
        args[-1] = f"reference:clm:fr={saved['other_base_fr']}"
    out = tmp_path / "diag"
    assert main(["diagnose", *args, *extra, "--source-language", "en", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.startswith("adamergex diagnose: error: ") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a\n- b\n", "must hold a mapping with a non-empty list under 'adapters', got list"),
        ("adapters: []\n", r"must hold a mapping with a non-empty list under 'adapters', got \['adapters'\]"),
        ("adapters: [x]\n", r"adapters\[0\] must be a mapping with keys role, task, language, seed, path"),
        ("adapters: [{task: nli, language: en}]\n", r"adapters\[0\] must have task, language and path .*"
                                                    r"missing \['path'\], unknown \[\]"),
        ("adapters: [{task: nli, language: en, path: x, lang: fr}]\n", r"unknown \['lang'\]"),
        ("adapters: [{task: nli\n", "must be a readable YAML or JSON file"),
    ],
)
def test_bad_manifests_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                 message: str) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(content)
    assert main(["diagnose", "--manifest", str(manifest), "--source-language", "en",
                 "--output", str(tmp_path / "diag")]) == 2
    err = capsys.readouterr().err
    assert f"--manifest {manifest}" in err and re.search(message, err), err


def test_existing_output_needs_overwrite(saved: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diag"
    out.mkdir()
    (out / "diagnose.md").write_text("old")
    (out / "notes.txt").write_text("kept")
    args = ["diagnose", *flags(saved, "nli_en", "nli_fr", "clm_en", "clm_fr"), "--source-language", "en",
            "--output", str(out)]
    assert main(args) == 2
    assert f"output {out / 'diagnose.md'} already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "diagnose.md").read_text() == "old" and not (out / "diagnose.json").exists()
    assert main([*args, "--overwrite"]) == 0
    assert (out / "diagnose.md").read_text().startswith("# Language divergences")
    assert (out / "notes.txt").read_text() == "kept"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_diagnose_needs_no_peft_or_transformers(saved: dict[str, Path], tmp_path: Path) -> None:
    """The command reads PEFT directories and computes without importing PEFT or transformers."""
    script = ("import sys\nfrom adamergex.cli import main\n"
              f"code = main({['diagnose', *flags(saved, 'nli_en', 'nli_fr', 'clm_en', 'clm_fr'), '--source-language', 'en', '--output', str(tmp_path / 'd')]!r})\n"
              "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'peft', 'transformers', 'lightning'}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
