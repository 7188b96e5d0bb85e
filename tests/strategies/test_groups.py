"""Per-layer-group parameters: grammar, equal groups = one value bit for bit, module-wise application, errors,
and the tuner's search space."""

from __future__ import annotations

import optuna
import pytest
import torch

from adamergex.errors import ConfigError
from adamergex.groups import matches, resolve
from adamergex.registry import ADAPTERS, STRATEGIES
from adamergex.tuning import tune
from tests.strategies.test_contract import same_tensors

GROUPED = {"adamergex": "t", "task_arithmetic": "t", "ties": "t", "dare": "t", "dare_ties": "t",
           "structure_adaptive": "ref_target_weight"}
Q0 = "base_model.model.model.layers.0.self_attn.q_proj"


def test_grammar_matches_layers_kinds_and_both() -> None:
    assert matches("0", Q0) and matches("0-3", Q0) and not matches("1-3", Q0)
    assert matches("attn", Q0) and not matches("mlp", Q0) and matches("q_proj", Q0)
    assert matches("0:attn", Q0) and not matches("0:mlp", Q0) and not matches("1:attn", Q0)
    assert matches("2", "roberta.encoder.layer.2.attention.self.query") and matches("attn", "x.layer.2.query")
    assert not matches("0", "base_model.model.lm_head")


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_equal_groups_give_the_single_value_merge_bit_for_bit(name: str, trio: dict) -> None:
    p, strat = GROUPED[name], STRATEGIES.get(name)
    extra = {"density": 0.5} if "density" in strat.config.__dataclass_fields__ else {}  # pruning on
    single = strat(trio, {p: 0.6, **extra})
    for groups in ({f"{p}@0": "0.6", f"{p}@1": "0.6"}, {f"{p}@attn": "0.6", f"{p}@mlp": "0.6"}):
        assert same_tensors(strat(trio, {**groups, **extra}), single)


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_zero_in_every_group_is_the_task_adapter(name: str, trio: dict) -> None:
    strat = STRATEGIES.get(name)
    params = {"t@0": 0.0, "t@1": 0.0} if GROUPED[name] == "t" else \
        {"ref_target_weight@0-1": 0.0, "ref_source_weight@0-1": 0.0}
    assert same_tensors(strat(trio, params), trio["task"])


@pytest.mark.parametrize("name", ["adamergex", "ties", "dare"])
def test_each_module_gets_its_groups_value_and_others_the_plain_one(name: str, trio: dict) -> None:
    strat = STRATEGIES.get(name)
    out = strat(trio, {"t": 0.5, "t@mlp": 0.9, "t@1:v_proj": 0.2})
    refs = {t: strat(trio, {"t": t}) for t in (0.5, 0.9, 0.2)}
    typ = ADAPTERS.get(out.kind)
    for m in trio["task"].modules:
        want = 0.9 if m.endswith("down_proj") else 0.2 if ".layers.1." in m and m.endswith("v_proj") else 0.5
        got, ref = typ.to_space(out)[m], typ.to_space(refs[want])[m]
        assert all(torch.allclose(got[c], ref[c], atol=1e-6) for c in got), m
    assert not same_tensors(out, refs[0.5])


def test_resolve_defaults_and_errors() -> None:
    mods = [Q0, Q0.replace("q_proj", "v_proj"), "base_model.model.model.layers.1.mlp.down_proj"]
    assert resolve(0.3, mods) == dict.fromkeys(mods, 0.3)
    assert resolve({"*": 1.0, "mlp": 0.2}, mods) == {mods[0]: 1.0, mods[1]: 1.0, mods[2]: 0.2}
    with pytest.raises(ConfigError, match=f"groups t@0 and t@attn overlap: both contain module {Q0}"):
        resolve({"*": 1.0, "0": 0.1, "attn": 0.2}, mods)
    with pytest.raises(ConfigError, match=r"group\(s\) t@5-7, t@gate_proj match no adapted module"):
        resolve({"*": 1.0, "5-7": 0.1, "gate_proj": 0.2, "1": 0.3}, mods)


@pytest.mark.parametrize(("params", "message"), [
    ({"t@7": "0.5"}, r"group\(s\) t@7 match no adapted module"),
    ({"t@0": "0.5", "t@q_proj": "0.5"}, "groups t@0 and t@q_proj overlap: both contain module .*layers.0.*q_proj"),
    ({"t@3-1": "0.5"}, r"AdaMergeXConfig.t@3-1: group '3-1': a layer range N-M needs N <= M, got 3 > 1"),
    ({"t@q-proj": "0.5"}, r"group 'q-proj' must be layers \(3, 0-7\), a module kind"),
    ({"t@0": "-1"}, r"AdaMergeXConfig.t@0 must be in \[0.0, inf\], got -1.0"),
    ({"t@0": "abc"}, "adamergex.t@0 must be a float, got 'abc'"),
    ({"epsilon@0": "0.1"}, "parameter 'epsilon' takes no groups .*; parameters with groups: t"),
])
def test_bad_groups_are_refused_with_a_message(params: dict, message: str, trio: dict) -> None:
    with pytest.raises(ConfigError, match=message):
        STRATEGIES.get("adamergex")(trio, params)


def test_grouped_values_are_declared_recorded_and_tuned(trio: dict) -> None:
    cfg_cls = STRATEGIES.get("ties").config
    assert {p["name"]: p["groups"] for p in cfg_cls.parameters()}["t"] is True
    cfg = cfg_cls.from_params({"t@0": "0.2", "t": "0.4"})
    assert cfg.t == {"*": 0.4, "0": 0.2} and cfg.to_dict()["t"] == {"*": 0.4, "0": 0.2}
    trial = optuna.trial.FixedTrial({"t@0": 0.3, "t@1": 0.7, "density": 0.5, "lambda_": 1.0})
    cfg = cfg_cls.suggest(trial, groups={"t": ["0", "1"]})
    assert cfg.t == {"*": 1.0, "0": 0.3, "1": 0.7} and cfg.density == 0.5
    with pytest.raises(ConfigError, match="cannot search 'density' per group; parameters with groups: t"):
        cfg_cls.suggest(trial, groups={"density": ["0"]})
    result = tune("adamergex", trio, lambda merged, trial: 0.0, n_trials=3, groups={"t": ["0", "1"]})
    assert sorted(result.best_params) == ["t@0", "t@1"]
