"""Adapter options checked before any model loads (:meth:`AdapterType.check_options`): one line naming the
option, for every registered adapter type."""

from __future__ import annotations

import pytest
from adamergex.errors import ConfigError
from adamergex.registry import ADAPTERS

KINDS = sorted(ADAPTERS)
LOW_RANK = [k for k in KINDS if "r" in ADAPTERS.get(k).positive_options]


def test_the_low_rank_types_declare_r() -> None:
    assert set(LOW_RANK) == {"dora", "loha", "lokr", "lora"}


@pytest.mark.parametrize("kind", KINDS)
def test_valid_options_pass(kind: str) -> None:
    options = {"target_modules": ["query", "value"]}
    if kind in LOW_RANK:
        options["r"] = 4
    ADAPTERS.get(kind).check_options(options)
    ADAPTERS.get(kind).check_options({})


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_option_is_named_with_close_names(kind: str) -> None:
    bad, close = ("rr", "r") if kind in LOW_RANK else ("target_module", "target_modules")
    with pytest.raises(ConfigError, match=rf"^adapter option '{bad}' is not one that '{kind}' adapters take; "
                                          rf"did you mean [^?]*\b{close}\b"):
        ADAPTERS.get(kind).check_options({bad: 4})


@pytest.mark.parametrize("kind", LOW_RANK)
@pytest.mark.parametrize("value", [0, -1, 2.5, True, "8"])
def test_r_must_be_a_positive_integer_though_peft_accepts_zero(kind: str, value: object) -> None:
    from peft import LoraConfig

    LoraConfig(r=0)  # PEFT's config takes it and fails only when the layers are built, on a loaded model
    with pytest.raises(ConfigError, match=rf"^adapter option r must be a positive integer, got {value!r}$"):
        ADAPTERS.get(kind).check_options({"r": value})


def test_rank_pattern_values_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"adapter option rank_pattern\['query'\] must be a positive integer, got 0"):
        ADAPTERS.get("lora").check_options({"r": 4, "rank_pattern": {"query": 0}})


def test_what_peft_refuses_comes_back_with_its_reason() -> None:
    # (IA)³: feedforward modules must be among the target modules (PEFT's own __post_init__ check)
    with pytest.raises(ConfigError, match=r"^ia3 adapter options \['feedforward_modules', 'target_modules'\] are "
                                          r"refused by PEFT: .*feedforward_modules"):
        ADAPTERS.get("ia3").check_options({"target_modules": ["query"], "feedforward_modules": ["output"]})
