"""Negative controls and reference checks of ``adamergex ablate`` / ``report``; padding adapters to one module set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from adamergex.adapter_state import AdapterState
from adamergex.errors import ConfigError, IncompatibleAdaptersError, UnknownNameError
from adamergex.module_union import pad_to_union
from adamergex.recipes._checks import reference_check
from adamergex.recipes.ablate import AdapterCache, apply_overrides, cells, parse_config, read_rows, run_local, write_report
from adamergex.recipes.ablate._report import reference_flags

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "benchmarks" / "ablations" / "world.yaml"
TINY = [
    "model.world=tiny", "targets=[lex, sov]", "seeds=[0]",
    "task.options={difficulty: simple, train_size: 96, validation_size: 30, test_size: 30}",
    "reference.options={train_size: 40, validation_size: 10, test_size: 10, chunk_length: 64}",
    "adapters=[{type: lora, options: {r: 4, target_modules: [q_proj, v_proj]}, task: {max_steps: 12, lr: 3.0e-3, "
    "batch_size: 8}, reference: {max_steps: 6, lr: 3.0e-3, batch_size: 4, on_stall: warn, val_split: validation, "
    "val_at_start: true}}]",
    "strategies=[{name: adamergex, params: [{t: 1.0}]}]",
    "controls=[wrong_language, swapped, source_both]",
    "evaluation.batch_size=32",
]


def _raw(overrides: list[str]) -> dict[str, Any]:
    return apply_overrides(yaml.safe_load(WORLD.read_text()), overrides)


def test_control_cells_replace_the_reference_roles() -> None:
    cfg = parse_config(_raw(TINY))
    by_id = {c.id: c for c in cells(cfg)}
    roles = lambda cid: {r: j.name for r, j in by_id[cid].roles("src").items()}  # noqa: E731
    plain = roles("lora/seed0/lex/adamergex[t=1.0]")
    assert plain["ref_target"] == "lora/seed0/reference/lex" and plain["ref_source"] == "lora/seed0/reference/src"
    assert roles("lora/seed0/lex/adamergex[t=1.0]~wrong_language")["ref_target"] == "lora/seed0/reference/sov"
    assert roles("lora/seed0/sov/adamergex[t=1.0]~wrong_language")["ref_target"] == "lora/seed0/reference/lex"
    swapped = roles("lora/seed0/lex/adamergex[t=1.0]~swapped")
    assert (swapped["ref_source"], swapped["ref_target"]) == (plain["ref_target"], plain["ref_source"])
    assert roles("lora/seed0/lex/adamergex[t=1.0]~source_both")["ref_target"] == plain["ref_source"]
    assert roles("lora/seed0/lex/source_only~wrong_language")["task"] == roles("lora/seed0/lex/source_only")["task"]
    labels = [c.label for c in cells(cfg) if c.target == "lex"]  # each control right after its setting
    assert labels[labels.index("adamergex[t=1.0]") + 1] == "adamergex[t=1.0]~wrong_language"


@pytest.mark.parametrize("overrides, key, error", [
    (["controls=[wrong_lang]"], "controls: unknown control 'wrong_lang'; available: wrong_language", UnknownNameError),
    (["controls=[swapped, swapped]"], "controls: must name each control once", ConfigError),
    (["targets=[lex]", "controls=[wrong_language]"], "control_language: the wrong_language control needs", ConfigError),
    (["control_language={morph: sov}"], "control_language.morph: 'morph' is not one of the targets", ConfigError),
    (["control_language={lex: lex}"], "control_language.lex: the wrong language must differ", ConfigError),
    (["adapters[0].reference_options={target_modules: [embed_tokens]}"], "adapters[0].pad_modules: reference_options",
     ConfigError),
    (["adapters[0].reference.val_split=null"], "adapters[0].reference.val_at_start: needs val_split", ConfigError),
])
def test_bad_controls_name_the_key(overrides: list[str], key: str, error: type) -> None:
    with pytest.raises(error) as exc:
        parse_config(_raw(TINY + overrides))
    assert str(exc.value).startswith(key), str(exc.value)


def test_single_target_with_a_named_control_language() -> None:
    cfg = parse_config(_raw(TINY + ["targets=[lex]", "control_language={lex: morph}", "controls=[wrong_language]"]))
    assert cfg.wrong_language("lex") == "morph"


def test_tiny_grid_with_controls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAMERGEX_CACHE", str(tmp_path / "cache"))
    raw = _raw(TINY)
    run_local(parse_config(raw), raw, tmp_path / "run", AdapterCache(tmp_path / "cache" / "adapters"), progress=False)
    rows = read_rows(tmp_path / "run")
    for target in ("lex", "sov"):
        base = rows[f"lora/seed0/{target}/source_only"]
        for control in ("wrong_language", "swapped", "source_both"):
            r = rows[f"lora/seed0/{target}/source_only~{control}"]
            assert r["control"] == control
            assert (r["value"], r["items"], r["adapters"]["task"]) == (base["value"], base["items"],
                                                                      base["adapters"]["task"])
        wrong = rows[f"lora/seed0/{target}/adamergex[t=1.0]~wrong_language"]
        assert wrong["adapters"]["ref_target"] == rows[f"lora/seed0/{'sov' if target == 'lex' else 'lex'}/"
                                                       "adamergex[t=1.0]"]["adapters"]["ref_target"]
        checks = rows[f"lora/seed0/{target}/adamergex[t=1.0]"]["reference_checks"]
        assert set(checks) == {"ref_source", "ref_target"}
        assert all(isinstance(c["val_loss_start"], float) and isinstance(c["fell"], bool) for c in checks.values())
    t = write_report(tmp_path / "run")
    c = [x for x in t["controls"] if x["strategy"] == "source_only" and x["target"] == "pooled"]
    assert {x["control"] for x in c} == {"wrong_language", "swapped", "source_both"}
    assert all((x["diff"], x["low"], x["high"]) == (0.0, 0.0, 0.0) for x in c)
    text = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "against its negative control" in text and "source_only~wrong_language" in text
    assert "## Reference adapters" in text


def test_reference_check_and_flags() -> None:
    def state(start: float | None, end: float | None, curve: list[float] | None = None) -> AdapterState:
        training: dict[str, Any] = {"validation": {} if end is None else {"val/loss": end}}
        if start is not None:
            training["validation"]["initial"] = {"val/loss": start}
        if curve:
            training["validation"]["curve"] = [{"step": 10 * i, "loss": v} for i, v in enumerate(curve)]
        return AdapterState("lora", "m", {}, {}, metadata={"training": training})

    assert reference_check(state(2.0, 1.5)) == {"val_loss_start": 2.0, "val_loss_end": 1.5, "fell": True,
                                                "converged": None, "curve": []}
    # converged: the last interval moved the loss by <= 10% of its whole fall (0.05 of 1.0 here; 0.3 is not)
    assert reference_check(state(2.0, 1.0, [2.0, 1.2, 1.05, 1.0]))["converged"] is True
    assert reference_check(state(2.0, 1.0, [2.0, 1.6, 1.3, 1.0]))["converged"] is False
    assert reference_check(state(2.0, 1.0, [2.0, 1.6, 1.3, 1.0]))["curve"][-1] == {"step": 30, "loss": 1.0}
    assert reference_check(state(1.0, 1.2, [1.0, 1.1, 1.2]))["converged"] is None
    assert reference_check(state(1.5, 1.5))["fell"] is False
    assert reference_check(state(None, 1.5))["fell"] is None
    row = lambda key, fell: {"adapter_type": "lora", "seed": 0, "target": "lex", "adapters": {"ref_target": key},  # noqa: E731
                             "reference_checks": {"ref_target": {"val_loss_start": 1.0, "val_loss_end": 1.0,
                                                                 "fell": fell}}}
    flags = reference_flags([row("a", True), row("b", False), row("b", False), row("c", None)])
    assert [f["adapter"] for f in flags] == ["b", "c"] and flags[0]["language"] == "lex"
    still_falling = row("d", True)
    still_falling["reference_checks"]["ref_target"]["converged"] = False
    assert [f["adapter"] for f in reference_flags([row("a", True), still_falling])] == ["d"]


# -- padding to one module set ---------------------------------------------------------------------------------------
def _lora(modules: dict[str, tuple[int, int, int]], embed: bool = False) -> AdapterState:
    g = torch.Generator().manual_seed(len(modules))
    params = {}
    for m, (r, i, o) in modules.items():
        names = ("lora_embedding_A", "lora_embedding_B") if embed and "embed" in m else ("lora_A", "lora_B")
        params[m] = {names[0]: torch.randn(r, i, generator=g), names[1]: torch.randn(o, r, generator=g)}
    return AdapterState("lora", "m", params, {"r": 2, "lora_alpha": 2, "target_modules": sorted(
        m.rsplit(".", 1)[-1] for m in modules)}, scaling={m: 1.0 for m in modules})


def test_pad_to_union_adds_zero_delta_modules_and_their_targets() -> None:
    from adamergex.registry import ADAPTERS

    task = _lora({"model.layers.0.q_proj": (2, 4, 4)})
    ref = _lora({"model.embed_tokens": (3, 10, 4)}, embed=True)
    out = pad_to_union({"task": task, "ref": ref})
    assert set(out["task"].params) == set(out["ref"].params) == {"model.layers.0.q_proj", "model.embed_tokens"}
    lora = ADAPTERS.get("lora")
    assert torch.count_nonzero(lora.delta(out["task"], "model.embed_tokens")) == 0
    assert torch.count_nonzero(lora.delta(out["ref"], "model.layers.0.q_proj")) == 0
    assert torch.equal(lora.delta(out["task"], "model.layers.0.q_proj"), lora.delta(task, "model.layers.0.q_proj"))
    assert set(out["task"].params["model.embed_tokens"]) == {"lora_embedding_A", "lora_embedding_B"}
    assert out["task"].config["target_modules"] == ["q_proj", "embed_tokens"]
    assert out["task"].metadata["padded_modules"] == ["model.embed_tokens"]
    same = pad_to_union({"a": task, "b": task})
    assert same["a"] is task


def test_pad_to_union_refuses_mixed_or_unknown_types() -> None:
    task = _lora({"q": (2, 4, 4)})
    with pytest.raises(IncompatibleAdaptersError, match="one type"):
        pad_to_union({"a": task, "b": task.replace(kind="ia3")})
    with pytest.raises(IncompatibleAdaptersError, match="not 'loha'"):
        pad_to_union({"a": task.replace(kind="loha"), "b": _lora({"k": (2, 4, 4)}).replace(kind="loha")})
