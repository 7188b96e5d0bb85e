"""The strategy contract: roles in, one merged ``AdapterState`` (or a stacking ``Composition``) out.

A strategy is a function ``fn(adapters, cfg)`` registered in ``STRATEGIES`` with :func:`register_strategy`. It
declares

* ``roles``: the adapter roles it needs (``task``: task adapter trained in the source language; ``ref_source`` /
  ``ref_target``: reference-task adapters in the source and target language), and ``optional_roles``;
* ``config``: a frozen dataclass subclassing :class:`StrategyConfig` whose fields are its hyperparameters. Each
  field is declared with :func:`param`, which records type, default, range and help text. Ranges are checked in
  ``__post_init__`` and :meth:`StrategyConfig.suggest` turns them into an Optuna search space, so the tuner keeps
  no parameter list of its own. A number declared with ``groups=True`` also takes one value per group of
  modules (``--param t@0-7=0.4``; grammar in :mod:`adamergex.groups`), held as ``{"*": rest, group: value}``;
* ``paper``: a link, and ``output``: ``"merge"`` (returns an ``AdapterState``), ``"stack"`` (returns a
  :class:`Composition` that the loader applies to a model) or ``"by_type"``: either, decided before any work by
  the strategy's ``output_for(kind, cfg)`` from the adapter type and the config (``madx_stack`` writes one exact
  adapter where the type has one, a composition elsewhere). :meth:`Strategy.output_for` answers for every
  strategy, and the contract suite checks every call against it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .adapter_state import AdapterState
from .errors import ConfigError, IncompatibleAdaptersError
from .groups import REST, check_spec
from .registry import STRATEGIES

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ROLES",
    "Composition",
    "Strategy",
    "StrategyConfig",
    "param",
    "register_strategy",
]

ROLES: dict[str, str] = {
    "task": "task adapter trained on the task in the source language",
    "ref_source": "reference-task adapter trained in the source language",
    "ref_target": "reference-task adapter trained in the target language",
}


def param(
    default: Any,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    log: bool = False,
    tune: bool = True,
    tune_low: float | None = None,
    tune_high: float | None = None,
    groups: bool = False,
) -> Any:
    """Declare a strategy hyperparameter as a dataclass field.

    Args:
        default: Default value (also fixes the type for CLI parsing).
        help: One-line description shown by ``adamergex strategies`` and ``--help``.
        low, high: Inclusive valid range for numbers (``None``: unbounded on that side).
        choices: Allowed values for categorical parameters.
        log: Search the range on a log scale when tuning.
        tune: Whether the tuner searches this parameter.
        tune_low, tune_high: Narrower search range for tuning, when the valid range is unbounded or too wide.
        groups: A float that may take one value per group of modules (``name@group``; see
            :mod:`adamergex.groups`). Every group value is validated against the same range, and
            :meth:`StrategyConfig.suggest` searches one value per group it is given.
    """
    if groups and not isinstance(default, float):
        raise ConfigError(f"groups=True needs a float parameter, got default {default!r}")
    meta = {
        "help": help, "low": low, "high": high, "choices": choices, "log": log, "tune": tune,
        "tune_low": tune_low, "tune_high": tune_high, "groups": groups,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StrategyConfig:
    """Base of strategy configs: validates declared ranges and owns the Optuna search space."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if meta.get("choices") is not None:
                if value not in meta["choices"]:
                    raise ConfigError(
                        f"{type(self).__name__}.{f.name} must be one of {list(meta['choices'])}, got {value!r}"
                    )
                continue
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{type(self).__name__}.{f.name} must be true or false, got {value!r}")
                continue
            if meta.get("groups") and isinstance(value, Mapping):
                grouped = {REST: f.default, **value}
                for group, v in grouped.items():
                    where = f"{type(self).__name__}.{f.name}" + ("" if group == REST else f"@{group}")
                    if group != REST:
                        try:
                            check_spec(group)
                        except ConfigError as exc:
                            raise ConfigError(f"{where}: {exc}") from None
                    self._check_number(where, v, meta)
                # normalised: floats, the rest value always present (frozen, hence object.__setattr__)
                object.__setattr__(self, f.name, {g: float(v) for g, v in grouped.items()})
                continue
            if isinstance(f.default, (int, float)):
                self._check_number(f"{type(self).__name__}.{f.name}", value, meta)

    @staticmethod
    def _check_number(where: str, value: Any, meta: Mapping[str, Any]) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise ConfigError(f"{where} must be in [{lo}, {hi}], got {value!r}")

    @classmethod
    def parameters(cls) -> list[dict[str, Any]]:
        """Declared hyperparameters: name, type, default, range/choices and help (JSON-able)."""
        out = []
        for f in dataclasses.fields(cls):
            meta = dict(f.metadata)
            out.append({
                "name": f.name,
                "type": type(f.default).__name__,
                "default": f.default,
                "low": meta.get("low"),
                "high": meta.get("high"),
                "choices": list(meta["choices"]) if meta.get("choices") else None,
                "help": meta.get("help", ""),
                "tune": meta.get("tune", True),
                "groups": meta.get("groups", False),
            })
        return out

    @classmethod
    def from_params(cls: type[C], params: Mapping[str, Any], *, strategy: str = "") -> C:
        """Build from ``{name: value}``; values given as strings (CLI ``--param t=0.5``) are parsed by the
        field's type. ``name@group`` sets one group of a ``groups=True`` parameter (``name`` alone then sets
        the modules in no group). Unknown names list the known ones."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, at, group = key.partition("@")
            if name not in fields:
                known = ", ".join(sorted(fields)) or "(none)"
                raise ConfigError(f"strategy {strategy!r} has no parameter {name!r}; available: {known}")
            field_ = fields[name]
            if at and not field_.metadata.get("groups"):
                can = sorted(n for n, f in fields.items() if f.metadata.get("groups")) or ["(none)"]
                raise ConfigError(f"strategy {strategy!r}: parameter {name!r} takes no groups ({key!r}); "
                                  f"parameters with groups: {', '.join(can)}")
            if at:
                grouped.setdefault(name, {})[group.strip()] = _parse(value, field_.default, f"{strategy}.{key}")
            elif isinstance(value, Mapping) and field_.metadata.get("groups"):
                grouped.setdefault(name, {}).update(
                    {g: _parse(v, field_.default, f"{strategy}.{name}@{g}") for g, v in value.items()})
            else:
                kwargs[name] = _parse(value, field_.default, f"{strategy}.{name}")
        for name, groups in grouped.items():
            rest = groups.pop(REST, kwargs.get(name, fields[name].default))
            kwargs[name] = {REST: rest, **groups}
        return cls(**kwargs)

    @classmethod
    def suggest(
        cls: type[C], trial: optuna.Trial, *, prefix: str = "", groups: Mapping[str, Sequence[str]] | None = None
    ) -> C:
        """Sample a config from ``trial`` over the declared ranges (parameters with ``tune=False`` keep their
        default). ``prefix`` namespaces the Optuna parameter names (e.g. per adapter type).

        ``groups`` maps a ``groups=True`` parameter to group specs (``{"t": ["0-7", "8-15"]}``): one value is
        searched per group, under the Optuna name ``{prefix}{name}@{group}``, and modules in no group keep the
        default. The tuner passes it through unchanged (``tune(..., groups=...)``).
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in groups or {}:
            if name not in fields or not fields[name].metadata.get("groups"):
                can = sorted(n for n, f in fields.items() if f.metadata.get("groups")) or ["(none)"]
                raise ConfigError(f"{cls.__name__} cannot search {name!r} per group; parameters with groups: "
                                  f"{', '.join(can)}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if groups and f.name in groups:
                kwargs[f.name] = {REST: f.default}
                for group in groups[f.name]:
                    kwargs[f.name][group] = cls._suggest_number(trial, f, f"{prefix}{f.name}@{group}")
                continue
            meta = f.metadata
            if not meta.get("tune", True):
                continue
            name = prefix + f.name
            if meta.get("choices") is not None:
                kwargs[f.name] = trial.suggest_categorical(name, list(meta["choices"]))
            elif isinstance(f.default, bool):
                kwargs[f.name] = trial.suggest_categorical(name, [False, True])
            elif isinstance(f.default, (int, float)):
                kwargs[f.name] = cls._suggest_number(trial, f, name)
        return cls(**kwargs)

    @classmethod
    def _suggest_number(cls, trial: optuna.Trial, f: dataclasses.Field[Any], name: str) -> int | float:
        meta = f.metadata
        low = meta.get("tune_low", meta.get("low"))
        high = meta.get("tune_high", meta.get("high"))
        low = meta.get("low") if low is None else low
        high = meta.get("high") if high is None else high
        if low is None or high is None:
            raise ConfigError(f"{cls.__name__}.{f.name} needs a bounded range (or tune_low/tune_high) to tune")
        if isinstance(f.default, int):
            return trial.suggest_int(name, int(low), int(high), log=meta.get("log", False))
        return trial.suggest_float(name, float(low), float(high), log=meta.get("log", False))

    def to_dict(self) -> dict[str, Any]:
        """The parameter values (JSON-able)."""
        return dataclasses.asdict(self)


C = TypeVar("C", bound=StrategyConfig)
T = TypeVar("T")


def _parse(value: Any, default: Any, where: str) -> Any:
    if not isinstance(value, str) or isinstance(default, str):
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"{where} must be a {type(default).__name__}, got {value!r}") from None
    return value


