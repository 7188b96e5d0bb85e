"""Adapters in and out in PEFT's own format, written atomically.

An adapter directory is what ``PeftModel.save_pretrained`` writes and ``PeftModel.from_pretrained`` loads:
``adapter_config.json`` + ``adapter_model.safetensors``. adamergex adds ``adamergex.json`` beside them (language,
task, training or merge provenance; PEFT ignores it) and copies the same record into the safetensors header
metadata under the key ``adamergex``. Only safetensors are read: a directory holding only a pickle
(``adapter_model.bin``) is refused, never unpickled.

Writes go to a temporary sibling directory that is renamed into place, so a crash never leaves a half-written
adapter, and an existing non-empty output is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adapter_state import AdapterState
from .errors import (
    AdapterFormatError,
    FrameworkError,
    OutputExistsError,
    OutputWriteError,
    UnknownNameError,
)
from .registry import ADAPTERS

if TYPE_CHECKING:
    import torch
    from peft import PeftModel

    from .adapters.base import AdapterType

__all__ = [
    "CONFIG_NAME",
    "META_NAME",
    "WEIGHTS_NAME",
    "adapter_type_for",
    "atomic_directory",
    "atomic_file",
    "load_adapter",
    "peft_config_dict",
    "read_json",
    "remove_stale_temporaries",
    "staging_directory",
    "save_adapter",
    "state_from_peft_model",
    "write_json_atomic",
]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
META_NAME = "adamergex.json"
KIND_KEY = "adapter_kind"
"""Key of ``adamergex.json`` naming the adapter type that wrote the directory (read back by :func:`load_adapter`)."""


def adapter_type_for(config: Mapping[str, Any], *, source: str) -> AdapterType:
    """The one registered adapter type that claims the PEFT config ``config`` (:meth:`AdapterType.claims`:
    ``LORA`` → ``lora``, or ``dora`` with ``use_dora: true``; ``IA3`` → ``ia3``...)."""
    claiming = [typ for _, typ in ADAPTERS.items() if typ.claims(config)]
    if len(claiming) == 1:
        return claiming[0]  # type: ignore[no-any-return]
    if claiming:
        names = ", ".join(t.name for t in claiming)
        raise AdapterFormatError(f"{source}: exactly one adapter type must claim the config, got {names}")
    known = ", ".join(f"{t.peft_type} ({n})" for n, t in ADAPTERS.items())
    raise UnknownNameError(f"{source}: unsupported PEFT adapter type {config.get('peft_type')!r}; supported: {known}")


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file, naming the file on any failure."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterFormatError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFormatError(f"{path} must be a readable JSON file, got: {exc}") from None
    if not isinstance(data, dict):
        raise AdapterFormatError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_adapter(source: str | os.PathLike[str] | PeftModel, *, adapter_name: str = "default") -> AdapterState:
    """Load one adapter from a PEFT adapter directory or a live ``PeftModel``.

    Raises:
        AdapterFormatError: the directory is missing, lacks ``adapter_config.json`` or
            ``adapter_model.safetensors`` (a pickle-only directory is refused), or a file is corrupt.
        UnknownNameError: the PEFT type has no registered adapter type.
    """
    if not isinstance(source, (str, os.PathLike)):
        return state_from_peft_model(source, adapter_name=adapter_name)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(source)
    if not path.is_dir():
        raise AdapterFormatError(f"adapter directory {path} does not exist")
    config = read_json(path / CONFIG_NAME)
    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        if (path / "adapter_model.bin").exists():
            raise AdapterFormatError(
                f"{path} holds only adapter_model.bin (a pickle); adamergex reads safetensors only. Convert it "
                "where you trust it: load with PeftModel.from_pretrained and save_pretrained(safe_serialization=True)"
            )
        raise AdapterFormatError(f"{weights_path} is missing")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFormatError(f"{weights_path} is not a valid safetensors file: {exc}") from None
    if "peft_type" not in config:
        raise AdapterFormatError(f"{path / CONFIG_NAME} has no 'peft_type'; is this a PEFT adapter directory?")
    meta = read_json(path / META_NAME) if (path / META_NAME).exists() else {}
    typ = _recorded_type(meta.pop(KIND_KEY, None), config) or adapter_type_for(config, source=str(path))
    state = typ.from_peft(config, weights, source=str(path))
    state.metadata.update(meta)
    state.metadata.setdefault("source", str(path))
    return state


def _recorded_type(kind: Any, config: Mapping[str, Any]) -> AdapterType | None:
    """The adapter type adamergex recorded when it wrote the directory, if it is registered and reads this
    PEFT type: an output is read back as the kind that wrote it, also where several types share a PEFT format."""
    if not isinstance(kind, str) or kind not in ADAPTERS:
        return None
    typ: AdapterType = ADAPTERS.get(kind)
    return typ if str(config.get("peft_type", "")).upper() == typ.peft_type else None


def peft_config_dict(cfg: Any) -> dict[str, Any]:
    """A PEFT config object as the JSON-able dict ``adapter_config.json`` holds (enums as their values, sets as
    sorted lists)."""
    config: dict[str, Any] = cfg.to_dict()
    config["peft_type"] = str(getattr(cfg.peft_type, "value", cfg.peft_type))
    if config.get("task_type") is not None:
        config["task_type"] = str(getattr(cfg.task_type, "value", cfg.task_type))
    for key, value in list(config.items()):
        if isinstance(value, set):
            config[key] = sorted(value)
    return config


def state_from_peft_model(
    model: PeftModel,
    *,
    adapter_name: str = "default",
    metadata: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> AdapterState:
    """The state of adapter ``adapter_name`` of a live ``PeftModel`` (tensors copied to CPU, detached).

    ``state_dict``: the adapter's tensors as ``get_peft_model_state_dict`` returns them (keys without the adapter
    name), to use instead of reading them from ``model``, e.g. gathered from shards under FSDP. The config still
    comes from ``model``.
    """
    from peft import get_peft_model_state_dict

    if adapter_name not in model.peft_config:
        raise UnknownNameError(
            f"the PeftModel has no adapter {adapter_name!r}; available: {', '.join(sorted(model.peft_config))}"
        )
    config = peft_config_dict(model.peft_config[adapter_name])
    if state_dict is None:
        state_dict = get_peft_model_state_dict(model, adapter_name=adapter_name)
    weights = {k: v.detach().to("cpu").clone() for k, v in state_dict.items()}
    typ = adapter_type_for(config, source=f"PeftModel adapter {adapter_name!r}")
    state = typ.from_peft(config, weights, source=f"PeftModel adapter {adapter_name!r}")
    if not state.base_model:  # PEFT reads name_or_path from the instance dict, which transformers 5 leaves empty
        from .loading import base_model_name

        state = state.replace(base_model=base_model_name(model.get_base_model()))
    state.metadata.update(dict(metadata or {}))
    return state


# -- atomic writes ------------------------------------------------------------------------------------------------
# Temporaries are named ``.NAME.tmp-HOST-PID-RANDOM`` so that a later write to the same place can tell those of
# dead processes (removed) from those of live ones (kept), and are removed on SIGTERM, what batch schedulers send
# before they kill (issue #12, item 9). Modes follow the umask, as other tools' outputs do (item 10).
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
_LIVE: set[Path] = set()
_LIVE_LOCK = threading.Lock()
_PREVIOUS_SIGTERM: Any = None


def _umask() -> int:
    try:  # Linux ≥ 4.7 reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_prefix(name: str) -> str:
    return f".{name}.tmp-{_HOST}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporaries of ``target`` left by dead processes of this host; returns what was removed."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:tmp|old)-{re.escape(_HOST)}-(\d+)(?:-.*)?$")
    removed: list[Path] = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def staging_directory(target: str | os.PathLike[str]) -> Path:
    """A new empty directory beside ``target``, named as this module's temporaries (host and PID), for work that
    replaces ``target`` only once it has succeeded (``train --overwrite``); stale ones of dead processes are
    removed first, so a run killed with SIGKILL leaves nothing behind after the next one."""
    target = Path(target)
    remove_stale_temporaries(target)
    return Path(tempfile.mkdtemp(prefix=_tmp_prefix(target.name), dir=target.parent))


def _on_sigterm(signum: int, frame: Any) -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for path in live:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    previous = _PREVIOUS_SIGTERM
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # die of SIGTERM as before, so the exit status says so
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def _tracked(path: Path) -> Iterator[None]:
    """Remove ``path`` on SIGTERM while the block runs (main thread only; elsewhere the next write cleans up)."""
    global _PREVIOUS_SIGTERM
    installed = False
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGTERM)
        if current is not _on_sigterm and current is not signal.SIG_IGN:
            _PREVIOUS_SIGTERM = current if callable(current) else None
            signal.signal(signal.SIGTERM, _on_sigterm)
            installed = True
    with _LIVE_LOCK:
        _LIVE.add(path)
    try:
        yield
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(path)
        if installed:
            signal.signal(signal.SIGTERM, current)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target`` that replaces it only when the block succeeds.

    Raises :class:`OutputExistsError` up front if ``target`` exists and is not empty, unless ``overwrite``.
    The temporary is removed if the block fails or the process gets SIGTERM; temporaries of ``target`` left by
    dead processes (a SIGKILL) are removed first. The directory's mode follows the umask.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise OutputExistsError(f"output {target} already exists and is not empty; pass overwrite (--overwrite) to replace it")
    _make_parent(target)
    try:
        tmp = staging_directory(target)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    with _tracked(tmp):
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
            yield tmp
            _follow_umask(tmp)
            if target.exists():
                old = target.parent / f".{target.name}.old-{_HOST}-{os.getpid()}"
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            if isinstance(exc, FrameworkError):
                raise
            raise _write_error(target, exc) from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _follow_umask(root: Path) -> None:
    """Give what was written under ``root`` the modes the umask asks for (safetensors writes files 0600)."""
    mask = _umask()
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~mask)


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    """The one-line error for an ``OSError`` while writing ``path`` (a full or read-only disk...)."""
    return OutputWriteError(f"cannot write {path}: {exc.strerror or exc}")


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create {target.parent} for {target}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that replaces it when the block succeeds (mode per the umask);
    the same cleanup as :func:`atomic_directory`. An ``OSError`` becomes one :class:`OutputWriteError`."""
    path = Path(path)
    _make_parent(path)
    remove_stale_temporaries(path)
    try:
        fd, name = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    tmp = Path(name)
    with _tracked(tmp):
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
            yield tmp
            os.replace(tmp, path)
        except OSError as exc:
            if isinstance(exc, FrameworkError):
                raise
            raise _write_error(path, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename (see :func:`atomic_file`)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_adapter(state: AdapterState, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``state`` as a PEFT adapter directory that ``PeftModel.from_pretrained`` loads.

    ``state.metadata`` (language, task, provenance) goes to ``adamergex.json`` and the safetensors header.
    Raises :class:`OutputExistsError` if ``directory`` holds files and ``overwrite`` is false.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    typ: AdapterType = ADAPTERS.get(state.kind)
    config, weights = typ.to_peft(state)
    config = dict(config)
    config["base_model_name_or_path"] = state.base_model or None
    meta = json.loads(json.dumps(state.metadata, default=str))
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
        try:
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "adamergex": json.dumps(meta)})
        except SafetensorError as exc:  # safetensors reports a full or read-only disk as its own error
            raise OutputWriteError(f"cannot write {Path(directory) / WEIGHTS_NAME}: {exc}") from exc
        (tmp / META_NAME).write_text(json.dumps({**meta, KIND_KEY: state.kind}, indent=2, sort_keys=True) + "\n")
    return Path(directory)


