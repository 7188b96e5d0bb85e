"""``adamergex.diagnose``: cosines of language divergences in factor space, against dense float64 references
(adapters and dense points from ``tests/_states.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import product
from typing import Any

import pytest
import torch

from adamergex.adapter_state import AdapterState
from adamergex.diagnose import COMPARISONS, LabeledAdapter, diagnose, group_of, space_factors
from adamergex.diagnose_report import side_label, to_markdown
from adamergex.errors import ConfigError, IncompatibleAdaptersError, NumericalError
from tests._states import Dense, concat, dense, ia3, lokr, loha, lora

LAYER = "base_model.model.model.layers.{}.{}"
SMALL = {LAYER.format(0, "self_attn.q_proj"): (12, 16), LAYER.format(0, "mlp.down_proj"): (16, 20),
         LAYER.format(1, "self_attn.q_proj"): (12, 16), "base_model.model.lm_head": (10, 16)}
BIG = {LAYER.format(i, n): (48, 64) for i in range(3) for n in ("self_attn.q_proj", "self_attn.v_proj")}


def grid(make: Callable[[], AdapterState], tasks: dict[str, str], languages: list[str],
         seeds: list[str | None]) -> list[LabeledAdapter]:
    """Independent random adapters for every task (name → role), language and seed."""
    return [LabeledAdapter(make(), task=t, language=lang, seed=s, role=role, name=f"{t}-{lang}-{s}")  # type: ignore[arg-type]
            for (t, role), lang, s in product(tasks.items(), languages, seeds)]


# -- the dense reference of every number --------------------------------------------------------------------------
def dense_cosine(points: dict[tuple[str, str, str | None], Dense], comparison: dict[str, Any], component: str,
                 modules: list[str]) -> float:
    def vector(side: dict[str, Any]) -> torch.Tensor:
        def mean(lang: str, seeds: list[str | None]) -> torch.Tensor:
            return sum(torch.cat([points[side["task"], lang, s][m][component].reshape(-1) for m in modules])
                       for s in seeds) / len(seeds)
        return mean(side["language"], side["seeds"]) - mean(side["minus"], side["minus_seeds"])

    u, v = vector(comparison["a"]), vector(comparison["b"])
    return float(u @ v / (u.norm() * v.norm()))


def assert_matches_dense(adapters: list[LabeledAdapter], record: dict[str, Any], tol: float = 1e-10) -> int:
    """Every pooled and per-group cosine of ``record`` equals the dense float64 one; returns how many were checked."""
    points = {(a.task, a.language, a.seed): dense(a.state) for a in adapters}
    modules = sorted(adapters[0].state.params)
    checked = 0
    for component, part in record["components"].items():
        for c in part["comparisons"]:
            assert c["pooled"]["cosine"] == pytest.approx(dense_cosine(points, c, component, modules), abs=tol)
            for group, got in c["per_group"].items():
                members = [m for m in modules if group_of(m, record["grouping"]) == group]
                assert got == pytest.approx(dense_cosine(points, c, component, members), abs=tol)
                checked += 1
    return checked


# -- known answers ------------------------------------------------------------------------------------------------
def test_a_shared_divergence_has_cosine_one_and_independent_languages_near_zero() -> None:
    """upper_l = task_src ⊕ D_l and ref_l = ref_src ⊕ D_l with the same low-rank D_l: cosine 1 (1e-6) per layer
    and pooled. D_fr and D_de are independent, so the language null is near 0: for independent random low-rank
    updates ⟨u, v⟩ has mean 0 and standard deviation ‖u‖‖v‖/√d (d = Σ out·in over the modules compared), so
    |cos| < 5/√d (a five-sigma bound; the generator is seeded, so the test is deterministic)."""
    g = torch.Generator().manual_seed(0)
    task, ref = lora(g, BIG, rank=4), lora(g, BIG, rank=4, scale=0.5)
    d_lang = {lang: lora(g, BIG, rank=2, scale=1.5) for lang in ("fr", "de")}
    adapters = [LabeledAdapter(task, "nli", "en"), LabeledAdapter(ref, "clm", "en", role="reference")]
    for lang, d in d_lang.items():
        adapters += [LabeledAdapter(concat(task, d), "nli", lang),
                     LabeledAdapter(concat(ref, d), "clm", lang, role="reference")]
    record = diagnose(adapters, "en")
    rows = record["components"]["delta"]["comparisons"]
    signal = [r for r in rows if r["type"] == "signal"]
    assert len(signal) == 2 and all(r["pair"] == "task_vs_reference" for r in signal)
    for r in signal:
        assert abs(r["pooled"]["cosine"] - 1.0) < 1e-6
        assert record["groups"] == ["0", "1", "2"]
        assert all(abs(c - 1.0) < 1e-6 for c in r["per_group"].values())
    nulls = [r for r in rows if r["type"] == "null_language"]
    assert len(nulls) == 2
    d_total = sum(o * i for o, i in BIG.values())
    assert all(abs(r["pooled"]["cosine"]) < 5 / math.sqrt(d_total) for r in nulls)
    assert_matches_dense(adapters, record, tol=1e-9)


def test_independent_random_adapters_give_cosines_near_zero_for_every_comparison() -> None:
    """Two tasks × three languages × two seeds, all independent: every comparison type is present and every
    cosine is within the five-sigma bound 5/√d of 0 (pooled: d = Σ out·in = 18432; per layer 6144)."""
    g = torch.Generator().manual_seed(1)
    adapters = grid(lambda: lora(g, BIG), {"nli": "task", "clm": "reference"}, ["en", "fr", "de"], ["0", "1"])
    record = diagnose(adapters, "en")
    rows = record["components"]["delta"]["comparisons"]
    assert {r["type"] for r in rows} == set(COMPARISONS)
    pooled_d, layer_d = sum(o * i for o, i in BIG.values()), 2 * 48 * 64
    for r in rows:
        assert abs(r["pooled"]["cosine"]) < 5 / math.sqrt(pooled_d), r
        assert all(abs(c) < 5 / math.sqrt(layer_d) for c in r["per_group"].values()), r
    counts = {s["type"]: s["n"] for s in record["components"]["delta"]["summary"]}
    # signal: 2 targets; null_language: 2 ordered target pairs; null_seed: 6 cells × 1 seed pair × 2 divergences
    # of the other task; same_task_seeds: 2 tasks × 2 targets × 1 pair of seeds
    assert counts == {"signal": 2, "null_language": 2, "null_seed": 12, "same_task_seeds": 4}


def test_ia3_shared_divergence_in_log_space_has_cosine_one() -> None:
    """(IA)³: upper_l = task ⊙ ρ and ref_l = ref ⊙ ρ (one per-channel ratio ρ): log-space cosine 1; an
    independent ρ' for the other target gives a null near 0 (bound 5/√d, d = Σ out = 288)."""
    g = torch.Generator().manual_seed(2)
    task, ref = ia3(g, BIG), ia3(g, BIG)

    def times(x: AdapterState, rho: AdapterState) -> AdapterState:
        return x.replace(params={m: {"l": x.params[m]["l"] * rho.params[m]["l"]} for m in x.params})

    rho = {"fr": ia3(g, BIG), "de": ia3(g, BIG)}
    adapters = [LabeledAdapter(task, "nli", "en"), LabeledAdapter(ref, "clm", "en", role="reference")]
    for lang, r in rho.items():
        adapters += [LabeledAdapter(times(task, r), "nli", lang),
                     LabeledAdapter(times(ref, r), "clm", lang, role="reference")]
    record = diagnose(adapters, "en")
    rows = record["components"]["log"]["comparisons"]
    assert list(record["components"]) == ["log"]
    for r in rows:
        if r["type"] == "signal":
            assert abs(r["pooled"]["cosine"] - 1.0) < 1e-6
        else:
            assert abs(r["pooled"]["cosine"]) < 5 / math.sqrt(sum(o for o, _ in BIG.values()))
    assert_matches_dense(adapters, record, tol=1e-9)


