"""The positive control (``benchmarks/ablations/positive_control.yaml``): AdaMergeX must close the gap it builds.

On the ``flip_tiny`` world ``lex`` is ``src`` in a sign-flipped residual frame (``adamergex.tasks.world.frame``):
the effect is there by construction, so a pipeline that cannot find it is broken. This runs the shipped config,
cut to LoRA, seed 0 and ``lex``, through the real runner (training, cache, merge, scoring).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adamergex.recipes.ablate import AdapterCache, apply_overrides, parse_config, read_rows, run_local

CONFIG = Path(__file__).resolve().parents[2] / "benchmarks" / "ablations" / "positive_control.yaml"
MARGIN = 0.10
"""Accuracy points (as a fraction) by which AdaMergeX must beat source-only on seed 0 (measured: 0.44 vs 0.22)."""


def test_adamergex_beats_source_only_on_the_positive_control_and_the_swapped_control_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(tmp_path / "cache"))
    raw = yaml.safe_load(CONFIG.read_text())
    raw["adapters"] = [a for a in raw["adapters"] if a["type"] == "lora"]
    raw = apply_overrides(raw, ["targets=[lex]", "seeds=[0]", "controls=[swapped]", "control_language={}",
                                "strategies=[{name: adamergex, params: [{t: 1.0}]}]", "baselines=[source_only]"])
    run_local(parse_config(raw), raw, tmp_path / "run", AdapterCache(tmp_path / "cache" / "adapters"),
              progress=False)
    rows = read_rows(tmp_path / "run")
    value = {cid.split("/", 3)[3]: row["value"] for cid, row in rows.items()}
    assert {r["status"] for r in rows.values()} == {"ok"}
    source_only, merged, swapped = value["source_only"], value["adamergex[t=1.0]"], value["adamergex[t=1.0]~swapped"]
    assert merged >= source_only + MARGIN, value
    assert swapped < merged - MARGIN / 2, value  # the gain is the language vector's, not any merge's
    checks = rows["lora/seed0/lex/adamergex[t=1.0]"]["reference_checks"]
    assert checks["ref_target"]["fell"] and checks["ref_target"]["val_loss_end"] < 0.5 * checks["ref_target"]["val_loss_start"]
