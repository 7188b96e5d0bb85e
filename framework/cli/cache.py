"""``adamergex cache ls|prune``: inspect and prune the adapter cache of ``adamergex ablate``.

``ls`` prints one line per entry (key, what, adapter type, task, language, seed, size, created) or, with
``--json``, the full inputs. ``prune`` removes entries not used by the given configs (``--keep CONFIG``), or
created before a date (``--before YYYY-MM-DD``), and the leftovers of killed writes. It only lists what it would
remove unless ``--yes`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json

from ..errors import ConfigError

__all__ = ["cli_cache"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adamergex cache", description=cli_cache.__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("ls", help="list cache entries with their inputs")
    ls.add_argument("--cache", help="cache directory (default: $ADAMERGEX_ADAPTER_CACHE or ~/.cache/adamergex/adapters)")
    ls.add_argument("--json", action="store_true", help="print every entry's key.json record")
    pr = sub.add_parser("prune", help="remove entries no given config uses, or older than a date (dry run by default)")
    pr.add_argument("--cache", help="cache directory")
    pr.add_argument("--keep", nargs="+", default=[], metavar="CONFIG", help="ablation configs whose adapters stay")
    pr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="overrides applied to every --keep config")
    pr.add_argument("--before", help="remove entries created before this date (YYYY-MM-DD)")
    pr.add_argument("--yes", action="store_true", help="really remove (default: only list)")
    return p


def _used_keys(configs: list[str], overrides: list[str]) -> set[str]:
    from ..recipes.ablate import AdapterCache, load_config, plan

    keys: set[str] = set()
    for path in configs:
        cfg, _ = load_config(path, overrides)
        p = plan(cfg, AdapterCache("/nonexistent"), None)
        if not p["base_model_known"]:
            raise ConfigError(f"{path}: its base model is not built yet, so its adapters' keys are unknown")
        keys |= {a["key"] for a in p["adapters"]}
        if p["head"] is not None:
            keys.add(p["head"]["key"])
    return keys


def cli_cache(argv: list[str]) -> int:
    """List or prune the adapter cache."""
    from ..recipes.ablate import AdapterCache, default_cache_dir

    args = _parser().parse_args(argv)
    cache = AdapterCache(args.cache or default_cache_dir())
    entries = cache.entries()
    if args.action == "ls":
        if args.json:
            print(json.dumps(entries, indent=2, sort_keys=True))
            return 0
        print(f"{len(entries)} entries in {cache.root}")
        for e in entries:
            i = e["inputs"]
            what = i.get("what")
            desc = (f"head {i['task']['name']} {','.join(i.get('languages', []))}" if what == "head" else
                    f"{i['adapter']['type']} {i['task']['name']} {i['language']} seed{i['seed']}")
            print(f"{e['key'][:16]}  {desc}  {e['bytes'] / 1e6:.2f} MB  {e['created']}")
        return 0
    if not args.keep and not args.before:
        raise ConfigError("prune needs --keep CONFIG... (remove entries those configs do not use) or --before DATE")
    doomed = list(entries)
    if args.keep:
        used = _used_keys(args.keep, args.overrides)
        doomed = [e for e in doomed if e["key"] not in used]
    if args.before:
        try:
            cutoff = datetime.date.fromisoformat(args.before).isoformat()
        except ValueError:
            raise ConfigError(f"--before must be a date YYYY-MM-DD, got {args.before!r}") from None
        doomed = [e for e in doomed if e["created"] < cutoff]
    leftovers = cache.leftovers()
    verb = "removing" if args.yes else "would remove"
    for e in doomed:
        print(f"{verb} {e['key'][:16]} ({e['path']})")
        if args.yes:
            cache.remove(e["key"])
    for p in leftovers:
        print(f"{verb} leftover {p}")
        if args.yes:
            import shutil

            shutil.rmtree(p, ignore_errors=True)
    if not args.yes:
        print(f"{len(doomed)} entries and {len(leftovers)} leftovers; pass --yes to remove them")
    return 0