# -- factor space equals dense float64 ------------------------------------------------------------------------------
MAKERS: dict[str, Callable[[torch.Generator], AdapterState]] = {
    "lora": lambda g: lora(g, SMALL),
    "dora": lambda g: lora(g, SMALL, kind="dora"),
    "ia3": lambda g: ia3(g, SMALL),
    "loha": lambda g: loha(g, SMALL),
    "lokr": lambda g: lokr(g, SMALL),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_factor_space_equals_a_dense_float64_computation(kind: str) -> None:
    """Every cosine (pooled, per layer, the "other" group of lm_head) of every comparison type, for each adapter
    type, equals the one from dense ΔW (log l, log m) built from the raw tensors, to 1e-10."""
    g = torch.Generator().manual_seed(3)
    adapters = grid(lambda: MAKERS[kind](g), {"nli": "task", "qa": "task", "clm": "reference"},
                    ["en", "fr", "de"], ["0", "1"])
    record = diagnose(adapters, "en")
    assert record["groups"] == ["0", "1", "other"] and record["modules_per_group"] == {"0": 2, "1": 1, "other": 1}
    expected = {"dora": ["delta", "log_magnitude"], "ia3": ["log"]}.get(kind, ["delta"])
    assert list(record["components"]) == expected
    assert record["dense_modules"] == []  # every low-rank module was computed from its factors
    pairs = {r["pair"] for r in record["components"][expected[0]]["comparisons"] if r["type"] == "signal"}
    assert pairs == {"task_vs_task", "task_vs_reference"}
    assert assert_matches_dense(adapters, record) > 100
    for a, entry in zip(adapters, record["adapters"]):
        assert entry["sha256"] == a.state.fingerprint() and entry["seed"] == a.seed


def test_lora_is_never_formed_dense_but_a_full_rank_module_is() -> None:
    """LoRA factors come back as factors (s·B, A); a module whose factors are no smaller than ΔW (rank 3 on a
    4×6 update: 3·10 ≥ 24) is computed dense, with the same numbers as the reference."""
    g = torch.Generator().manual_seed(4)
    state = lora(g, SMALL)
    m = LAYER.format(0, "self_attn.q_proj")
    b, a = space_factors(state, m)["delta"]  # type: ignore[misc]
    assert b.shape == (12, 3) and a.shape == (3, 16) and b.dtype == torch.float64
    assert torch.equal(b, state.scaling[m] * state.params[m]["lora_B"].double())
    shapes = {**SMALL, LAYER.format(1, "mlp.tiny"): (4, 6)}
    adapters = grid(lambda: lora(g, shapes), {"nli": "task", "clm": "reference"}, ["en", "fr"], [None])
    record = diagnose(adapters, "en")
    assert record["dense_modules"] == [LAYER.format(1, "mlp.tiny")]
    assert_matches_dense(adapters, record)


def test_seed_means_and_module_grouping_match_dense() -> None:
    """A cell of several seeds enters as its seed mean; ``by="module"`` gives each module its own group."""
    g = torch.Generator().manual_seed(5)
    adapters = grid(lambda: lora(g, SMALL), {"nli": "task", "clm": "reference"}, ["en", "fr"], ["0", "1", "2"])
    record = diagnose(adapters, "en", by="module")
    assert record["groups"] == sorted(SMALL, key=lambda m: (m == "base_model.model.lm_head", m))
    signal = [r for r in record["components"]["delta"]["comparisons"] if r["type"] == "signal"]
    assert len(signal) == 1 and signal[0]["a"]["seeds"] == ["0", "1", "2"]
    assert side_label(signal[0]["a"]) == "clm fr−en (seeds 0,1,2)"
    assert_matches_dense(adapters, record)


def test_a_zero_divergence_has_no_cosine() -> None:
    """An upper-bound adapter identical to task_src is a zero divergence: its cosine is None (n/a), not 0/0."""
    g = torch.Generator().manual_seed(6)
    task, ref = lora(g, SMALL), lora(g, SMALL)
    adapters = [LabeledAdapter(task, "nli", "en"), LabeledAdapter(task.replace(), "nli", "fr"),
                LabeledAdapter(ref, "clm", "en", role="reference"),
                LabeledAdapter(lora(g, SMALL), "clm", "fr", role="reference")]
    record = diagnose(adapters, "en")
    (row,) = record["components"]["delta"]["comparisons"]
    assert row["pooled"]["cosine"] is None and row["pooled"]["relative_b"] == 0.0 < row["pooled"]["relative_a"]
    assert all(c is None for c in row["per_group"].values())
    assert "| signal (task_vs_reference) | clm fr−en | nli fr−en | n/a |" in to_markdown(record)
    summary = record["components"]["delta"]["summary"][0]
    assert summary["n"] == 1 and summary["pooled"]["n"] == 0 and summary["pooled"]["mean"] is None


def test_markdown_lists_missing_baselines() -> None:
    g = torch.Generator().manual_seed(7)
    adapters = grid(lambda: lora(g, SMALL), {"nli": "task", "clm": "reference"}, ["en", "fr"], [None])
    text = to_markdown(diagnose(adapters, "en"))
    assert "| null_language | 0 | not available: needs two target languages" in text
    assert "| null_seed | 0 | not available: needs one task and language with adapters of two seeds" in text
    assert "| layer | signal (task_vs_reference) |" in text


# -- bad input ------------------------------------------------------------------------------------------------------
def _two_by_two(g: torch.Generator) -> list[LabeledAdapter]:
    return grid(lambda: lora(g, SMALL), {"nli": "task", "clm": "reference"}, ["en", "fr"], [None])


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda a, g: [x for x in a if x.task == "nli"], ConfigError,
         "at least two tasks \\(the reference counts as one\\), got 1: nli"),
        (lambda a, g: [x for x in a if x.language == "en"], ConfigError,
         "at least two languages \\(the source and a target\\), got en"),
        (lambda a, g: [x for x in a if (x.task, x.language) != ("clm", "en")], ConfigError,
         "task 'clm' has no adapter in the source language 'en' \\(--source-language\\).*it has fr"),
        (lambda a, g: a[:3] + [LabeledAdapter(ia3(g, SMALL), "clm", "fr", role="reference", name="ia3-dir")],
         IncompatibleAdaptersError, "one type; nli-en-None is 'lora', ia3-dir is 'ia3'"),
        (lambda a, g: a[:3] + [LabeledAdapter(a[3].state.replace(base_model="other"), "clm", "fr", role="reference")],
         IncompatibleAdaptersError, "one base model; nli-en-None was trained on 'tiny', .* on 'other'"),
        (lambda a, g: a + [LabeledAdapter(a[0].state, "nli", "en", name="again")], ConfigError,
         "again and nli-en-None are both task 'nli', language 'en', seed None; give each adapter"),
        (lambda a, g: a + [LabeledAdapter(a[0].state, "clm", "de", seed="1")], ConfigError,
         "task 'clm' is given both as role 'reference' and as 'task'"),
        (lambda a, g: [a[0], a[1], a[2], LabeledAdapter(a[3].state, "clm", "de", role="reference")], ConfigError,
         "one target language with adapters of two tasks .*clm: de, en; nli: en, fr"),
        (lambda a, g: a[:3] + [LabeledAdapter(lora(g, dict(list(SMALL.items())[:2])), "clm", "fr",
                                              role="reference", name="fewer")],
         IncompatibleAdaptersError, "the same modules; nli-en-None and fewer differ in"),
        (lambda a, g: a[:3] + [LabeledAdapter(lora(g, {m: (s[0] + 1, s[1]) for m, s in SMALL.items()}), "clm", "fr",
                                              role="reference", name="wider")],
         IncompatibleAdaptersError, "module base_model.model.lm_head: merge-space component 'delta' must have one shape in "
                                    "every adapter; nli-en-None has "
                                    "\\(10, 16\\), wider has \\(11, 16\\)"),
    ],
)
def test_bad_inputs_name_what_must_hold(change: Any, error: type[Exception], message: str) -> None:
    g = torch.Generator().manual_seed(8)
    with pytest.raises(error, match=message):
        diagnose(change(_two_by_two(g), g), "en")


def test_bad_options_and_labels() -> None:
    g = torch.Generator().manual_seed(9)
    with pytest.raises(ConfigError, match="by must be 'layer' or 'module', got 'head'"):
        diagnose(_two_by_two(g), "en", by="head")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="role must be one of task, reference, got 'ref'"):
        LabeledAdapter(lora(g, SMALL), "clm", "en", role="ref")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="language must be a non-empty name"):
        LabeledAdapter(lora(g, SMALL), "clm", "")
    with pytest.raises(ConfigError, match="diagnose needs adapters"):
        diagnose([], "en")
    bad = ia3(g, SMALL)
    m = next(iter(SMALL))
    bad.params[m]["l"][0] = 0.0
    with pytest.raises(NumericalError, match=f"module {m}: \\(IA\\)³ log space needs entries"):
        space_factors(bad, m)
    dora = lora(g, SMALL, kind="dora")
    dora.params[m]["magnitude"][1] = -1.0
    with pytest.raises(NumericalError, match=f"module {m}: DoRA magnitudes must be > 1e-06 to take their log"):
        space_factors(dora, m)
