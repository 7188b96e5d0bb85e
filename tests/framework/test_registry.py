"""The generic registry: names, duplicates, unknown-name messages, scoped entries, entry-point plugins."""

from __future__ import annotations

import types

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.registry import ADAPTERS, STRATEGIES, Registry


def test_names_must_be_lowercase_snake_case() -> None:
    reg: Registry[int] = Registry("thing")
    for bad in ("Ties", "dare-ties", "1x", "", "a b"):
        with pytest.raises(ConfigError, match="lowercase snake_case"):
            reg.add(bad, 1)


def test_duplicates_are_refused() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("one", 1)
    with pytest.raises(ConfigError, match="thing 'one' is already registered"):
        reg.add("one", 2)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        STRATEGIES.get("tie")
    assert str(info.value) == (
        "unknown strategy 'tie'; available: adamergex, dare, dare_ties, madx_stack, source_only, structure_adaptive, "
        "task_arithmetic, ties"
    )
    assert isinstance(info.value, KeyError)


def test_scoped_registration_is_removed_after_the_block() -> None:
    with STRATEGIES.scoped("throwaway", object()):
        assert "throwaway" in STRATEGIES
    assert "throwaway" not in STRATEGIES


def test_entry_point_plugins_register(monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[str] = Registry("plugin thing", entry_point_group="adamergex.test_plugins")
    module = types.ModuleType("fake_plugin")

    def load_plugin() -> None:
        reg.add("from_plugin", "ok")

    ep = types.SimpleNamespace(load=lambda: load_plugin)
    import adamergex.registry as registry_module

    monkeypatch.setattr(registry_module, "entry_points", lambda group: [ep] if group == "adamergex.test_plugins" else [])
    assert reg.get("from_plugin") == "ok"
    assert module.__name__ == "fake_plugin"


def test_adapter_types_are_registered_by_lowercase_name() -> None:
    assert ADAPTERS.names() == ["dora", "ia3", "loha", "lokr", "lora"]
    assert ADAPTERS.get("lora").structure == "additive"
    assert ADAPTERS.get("ia3").structure == "multiplicative"
