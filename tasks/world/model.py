"""The world's base model: a small Llama pretrained from scratch on the reference text of every language.

:func:`load_base_model` returns it, building it on first use: a byte-level BPE tokenizer is trained on the
reference corpora (``adamergex.tiny.train_tokenizer``), a Llama-architecture decoder is initialised from the
config, and a plain PyTorch loop pretrains it on the ``world_reference`` train split of all four languages packed
into chunks. The result is cached under ``$ADAMERGEX_CACHE/world/<config-hash>/`` (default cache root
``~/.cache/adamergex``) as ``save_pretrained`` safetensors, the tokenizer and ``manifest.json`` (the config, its
hash and the SHA-256 of every file). The directory is written atomically (temporary sibling + rename).

A cached model is used only if its manifest names the same config and every file matches its checksum; otherwise
it is rebuilt, with a message saying why (or refused with :class:`WorldCacheError` when ``rebuild="never"``).
Nothing here needs ``trust_remote_code`` or the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from adamergex.errors import AdapterFormatError, ConfigError, UnknownNameError

from .grammar import LANGUAGES

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

__all__ = [
    "PRESETS",
    "BaseModel",
    "BaseModelConfig",
    "WorldCacheError",
    "cache_root",
    "load_base_model",
    "model_dir",
    "pretraining_texts",
    "verify_model_dir",
]

FORMAT_VERSION = 1
"""Bumped whenever the data, tokenizer or training recipe changes what a config builds (part of the hash)."""
MANIFEST = "manifest.json"


class WorldCacheError(AdapterFormatError):
    """A cached base model is corrupt, incomplete, or was built from another config."""


@dataclass(frozen=True)
class BaseModelConfig:
    """Everything that determines the base model (hashed into its cache key)."""

    world_seed: int = 0
    """Seed of the world whose reference text the model learns."""
    vocab_size: int = 1024
    """Size of the byte-level BPE vocabulary trained on the reference corpora."""
    hidden_size: int = 64
    """Width of the decoder."""
    layers: int = 2
    """Number of decoder layers."""
    heads: int = 4
    """Attention heads per layer."""
    intermediate_size: int = 256
    """Width of the MLP."""
    chunk_length: int = 128
    """Tokens per pretraining sequence (articles packed end to end, EOS between them)."""
    articles: int = 800
    """Reference-text articles per language in the pretraining corpus (the ``world_reference`` train split)."""
    chronicles: float = 0.3
    """Share of chronicle entries among the reference articles (``world_reference.chronicles``)."""
    parallel: float = 0.0
    """Share of articles that appear as a bilingual pair (the source article followed by the same article in a
    target language, in one document) instead of two separate articles: the knob for cross-lingual alignment."""
    code_switch: float = 0.0
    """Share of source articles added once more in code-switched form: each word swapped, with probability one
    half, for its ``lex`` or ``sov`` counterpart (one of the two per article). The knob for word-level
    alignment; ``morph`` is never code-switched."""
    steps: int = 600
    """Optimiser steps."""
    batch_size: int = 16
    """Sequences per step."""
    lr: float = 3e-3
    """Peak learning rate (AdamW, linear warm-up over the first 10% of steps, cosine decay to 10%)."""
    seed: int = 0
    """Seed of the initialisation and the batch order."""
    tokenizer: Literal["bpe", "word"] = "bpe"
    """``bpe``: byte-level BPE of ``vocab_size`` tokens. ``word``: one token per word form of the reference text of
    every language (``vocab_size`` is then ignored): a one-to-one relabelling of words (``lex``) is a one-to-one
    relabelling of token ids, which the positive control needs."""
    held_out: tuple[str, ...] = ()
    """Languages whose reference text trains the tokenizer but is left out of the pretraining corpus: the model
    has rows for their tokens but never saw them used (the positive control's unseen target)."""
    frame_flip: int = 0
    """0: off. ``k > 0``: after pretraining, every ``lex`` word's rows of ``embed_tokens`` and ``lm_head`` are its
    ``src`` twin's with ``k`` channels sign-flipped, and the shared tokens are kept at 0 on those channels during
    pretraining: ``lex`` is ``src`` in a flipped frame of the residual stream, the positive control in which
    AdaMergeX's assumption holds by construction (:mod:`.frame`). Needs ``tokenizer="word"`` and ``lex`` held out."""

    _LISTS = ("held_out",)
    _DEFAULTS_UNHASHED = {"tokenizer": "bpe", "held_out": (), "frame_flip": 0}
    """Fields added after caches existed: left out of :meth:`to_dict` at their defaults, so old cache keys hold."""

    def __post_init__(self) -> None:
        if self.tokenizer not in ("bpe", "word"):
            raise ConfigError(f"base model tokenizer must be bpe or word, got {self.tokenizer!r}")
        held = tuple(self.held_out) if isinstance(self.held_out, (list, tuple)) else self.held_out
        object.__setattr__(self, "held_out", held)
        if not isinstance(held, tuple) or any(lang not in LANGUAGES[1:] for lang in held) or len(set(held)) != len(held):
            raise ConfigError(f"base model held_out must name distinct target languages among {list(LANGUAGES[1:])}, "
                              f"got {self.held_out!r}")
        if self.parallel or self.code_switch:
            if set(held) & {"lex", "sov"} and self.code_switch or held and self.parallel:
                raise ConfigError("base model held_out languages would reach pretraining through parallel or "
                                  "code_switch; set those to 0 with held_out")
        if self.frame_flip:
            if isinstance(self.frame_flip, bool) or not isinstance(self.frame_flip, int) \
                    or not 0 < self.frame_flip <= self.hidden_size:
                raise ConfigError(f"base model frame_flip must be an integer in 0..hidden_size ({self.hidden_size}), "
                                  f"got {self.frame_flip!r}")
            if self.tokenizer != "word" or "lex" not in held:
                raise ConfigError("base model frame_flip needs tokenizer='word' and 'lex' in held_out (lex must be a "
                                  f"token-level relabelling the model never saw); got tokenizer={self.tokenizer!r}, "
                                  f"held_out={list(held)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("tokenizer", "held_out", "frame_flip"):
                continue
            if f.name == "lr":
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise ConfigError(f"base model lr must be a positive number, got {value!r}")
                continue
            if f.name in ("parallel", "chronicles", "code_switch"):
                if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                    raise ConfigError(f"base model {f.name} must be in [0, 1], got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"base model {f.name} must be an integer, got {value!r}")
            if f.name not in ("world_seed", "seed") and value <= 0:
                raise ConfigError(f"base model {f.name} must be positive, got {value!r}")
        if self.hidden_size % self.heads:
            raise ConfigError(f"base model hidden_size must be divisible by heads, got {self.hidden_size} and {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (``tokenizer`` and ``held_out`` only when not at their defaults)."""
        out = dataclasses.asdict(self)
        for name, default in self._DEFAULTS_UNHASHED.items():
            if out[name] == default:
                del out[name]
        if "held_out" in out:
            out["held_out"] = list(out["held_out"])
        return out

    def config_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the fields and :data:`FORMAT_VERSION` (the cache key)."""
        blob = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PRESETS: dict[str, BaseModelConfig] = {
    "default": BaseModelConfig(),
    "tiny": BaseModelConfig(
        vocab_size=384, hidden_size=32, layers=2, heads=2, intermediate_size=64, chunk_length=64, articles=120,
        steps=40, batch_size=16, lr=1e-2,
    ),
}
PRESETS["control"] = dataclasses.replace(PRESETS["default"], tokenizer="word", held_out=("lex",))
PRESETS["control_tiny"] = dataclasses.replace(PRESETS["tiny"], tokenizer="word", held_out=("lex",), steps=150)
PRESETS["flip"] = dataclasses.replace(PRESETS["control"], frame_flip=32)
PRESETS["flip_tiny"] = dataclasses.replace(PRESETS["control_tiny"], frame_flip=16)
"""Named sizes: ``default`` (about a minute of pretraining on two CPU cores) and ``tiny`` (seconds; tests); the
positive control's ``control`` and ``control_tiny``: the same, with a word-level tokenizer and ``lex`` held out of
pretraining (see ``tasks/world/README.md``, "The positive control")."""


def get_config(size: str | BaseModelConfig, **overrides: Any) -> BaseModelConfig:
    """A preset by name (or a config), with field ``overrides``; unknown names list the presets."""
    if isinstance(size, BaseModelConfig):
        cfg = size
    elif size in PRESETS:
        cfg = PRESETS[size]
    else:
        raise UnknownNameError(f"unknown base model size {size!r}; available: {', '.join(sorted(PRESETS))}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


@dataclass
class BaseModel:
    """A loaded base model with its tokenizer, cache directory and config."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    path: Path
    config: BaseModelConfig
    built: bool
    """Whether this call pretrained it (``False``: loaded from the cache)."""


def cache_root() -> Path:
    """``$ADAMERGEX_CACHE`` if set, else ``~/.cache/adamergex`` (XDG ``$XDG_CACHE_HOME`` respected)."""
    env = os.environ.get("ADAMERGEX_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "adamergex"


def model_dir(cfg: BaseModelConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the model of ``cfg`` is cached: ``<cache root>/world/<config hash>``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "world" / cfg.config_hash()


def tokenizer_texts(cfg: BaseModelConfig) -> list[str]:
    """What the tokenizer is trained on: the pretraining corpus, the held-out languages' reference articles, and
    one line per language listing every word of its lexicon and every name (so that, with ``tokenizer="word"``,
    each word any task can write is one token, whether or not the reference text happens to use it)."""
    from .corpus import get_setting
    from .reference import WorldReferenceTask
    from .grammar import VERBS

    texts = pretraining_texts(cfg)
    task = WorldReferenceTask(world_seed=cfg.world_seed, train_size=cfg.articles, chronicles=cfg.chronicles)
    for lang in cfg.held_out:
        texts += task.generate(lang, "train")["text"]
    setting = get_setting(cfg.world_seed)
    names = (*setting.world.names, *setting.world.towns)
    for code in LANGUAGES:
        language = setting.languages[code]
        words = set(language.words()) | {language.write(n) for n in names} | {str(d) for d in range(100)}
        if language.morphology:  # inflected forms: stem (+ plural) (+ case); names + case; verb (+ neg) + present
            lx = language.lexicon
            cases = ["", lx["ACC"], lx["LOC"], lx["DAT"]]
            verbs = set(VERBS)
            for lemma, stem in lx.items():
                if lemma in verbs:
                    words |= {language.write(stem + neg + lx["PRS"]) for neg in ("", lx["NEG"])}
                elif not lemma.isupper():
                    words |= {language.write(stem + pl + c) for pl in ("", lx["PL"]) for c in cases}
            words |= {language.write(n + c) for n in names for c in cases}
        texts.append(" ".join(sorted(words)))
    return texts


def pretraining_texts(cfg: BaseModelConfig) -> list[str]:
    """The pretraining corpus: the ``world_reference`` train articles of every language, interleaved; a share
    ``cfg.parallel`` of them joined into source + target pairs (the target language cycling through the others)."""
    from .corpus import get_setting
    from .reference import WorldReferenceTask
    from .world import rng_for

    setting = get_setting(cfg.world_seed)

    task = WorldReferenceTask(world_seed=cfg.world_seed, train_size=cfg.articles, chronicles=cfg.chronicles)
    per_lang = {lang: task.generate(lang, "train")["text"] for lang in LANGUAGES}
    source, targets = LANGUAGES[0], LANGUAGES[1:]
    rng = rng_for("pretraining", cfg.world_seed, cfg.parallel)
    texts: list[str] = []
    for i in range(cfg.articles):
        paired = targets[i % len(targets)] if rng.random() < cfg.parallel else None
        if paired is not None:
            texts.append(per_lang[source][i] + " " + per_lang[paired][i])
        texts += [per_lang[lang][i] for lang in LANGUAGES
                  if (paired is None or lang not in (source, paired)) and lang not in cfg.held_out]
        if rng.random() < cfg.code_switch:
            lexicon = setting.languages[("lex", "sov")[i % 2]].lexicon
            words = per_lang[source][i].split()
            texts.append(" ".join(lexicon.get(w, w) if rng.random() < 0.5 else w for w in words))
    return texts


# -- cache checks ---------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_model_dir(path: str | os.PathLike[str], cfg: BaseModelConfig) -> None:
    """Raise :class:`WorldCacheError` saying what is wrong unless ``path`` holds the intact model of ``cfg``."""
    path = Path(path)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorldCacheError(f"{path} has no {MANIFEST} (an interrupted or foreign build)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorldCacheError(f"{manifest_path} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise WorldCacheError(f"{manifest_path} must hold an object with a 'files' table")
    if manifest.get("config_hash") != cfg.config_hash() or manifest.get("config") != cfg.to_dict():
        raise WorldCacheError(
            f"{path} was built from another config (hash {manifest.get('config_hash')!r}, expected "
            f"{cfg.config_hash()!r})"
        )
    for name, digest in sorted(manifest["files"].items()):
        file = path / name
        if not file.is_file():
            raise WorldCacheError(f"{path} lacks {name}, listed in its manifest")
        if _sha256(file) != digest:
            raise WorldCacheError(f"{file} does not match the checksum in its manifest (corrupt or modified)")


# -- building -------------------------------------------------------------------------------------------------------
def _pack(tokenizer: PreTrainedTokenizerFast, texts: list[str], length: int) -> Any:
    import torch

    ids: list[int] = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    usable = len(ids) // length * length
    if usable == 0:
        raise ConfigError(f"the pretraining corpus has {len(ids)} tokens, fewer than one chunk of {length}")
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, length)


def _pretrain(cfg: BaseModelConfig, out: Path, *, progress: bool) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from adamergex.tiny import tiny_llama, train_tokenizer, train_word_tokenizer

    started = time.perf_counter()
    texts = pretraining_texts(cfg)
    if cfg.tokenizer == "word":
        tokenizer = train_word_tokenizer(tokenizer_texts(cfg))
    else:
        tokenizer = train_tokenizer(tokenizer_texts(cfg) if cfg.held_out else texts, vocab_size=cfg.vocab_size)
    chunks = _pack(tokenizer, texts, cfg.chunk_length)  # (n_chunks, chunk_length)
    model = tiny_llama(
        len(tokenizer), hidden_size=cfg.hidden_size, layers=cfg.layers, heads=cfg.heads,
        intermediate_size=cfg.intermediate_size, max_positions=max(256, cfg.chunk_length), seed=cfg.seed,
        name_or_path=str(out),
    )
    flip = None
    if cfg.frame_flip:
        from .frame import apply_flip, constrain_shared, flip_sign, shared_rows, word_pairs

        pairs = word_pairs(tokenizer, cfg.world_seed)
        flip = (shared_rows(len(tokenizer), pairs), flip_sign(cfg.hidden_size, cfg.frame_flip, cfg.seed))
        constrain_shared(model, *flip)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, cfg.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, cfg.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    order = torch.randperm(len(chunks), generator=gen)
    cursor, loss_value = 0, float("nan")
    bar = tqdm(range(cfg.steps), desc="pretraining world base model", disable=not progress, leave=False)
    for _ in bar:
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(chunks), generator=gen), 0
        batch = chunks[order[cursor: cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if flip is not None:
            constrain_shared(model, *flip)
        loss_value = float(loss.detach())
        bar.set_postfix(loss=f"{loss_value:.3f}")
    bar.close()
    if flip is not None:
        apply_flip(model, pairs, flip[1])
    model.eval()
    with _transformers_bars(progress):
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return {
        "final_loss": loss_value,
        "tokens": int(chunks.numel()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _build(cfg: BaseModelConfig, target: Path, *, progress: bool) -> None:
    """Pretrain into a temporary sibling of ``target`` and rename it into place (replacing a bad cache)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        stats = _pretrain(cfg, tmp, progress=progress)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"config": cfg.to_dict(), "config_hash": cfg.config_hash(), "files": files, "training": stats}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished the same build first; keep its copy if it is intact
            verify_model_dir(target, cfg)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars (loading, writing shards) on or off, as ``progress`` says; restored after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def load_base_model(
    size: str | BaseModelConfig = "default",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    rebuild: Literal["auto", "always", "never"] = "auto",
    progress: bool = True,
    **overrides: Any,
) -> BaseModel:
    """The base model of ``size`` (a preset name or a config, with field ``overrides``), from the cache or built.

    Args:
        size: ``"default"``, ``"tiny"`` or a :class:`BaseModelConfig`.
        cache_dir: Cache root (default :func:`cache_root`); the model lives in ``<root>/world/<config hash>``.
        rebuild: ``"auto"`` rebuilds a missing, corrupt or mismatched cache (printing why), ``"always"`` rebuilds
            regardless, ``"never"`` refuses anything but an intact cache.
        progress: Show a progress bar while pretraining.

    Raises:
        UnknownNameError: unknown preset name.
        ConfigError: invalid config field.
        WorldCacheError: with ``rebuild="never"``, the cache is missing, corrupt or from another config.
    """
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    if rebuild not in ("auto", "always", "never"):
        raise ConfigError(f"rebuild must be one of auto, always, never; got {rebuild!r}")
    cfg = get_config(size, **overrides)
    path = model_dir(cfg, cache_dir)
    built = False
    if rebuild == "always":
        _build(cfg, path, progress=progress)
        built = True
    else:
        try:
            verify_model_dir(path, cfg)
        except WorldCacheError as exc:
            if rebuild == "never":
                raise
            if path.exists():
                print(f"adamergex: rebuilding the world base model: {exc}", file=sys.stderr)
            _build(cfg, path, progress=progress)
            built = True
    try:
        with _transformers_bars(progress):
            model = LlamaForCausalLM.from_pretrained(path, local_files_only=True)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # checksums passed, so this is a version mismatch; say so instead of a traceback
        raise WorldCacheError(f"could not load the world base model from {path}: {exc}") from exc
    model.config._name_or_path = str(path)
    model.name_or_path = str(path)
    model.eval()
    return BaseModel(model=model, tokenizer=tokenizer, path=path, config=cfg, built=built)