@dataclass(frozen=True)
class Composition:
    """The result of a stacking strategy: adapters active together at inference (no weight merge).

    ``adapters`` maps an adapter name to its state; all are activated together on the same base model, in the
    listed order. ``head_from`` names the adapter whose saved modules (heads) the model uses. ``reason`` says why
    the adapters are composed rather than written as one adapter (``composition.json`` records it).
    """

    strategy: str
    adapters: dict[str, AdapterState]
    head_from: str
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def base_model(self) -> str:
        """Base model shared by every adapter of the composition."""
        return self.adapters[self.head_from].base_model


StrategyFn = Callable[[Mapping[str, AdapterState], Any], "AdapterState | Composition"]
Output = Literal["merge", "stack"]
OutputFn = Callable[[str, Any], Output]
"""``output_for(kind, cfg)`` of a ``"by_type"`` strategy: what it returns for adapters of type ``kind``."""


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its function and declarations (see module docstring)."""

    name: str
    fn: StrategyFn
    config: type[StrategyConfig]
    roles: tuple[str, ...]
    optional_roles: tuple[str, ...] = ()
    paper: str = ""
    output: Literal["merge", "stack", "by_type"] = "merge"
    summary: str = ""
    identity: Mapping[str, Any] | None = None
    """Parameters at which the strategy returns the task adapter exactly (``t = 0``...); ``None`` if none do."""
    resolve_output: OutputFn | None = None
    """For ``output="by_type"``: ``(kind, cfg) → "merge" | "stack"`` (see the module docstring)."""

    def output_for(self, kind: str, params: Mapping[str, Any] | StrategyConfig | None = None) -> Output:
        """What the strategy returns for adapters of type ``kind`` under ``params``: ``"merge"`` (an
        ``AdapterState``) or ``"stack"`` (a :class:`Composition`)."""
        if self.output != "by_type":
            return self.output
        assert self.resolve_output is not None  # register_strategy refuses "by_type" without one
        return self.resolve_output(kind, self.make_config(params))

    def select(self, adapters: Mapping[str, T]) -> dict[str, T]:
        """The entries of ``adapters`` (role → state, path...) whose role this strategy takes, required or
        optional; ``None`` values are left out. The others are ignored, as the command line reports."""
        takes = (*self.roles, *self.optional_roles)
        return {role: value for role, value in adapters.items() if value is not None and role in takes}

    def make_config(self, params: Mapping[str, Any] | StrategyConfig | None = None) -> StrategyConfig:
        """Validated config from a mapping (strings allowed) or an existing config."""
        if isinstance(params, StrategyConfig):
            if not isinstance(params, self.config):
                raise ConfigError(f"strategy {self.name!r} takes a {self.config.__name__}, got {type(params).__name__}")
            return params
        return self.config.from_params(params or {}, strategy=self.name)

    def __call__(
        self, adapters: Mapping[str, AdapterState], params: Mapping[str, Any] | StrategyConfig | None = None
    ) -> AdapterState | Composition:
        """Check roles and inputs, then run the strategy."""
        cfg = self.make_config(params)
        missing = [r for r in self.roles if r not in adapters]
        extra = [r for r in adapters if r not in self.roles and r not in self.optional_roles]
        if missing or extra:
            wanted = list(self.roles) + [f"[{r}]" for r in self.optional_roles]
            raise ConfigError(
                f"strategy {self.name!r} takes roles {wanted}; missing {missing}, unexpected {extra}"
            )
        for role, state in adapters.items():
            state.check_finite(where=f"{role} adapter")
        # Every adapter given must fit one base model, including roles a strategy ignores (source_only...):
        # a mismatch there means the user mixed up experiments.
        first_role, first = next(iter(adapters.items()))
        for role, state in adapters.items():
            if state.base_model != first.base_model:
                raise IncompatibleAdaptersError(
                    f"adapters must share a base model; {first_role} was trained on {first.base_model!r}, "
                    f"{role} on {state.base_model!r}"
                )
        return self.fn(adapters, cfg)


def register_strategy(
    name: str,
    *,
    config: type[StrategyConfig],
    roles: tuple[str, ...],
    optional_roles: tuple[str, ...] = (),
    paper: str = "",
    output: Literal["merge", "stack", "by_type"] = "merge",
    identity: Mapping[str, Any] | None = None,
    output_for: OutputFn | None = None,
) -> Callable[[StrategyFn], StrategyFn]:
    """Register the decorated function in ``STRATEGIES`` under ``name`` with its declarations.

    The first paragraph of the function's docstring becomes the strategy's summary. ``identity`` names the
    parameters at which the strategy must return the task adapter unchanged; the contract tests check it.
    ``output_for`` is required with ``output="by_type"`` and refused otherwise.
    """
    for role in (*roles, *optional_roles):
        if role not in ROLES:
            raise ConfigError(f"strategy {name!r} declares unknown role {role!r}; known roles: {sorted(ROLES)}")
    if output not in ("merge", "stack", "by_type"):
        raise ConfigError(f"strategy {name!r}: output must be 'merge', 'stack' or 'by_type', got {output!r}")
    if (output == "by_type") != (output_for is not None):
        raise ConfigError(f"strategy {name!r}: output='by_type' needs output_for(kind, cfg), and only it takes one")

    def deco(fn: StrategyFn) -> StrategyFn:
        doc = inspect.getdoc(fn) or ""
        summary = " ".join(doc.split("\n\n", 1)[0].split())
        STRATEGIES.add(
            name, Strategy(name, fn, config, roles, optional_roles, paper, output, summary, identity, output_for)
        )
        return fn

    return deco
