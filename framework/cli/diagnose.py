"""``adamergex diagnose``: is the language divergence the same whatever the task? Cosines of divergences, per layer.

Adapters are named on the command line (``--adapter ROLE:TASK:LANG[:SEED]=DIR``) or in a manifest
(``--manifest FILE``, YAML or JSON), or both; the numbers are :func:`adamergex.diagnose.diagnose`'s and the files
:func:`adamergex.diagnose_report.write_report`'s. Needs torch, safetensors and matplotlib (no PEFT, no
transformers, no model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputExistsError

__all__ = ["cli_diagnose", "parse_adapter", "read_manifest"]

_EPILOG = """\
adapters:
  --adapter ROLE:TASK:LANG[:SEED]=DIR   one adapter directory; ROLE is task (a task adapter: trained in the
                                        source language, or in a target: the upper bound) or reference (the
                                        language adapters AdaMergeX subtracts); SEED tells apart adapters of one
                                        task and language. Repeat for every adapter.
  --manifest FILE                       the same as YAML or JSON (paths relative to the file):
      adapters:
        - {role: reference, task: clm, language: src, path: ref_src}
        - {role: reference, task: clm, language: lex, path: ref_lex}
        - {role: task, task: world_nli, language: src, seed: 0, path: nli_src_0}
        - {role: task, task: world_nli, language: lex, seed: 0, path: nli_lex_0}

Needed: two tasks (the reference counts as one), each with an adapter in --source-language, and a target
language shared by two tasks; more targets give the null_language baseline, two seeds of one task and language
the null_seed baseline, the same seeds in the source and a target the same_task_seeds comparison.

output (in --output): diagnose.json (every number, per layer and pooled, with the inputs' SHA-256
fingerprints), diagnose.md (tables) and diagnose.png (cosine per layer with the baselines)."""

_KEYS = ("role", "task", "language", "seed", "path")


def parse_adapter(item: str) -> dict[str, Any]:
    """``ROLE:TASK:LANG[:SEED]=DIR`` into ``{role, task, language, seed, path}``."""
    key, sep, path = item.partition("=")
    parts = key.split(":")
    if not sep or not path or len(parts) not in (3, 4) or not all(parts):
        raise ConfigError(f"--adapter must look like ROLE:TASK:LANG[:SEED]=DIR (ROLE task or reference), got {item!r}")
    return {"role": parts[0], "task": parts[1], "language": parts[2], "seed": parts[3] if len(parts) == 4 else None,
            "path": path, "name": path}


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a manifest (``adapters:`` a list of ``{role, task, language, [seed], path}``; ``role``
    defaults to ``task``), with paths resolved against the manifest's directory."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--manifest {path} must be a readable YAML or JSON file: {exc}") from None
    entries = loaded.get("adapters") if isinstance(loaded, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"--manifest {path} must hold a mapping with a non-empty list under 'adapters', got "
                          f"{type(loaded).__name__ if not isinstance(loaded, dict) else sorted(loaded)}")
    out = []
    for i, entry in enumerate(entries):
        where = f"--manifest {path}: adapters[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping with keys {', '.join(_KEYS)}, got {entry!r}")
        unknown = sorted(set(map(str, entry)) - set(_KEYS))
        missing = [k for k in ("task", "language", "path") if entry.get(k) in (None, "")]
        if unknown or missing:
            raise ConfigError(f"{where} must have task, language and path (and optionally role, seed); "
                              f"missing {missing}, unknown {unknown}")
        full = Path(str(entry["path"])).expanduser()
        full = full if full.is_absolute() else path.parent / full
        out.append({"role": str(entry.get("role", "task")), "task": str(entry["task"]),
                    "language": str(entry["language"]),
                    "seed": None if entry.get("seed") is None else str(entry["seed"]),
                    "path": str(full), "name": str(entry["path"])})
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adamergex diagnose", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="Measure AdaMergeX's assumption: the cosine between the language divergences of different "
        "tasks (T_l − T_src against ref_l − ref_src) in the adapter type's merge space (ΔW = s·B·A for LoRA, "
        "computed from the factors; log l for (IA)³), per layer and pooled, next to null baselines.",
    )
    p.add_argument("--adapter", action="append", default=[], metavar="ROLE:TASK:LANG[:SEED]=DIR",
                   help="an adapter directory and what it was trained on (repeat; see below)")
    p.add_argument("--manifest", help="YAML or JSON file listing the adapters (see below)")
    p.add_argument("--run", metavar="RUN_DIR", help="the adapters of an `adamergex ablate` run (its rows without a "
                                                    "negative control), read from the adapter cache; needs --adapter-type")
    p.add_argument("--adapter-type", help="with --run: the adapter type to diagnose (lora, ia3, ...)")
    p.add_argument("--cache", help="with --run: the run's adapter cache (default: as `adamergex ablate`)")
    p.add_argument("--source-language", required=True, help="the language divergences start from (T_l − T_src)")
    p.add_argument("--by", choices=("layer", "module"), default="layer",
                   help="group modules by layer index (default) or report every module")
    p.add_argument("--output", required=True, help="directory for diagnose.json, diagnose.md, diagnose.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing diagnose.* files in --output")
    return p


def cli_diagnose(argv: list[str]) -> int:
    """``adamergex diagnose``: inputs and --output are checked before any adapter is read; nothing is written
    on error."""
    args = _parser().parse_args(argv)
    from ..diagnose import LabeledAdapter, check_design, diagnose
    from ..diagnose_report import FILES, write_report
    from ..io import load_adapter

    entries = [parse_adapter(item) for item in args.adapter]
    if args.manifest:
        entries += read_manifest(args.manifest)
    if args.run:
        if not args.adapter_type:
            raise ConfigError("--run needs --adapter-type: a run's adapters of different types are not comparable")
        from adamergex.recipes.ablate import AdapterCache, default_cache_dir, run_adapters

        entries += run_adapters(args.run, AdapterCache(args.cache or default_cache_dir()), args.adapter_type)
    elif args.adapter_type or args.cache:
        raise ConfigError("--adapter-type and --cache go with --run")
    if not entries:
        raise ConfigError("diagnose needs adapters: give --adapter ROLE:TASK:LANG[:SEED]=DIR (repeated), --manifest "
                          "or --run")
    existing = [str(Path(args.output) / f) for f in FILES if (Path(args.output) / f).exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"output {', '.join(existing)} already exists; pass --overwrite to replace it")
    check_design([(e["task"], e["language"], e["seed"], e["role"], e["name"]) for e in entries], args.source_language)
    adapters = [LabeledAdapter(state=load_adapter(e["path"]), task=e["task"], language=e["language"], seed=e["seed"],
                               role=e["role"], name=e["name"]) for e in entries]
    record = diagnose(adapters, args.source_language, by=args.by)
    write_report(record, args.output, overwrite=args.overwrite)
    for component, part in record["components"].items():
        for row in part["summary"]:
            name = f"{component} {row['type']}" + (f" ({row['pair']})" if row.get("pair") else "")
            if "missing" in row:
                print(f"{name}: not available ({row['missing']})")
                continue
            p = row["pooled"]
            text = "n/a" if p["mean"] is None else f"{p['mean']:.3f} [{p['min']:.3f}, {p['max']:.3f}]"
            print(f"{name}: pooled cosine {text}, n={row['n']}")
    print(f"wrote {', '.join(str(Path(args.output) / f) for f in FILES)}", file=sys.stderr)
    return 0
