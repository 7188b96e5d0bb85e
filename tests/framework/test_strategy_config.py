"""Strategy configs: declared ranges are validated and become the Optuna search space."""

from __future__ import annotations

import optuna
import pytest

from adamergex.errors import ConfigError
from adamergex.registry import STRATEGIES


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_suggest_samples_inside_the_declared_ranges(name: str) -> None:
    cfg_cls = STRATEGIES.get(name).config
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        cfg = cfg_cls.suggest(trial, prefix="lora.")
        assert isinstance(cfg, cfg_cls)
        assert all(k.startswith("lora.") for k in trial.params)
        study.tell(trial, 0.0)


def test_adamergex_search_space_is_t_only() -> None:
    trial = optuna.trial.FixedTrial({"t": 0.4})
    cfg = STRATEGIES.get("adamergex").config.suggest(trial)
    assert cfg.t == 0.4 and cfg.ia3_form == "published"


def test_parameters_are_declared_with_type_default_and_range() -> None:
    params = {p["name"]: p for p in STRATEGIES.get("adamergex").config.parameters()}
    assert params["t"]["type"] == "float" and params["t"]["default"] == 1.0 and params["t"]["low"] == 0.0
    assert params["ia3_form"]["choices"] == ["published", "log"]


def test_booleans_parse_from_strings_and_reject_garbage() -> None:
    cfg_cls = STRATEGIES.get("task_arithmetic").config
    assert cfg_cls.from_params({"normalize": "true"}).normalize is True
    with pytest.raises(ConfigError, match="normalize must be a bool, got 'maybe'"):
        cfg_cls.from_params({"normalize": "maybe"}, strategy="task_arithmetic")
