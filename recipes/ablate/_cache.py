"""The adapter cache: every trained adapter (and shared head) stored once, under a key of all that determines it.

Layout, a plain directory a user can move, inspect and prune::

    CACHE/<key[:2]>/<key>/key.json      the canonical inputs (human-readable), plus "created"
    CACHE/<key[:2]>/<key>/adapter/      a PEFT adapter directory (adamergex.io.save_adapter), or
    CACHE/<key[:2]>/<key>/head/         a shared reference head (ReferenceHead.save)

``key = SHA-256(canonical JSON of the inputs)``: base model (its files' SHA-256, or Hub id and revision, and the
dtype), adapter type and options, task and task options, language, data files' SHA-256, seed, training recipe,
the shared head's key, and the versions of adamergex, torch, transformers and peft (they change numerics).

Safety: an entry is written into a temporary sibling directory and renamed into place, so it is complete or
absent (a SIGKILL leaves at most a ``.tmp-*`` directory, which :meth:`AdapterCache.get_or_train` ignores and
``adamergex cache prune`` removes). Two processes that need one key at once serialise on a per-key
``fcntl.flock``; the second finds the entry the first wrote and trains nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from adamergex.errors import ConfigError

__all__ = ["FORMAT", "AdapterCache", "canonical_json", "default_cache_dir", "file_sha256", "key_of", "model_identity"]

FORMAT = 1
"""Version of the key inputs' layout; bump it when their meaning changes."""
_MODEL_FILES = (".safetensors", ".json", ".model", ".txt", ".tiktoken")


def default_cache_dir() -> Path:
    """``$ADAMERGEX_ADAPTER_CACHE``, else ``<adamergex cache root>/adapters`` (``$ADAMERGEX_CACHE`` respected)."""
    env = os.environ.get("ADAMERGEX_ADAPTER_CACHE")
    if env:
        return Path(env).expanduser()
    from adamergex.tasks.world.model import cache_root

    return cache_root() / "adapters"


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, tuples as lists: one text per value."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def key_of(inputs: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the canonical JSON of ``inputs``."""
    return hashlib.sha256(canonical_json({"format": FORMAT, **inputs}).encode()).hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and mtime within this process)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


def model_identity(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: SHA-256}`` of a local model directory's weights, config and tokenizer files."""
    root = Path(path)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in _MODEL_FILES)
    if not any(p.suffix == ".safetensors" for p in files):
        raise ConfigError(f"model directory {root} holds no .safetensors weights (only safetensors are read)")
    return {p.name: file_sha256(p) for p in files}


class AdapterCache:
    """Adapters and heads by key under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        """The directory of ``key``'s entry (which may not exist)."""
        return self.root / key[:2] / key

    def has(self, key: str) -> bool:
        """Whether a complete entry exists (complete entries are the only ones that exist)."""
        return (self.entry(key) / "key.json").is_file()

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        shard = self.root / key[:2]
        shard.mkdir(parents=True, exist_ok=True)
        with open(shard / f".{key}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, key: str) -> Any:
        """The stored adapter (:class:`AdapterState`) or head (:class:`ReferenceHead`) of ``key``."""
        entry = self.entry(key)
        if (entry / "head").is_dir():
            from adamergex.training import ReferenceHead

            return ReferenceHead.load(entry / "head")
        from adamergex.io import load_adapter

        return load_adapter(entry / "adapter")

    def get_or_train(self, key: str, inputs: Mapping[str, Any], train: Callable[[], Any]) -> tuple[Any, bool]:
        """``(object, trained now)``: the cached entry of ``key``, or ``train()``'s result, stored first.

        The per-key lock is held while training, so concurrent callers of one key train it once.
        """
        if self.has(key):
            return self.load(key), False
        with self._locked(key):
            if self.has(key):  # another process wrote it while we waited
                return self.load(key), False
            obj = train()
            self._store(key, inputs, obj)
            return obj, True

    def _store(self, key: str, inputs: Mapping[str, Any], obj: Any) -> None:
        from adamergex.io import save_adapter

        target = self.entry(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=target.parent))
        try:
            if type(obj).__name__ == "ReferenceHead":
                obj.save(tmp / "head")
            else:
                save_adapter(obj, tmp / "adapter")
            created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            record = {"key": key, "format": FORMAT, "created": created, "inputs": inputs}
            (tmp / "key.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry's ``key.json`` record, plus ``path`` and ``bytes``, sorted by creation time."""
        out = []
        if not self.root.is_dir():
            return out
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir() or shard.name.startswith("."):
                continue
            for entry in sorted(shard.iterdir()):
                if entry.name.startswith(".") or not (entry / "key.json").is_file():
                    continue
                record = json.loads((entry / "key.json").read_text())
                size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                out.append({**record, "path": str(entry), "bytes": size})
        return sorted(out, key=lambda r: (r.get("created", ""), r["key"]))

    def leftovers(self) -> list[Path]:
        """Temporary directories of writes that were killed midway (never read; safe to remove)."""
        if not self.root.is_dir():
            return []
        return sorted(p for shard in self.root.iterdir() if shard.is_dir()
                      for p in shard.iterdir() if p.is_dir() and p.name.startswith(".") and ".tmp-" in p.name)

    def remove(self, key: str) -> None:
        """Delete ``key``'s entry (under its lock, so no reader of a half-deleted entry exists)."""
        with self._locked(key):
            entry = self.entry(key)
            if entry.exists():
                trash = entry.with_name(f".{key}.tmp-removed")
                os.replace(entry, trash)
                shutil.rmtree(trash, ignore_errors=True)
