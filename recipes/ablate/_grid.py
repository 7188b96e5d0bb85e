"""The grid of an ablation: its cells, the adapters they need, and those adapters' cache keys.

A *cell* is one score: ``(adapter type, seed, target language, strategy setting)``, plus one ``upper_bound`` cell
per ``(adapter type, seed, target)`` when the baseline is asked for. Its id is readable and stable:
``lora/seed0/lex/adamergex[t=0.5]``; a negative control of it (``controls:``) is
``lora/seed0/lex/adamergex[t=0.5]~wrong_language``, the same merge with its reference roles replaced. A cell needs adapters by role: ``task`` (task adapter, source language),
``ref_source`` and ``ref_target`` (reference adapters), or ``upper`` (task adapter, target language). Each
adapter is an :class:`AdapterJob`; jobs shared by cells (and by other configs) have one cache key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._cache import key_of
from ._config import AblationConfig, TuneSpec

__all__ = ["UPPER", "AdapterJob", "Cell", "adapter_jobs", "cells", "head_inputs", "job_inputs"]

UPPER = "upper_bound"


@dataclass(frozen=True)
class AdapterJob:
    """One adapter to train: ``task`` or ``reference`` data, in ``language``, of ``adapter`` type, ``seed``."""

    adapter: str
    role: str  # "task" or "reference"
    language: str
    seed: int

    @property
    def name(self) -> str:
        """``lora/seed0/task/src``."""
        return f"{self.adapter}/seed{self.seed}/{self.role}/{self.language}"


@dataclass(frozen=True)
class Cell:
    """One score of the grid (see the module docstring)."""

    adapter: str
    seed: int
    target: str
    label: str
    strategy: str  # a registered strategy, or "upper_bound"
    params: dict[str, Any] | None
    tune: TuneSpec | None
    control: str | None = None
    """A negative control (``wrong_language``, ``swapped``, ``source_both``): the reference roles replaced."""
    control_language: str | None = None
    """The language of ``ref_target`` under the ``wrong_language`` control."""

    @property
    def id(self) -> str:
        """``lora/seed0/lex/adamergex[t=0.5]``."""
        return f"{self.adapter}/seed{self.seed}/{self.target}/{self.label}"

    def roles(self, source: str) -> dict[str, AdapterJob]:
        """The adapters this cell needs, by the role the strategy reads them under."""
        if self.strategy == UPPER:
            return {"task": AdapterJob(self.adapter, "task", self.target, self.seed)}
        from adamergex.registry import STRATEGIES

        ref_source = AdapterJob(self.adapter, "reference", source, self.seed)
        ref_target = AdapterJob(self.adapter, "reference", self.target, self.seed)
        if self.control == "wrong_language":
            assert self.control_language is not None
            ref_target = AdapterJob(self.adapter, "reference", self.control_language, self.seed)
        elif self.control == "swapped":
            ref_source, ref_target = ref_target, ref_source
        elif self.control == "source_both":
            ref_target = ref_source
        every = {"task": AdapterJob(self.adapter, "task", source, self.seed),
                 "ref_source": ref_source, "ref_target": ref_target}
        return STRATEGIES.get(self.strategy).select(every)


def cells(cfg: AblationConfig) -> list[Cell]:
    """Every cell, in a stable order (adapter type, seed, target, then the settings as configured)."""
    settings = cfg.strategy_settings()
    out = []
    for spec in cfg.adapters:
        for seed in cfg.seeds:
            for target in cfg.targets:
                for label, name, params, tune in settings:
                    out.append(Cell(spec.type, seed, target, label, name, params, tune))
                    for control in cfg.controls:  # each control right after its setting: the report pairs them
                        wrong = cfg.wrong_language(target) if control == "wrong_language" else None
                        out.append(Cell(spec.type, seed, target, f"{label}~{control}", name, params, tune, control,
                                        wrong))
                if UPPER in cfg.baselines:
                    out.append(Cell(spec.type, seed, target, UPPER, UPPER, None, None))
    return out


def adapter_jobs(cfg: AblationConfig, grid: list[Cell]) -> list[AdapterJob]:
    """The distinct adapters ``grid`` needs, longest (task) trainings first."""
    jobs = {job for cell in grid for job in cell.roles(cfg.source).values()}
    return sorted(jobs, key=lambda j: (j.role != "task", j.adapter, j.seed, j.language))


KEY_PACKAGES = ("adamergex", "torch", "transformers", "peft")
"""Packages whose versions are part of every cache key: they change what training computes (adamergex: its
training loop, losses, data encoding and task rendering)."""


def head_inputs(cfg: AblationConfig, base: dict[str, Any]) -> dict[str, Any] | None:
    """Cache-key inputs of the shared reference head (``None`` without one)."""
    if cfg.head is None:
        return None
    from adamergex.versions import package_versions

    return {"what": "head", "base_model": base, "task": _task_inputs(cfg.reference, cfg.head_languages),
            "languages": list(cfg.head_languages), "seed": 0, "recipe": dataclasses.asdict(cfg.head.train),
            "versions": package_versions(*KEY_PACKAGES)}


def job_inputs(cfg: AblationConfig, job: AdapterJob, base: dict[str, Any], head_key: str | None) -> dict[str, Any]:
    """Cache-key inputs of one adapter: everything that determines it (see :mod:`._cache`)."""
    from adamergex.versions import package_versions

    spec = next(a for a in cfg.adapters if a.type == job.adapter)
    task = cfg.task if job.role == "task" else cfg.reference
    recipe = spec.task if job.role == "task" else spec.reference
    recipe_inputs = dataclasses.asdict(recipe)
    for name, default in (("val_split", None), ("val_limit", None), ("val_at_start", False), ("val_every", None)):
        if recipe_inputs[name] == default:  # fields added later: absent at their defaults, so old keys hold
            del recipe_inputs[name]
    return {
        "what": "adapter", "base_model": base,
        "adapter": {"type": spec.type, "options": spec.options_for(job.role)},
        "task": _task_inputs(task, [job.language]), "language": job.language, "seed": job.seed,
        "recipe": recipe_inputs,
        "head": head_key if job.role == "reference" else None,
        "versions": package_versions(*KEY_PACKAGES),
    }


def job_key(cfg: AblationConfig, job: AdapterJob, base: dict[str, Any], head_key: str | None) -> str:
    """The cache key of one adapter."""
    return key_of(job_inputs(cfg, job, base, head_key))


def _task_inputs(task: Any, languages: Any) -> dict[str, Any]:
    from ._cache import file_sha256

    data: dict[str, Any] = {}
    for lang in languages:
        files = task.files(lang)
        if files is None:
            continue
        entries = files.items() if isinstance(files, dict) else [("*", files)]
        data[lang] = {split: [file_sha256(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
                      for split, paths in entries}
    return {"name": task.name, "options": task.options, "data_sha256": data}
