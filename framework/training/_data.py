"""One ``LightningDataModule`` for any registered task: tokenisation, packing, masking and collation.

:class:`TaskDataModule` loads a task's examples (Hub or local ``data_files``) through the task contract
(:mod:`adamergex.task`), turns them into token ids for one training *objective*, and serves them in a seeded,
deterministic order. The objective follows from the model being trained:

==========================  =====================  ====================================================
objective                   task kinds             what one training item is
==========================  =====================  ====================================================
``causal_lm``               ``language_modeling``  documents packed end to end (EOS between) into chunks of
                                                   ``max_length`` tokens; loss on every token. With the task's
                                                   ``packing="lines"``: one padded item per line (or
                                                   ``"lines_packed"``: whole lines per item); loss off padding
``causal_lm``               other kinds            ``prompt`` + ``target`` (or ``choices[label]``) + EOS;
                                                   labels ``-100`` on the prompt, loss on the target only
``masked_lm``               ``language_modeling``  packed chunks wrapped in CLS/SEP, 15% of tokens selected
                                                   (80% mask / 10% random / 10% kept); labels only there.
                                                   ``packing`` as for ``causal_lm`` (``[CLS] line [SEP]``)
``sequence_classification`` ``classification``     ``(Example.text, Example.text_pair)`` → ``Example.label``
``seq2seq_lm``              other kinds            encoder input ``prompt``, decoder labels ``target``
==========================  =====================  ====================================================

Order and sharding (what makes runs repeatable): training batches are drawn from one endless stream, the
concatenation of seeded permutations of the training set (permutation ``e`` uses seed ``seed + e``, as
``torch.utils.data.DistributedSampler`` does). Micro-batch ``k`` of the whole run is stream positions
``[k·B, (k+1)·B)`` with ``B`` the global micro-batch (per-device batch × world size); rank ``r`` takes its
``r``-th contiguous slice. Hence one process with batch ``B`` and ``n`` processes with batch ``B/n`` see the same
examples in every optimiser step, and a resumed run continues at micro-batch ``global_step × accumulation``.
Training length is therefore always counted in optimiser steps (``max_steps``), never epochs.
MLM masking is static, drawn once per chunk from ``(seed, chunk index)``, for the same reason.

Layout: this module holds the dataset, the order (:class:`StreamBatchSampler`), collation and the DataModule; the
encoding step (:func:`encode_examples`, :func:`mask_tokens`, :func:`data_fingerprint`) lives in ``_encoding`` and
packing in :mod:`adamergex.packing`. Import the public names from :mod:`adamergex.training`.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError
from ..models import Objective
from ..task import DataFiles, Example, Task, get_task
from ._encoding import IGNORE_INDEX, Packing, data_fingerprint, encode_examples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ._config import DataConfig

__all__ = ["Collator", "EncodedDataset", "StreamBatchSampler", "TaskDataModule"]


# -- datasets, order, collation ---------------------------------------------------------------------------------
class EncodedDataset(Dataset[dict[str, Any]]):
    """Encoded items held in memory."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def _check_group(group_by_length: int) -> None:
    if isinstance(group_by_length, bool) or not isinstance(group_by_length, int) or group_by_length < 0:
        raise ConfigError(f"group_by_length must be 0 (off) or a positive number of batches, got {group_by_length!r}")


class StreamBatchSampler(Sampler[list[int]]):
    """Endless seeded batches for one rank (see the module docstring for the order and sharding contract).

    Args:
        size: Number of training items.
        batch_size: Items per batch on this rank.
        world_size: Number of ranks sharing each global micro-batch.
        rank: This rank.
        seed: Seed of permutation 0 (permutation ``e`` uses ``seed + e``).
        start: Global micro-batch index to start at (resumption).
        lengths: Token count of each item; needed by ``group_by_length``.
        group_by_length: Global micro-batches per length-grouped window (0: off). The stream is cut into windows
            of that many global micro-batches; within a window the items are sorted by length and cut into
            micro-batches again, whose order is then shuffled (seeded by window). Every item still comes once per
            pass and the order stays a function of ``(seed, k)``, so sharding and resumption hold, while padded
            batches shrink to about the items' own lengths (the ``group_by_length`` of Hugging Face's Trainer).
    """

    def __init__(self, size: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0,
                 start: int = 0, lengths: Sequence[int] | None = None, group_by_length: int = 0) -> None:
        if size <= 0:
            raise ConfigError("the training set is empty")
        _check_group(group_by_length)
        if group_by_length and (lengths is None or len(lengths) != size):
            raise ConfigError(f"group_by_length needs one length per item ({size}), got "
                              f"{'none' if lengths is None else len(lengths)}")
        self.size, self.batch_size, self.world_size, self.rank = size, batch_size, world_size, rank
        self.seed, self.start = seed, start
        self.lengths, self.group = lengths, group_by_length
        self._perms: dict[int, torch.Tensor] = {}
        self._window: tuple[int, list[list[int]]] | None = None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))}
        return int(self._perms[epoch][offset])

    def _global_batch(self, k: int) -> list[int]:
        """Item indices of global micro-batch ``k`` (all ranks)."""
        width = self.batch_size * self.world_size
        if not self.group:
            return [self._index(p) for p in range(k * width, (k + 1) * width)]
        w, j = divmod(k, self.group)
        if self._window is None or self._window[0] != w:
            first = w * self.group * width
            items = [self._index(p) for p in range(first, first + self.group * width)]
            lengths = self.lengths
            assert lengths is not None
            items.sort(key=lambda i: lengths[i])  # stable: equal lengths keep their stream order
            batches = [items[b * width: (b + 1) * width] for b in range(self.group)]
            order = torch.randperm(self.group, generator=torch.Generator().manual_seed(
                (self.seed * 1_000_003 + w) % (2**63)))  # one seeded order per window
            self._window = (w, [batches[int(b)] for b in order])
        return self._window[1][j]

    def batch(self, k: int) -> list[int]:
        """Item indices of this rank's part of global micro-batch ``k``."""
        first = self.rank * self.batch_size
        return self._global_batch(k)[first: first + self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            yield self.batch(k)
            k += 1


@dataclass
class Collator:
    """Pads a list of items into a batch of tensors (right padding; labels padded with ``-100``)."""

    pad_id: int = 0
    pad_to_multiple_of: int | None = None
    """Round padded lengths up to a multiple of this (8 helps tensor cores); ``None`` pads to the longest."""

    def _pad(self, seqs: Sequence[np.ndarray], value: int) -> torch.Tensor:
        n = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            n = math.ceil(n / self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = torch.full((len(seqs), n), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        return out

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [np.asarray(it["input_ids"]) for it in items]
        if "labels" not in items[0]:  # packed causal LM: equal lengths, no padding, labels are the inputs
            input_ids = torch.as_tensor(np.stack(ids), dtype=torch.long)
            return {"input_ids": input_ids, "labels": input_ids.clone()}
        batch = {"input_ids": self._pad(ids, self.pad_id)}
        lengths = torch.as_tensor([len(s) for s in ids])
        batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1])[None, :] < lengths[:, None]).long()
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = self._pad([np.asarray(it["token_type_ids"]) for it in items], 0)
        if isinstance(items[0]["labels"], int):
            batch["labels"] = torch.as_tensor([it["labels"] for it in items], dtype=torch.long)
        else:
            batch["labels"] = self._pad([np.asarray(it["labels"]) for it in items], IGNORE_INDEX)
        return batch


# -- the DataModule ----------------------------------------------------------------------------------------------
_SETUP_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()
"""Per tokenizer (dropped with it), the encoded data of recent :meth:`TaskDataModule.setup` calls."""
_CACHE_ENTRIES = 8
_CACHE_MAX_ITEMS = 50_000
"""Larger datasets are not kept: their encoding is cheap next to training on them, and memory is not."""


class TaskDataModule(pl.LightningDataModule):
    """Training (and optional validation) data of a registered task in one or more languages.

    Args:
        task: Registered task name or a task instance.
        language: Language code, or several (their examples are concatenated in the order given).
        tokenizer: Tokenizer of the model (may arrive later through :meth:`connect`).
        objective: Training objective (see the module table; may arrive through :meth:`connect`).
        data_files: Local files in the task's schema instead of the Hub (one path, or paths per split). With
            several languages, a mapping from language to such a value.
        batch_size: Items per device per micro-batch.
        max_length: Tokens per item (chunk length for language modelling); ``None``: the task's
            ``chunk_length`` if it has one, else 512.
        train_split: Split to train on.
        val_split: Split to validate on (``None``: no validation).
        limit: Keep a seeded random subset of this many raw training examples per language.
        val_limit: The same for validation.
        seed: Seeds the subset, the order and MLM masking.
        mlm_probability: Masking rate; ``None``: the task's ``mlm_probability`` if it has one, else 0.15.
        pad_to_multiple_of: See :class:`Collator`.
        num_workers: DataLoader worker processes (items are pre-tokenised, so 0 is usually enough).
        group_by_length: Training batches drawn from length-sorted windows of this many global micro-batches
            (0: off; see :class:`StreamBatchSampler`). Less padding, hence less compute, for items of mixed length.
        task_options: Field overrides when ``task`` is a name (``get_task(name, **task_options)``).

    Raises:
        UnknownNameError: unknown task, language or split (listing the known ones).
        ConfigError: a bad option; on :meth:`setup`, a data file lacking a column the task needs.
    """

    @classmethod
    def from_config(
        cls,
        task: str | Task,
        language: str | Sequence[str],
        tokenizer: PreTrainedTokenizerBase | None,
        objective: Objective | None,
        data: DataConfig,
        *,
        seed: int = 0,
    ) -> TaskDataModule:
        """The data module of a training run's :class:`~adamergex.training.DataConfig` (validated there)."""
        return cls(task, language, tokenizer, objective, data_files=data.data_files, batch_size=data.batch_size,
                   max_length=data.max_length, train_split=data.train_split, val_split=data.val_split,
                   limit=data.limit, val_limit=data.val_limit, seed=seed, group_by_length=data.group_by_length,
                   task_options=data.task_options)

    def __init__(
        self,
        task: str | Task = "",
        language: str | Sequence[str] = "",
        tokenizer: PreTrainedTokenizerBase | None = None,
        objective: Objective | None = None,
        data_files: DataFiles | Mapping[str, DataFiles] | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        limit: int | None = None,
        val_limit: int | None = None,
        seed: int = 0,
        mlm_probability: float | None = None,
        pad_to_multiple_of: int | None = None,
        num_workers: int = 0,
        group_by_length: int = 0,
        task_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.task: Task = get_task(task, **dict(task_options or {})) if isinstance(task, str) else task
        self.languages: tuple[str, ...] = (language,) if isinstance(language, str) else tuple(language)
        if not self.languages:
            raise ConfigError(f"language must name at least one language; task {self.task.name!r} has: "
                              f"{', '.join(self.task.languages)}")
        for lang in self.languages:
            self.task.check_language(lang)
        for split in (train_split, val_split):
            if split is not None:
                Task.check_split(split)
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        self.tokenizer = tokenizer
        self.objective = objective
        self.data_files = data_files
        self.batch_size = batch_size
        self.max_length = max_length
        self.train_split, self.val_split = train_split, val_split
        self.limit, self.val_limit = limit, val_limit
        self.seed = seed
        self.mlm_probability = mlm_probability
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_workers = num_workers
        _check_group(group_by_length)
        self.group_by_length = group_by_length
        self.train_set: EncodedDataset | None = None
        self.val_set: EncodedDataset | None = None
        self.fingerprint: str = ""
        self.label_counts: dict[int, int] = {}

    def connect(
        self,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        objective: Objective | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        seed: int | None = None,
    ) -> None:
        """Late settings that depend on the model (Lightning-AI/litgpt ``DataModule.connect``); before setup."""
        if self.train_set is not None:
            raise ConfigError("connect() must be called before setup(); the data is already encoded")
        self.tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        self.objective = objective if objective is not None else self.objective
        self.batch_size = batch_size if batch_size is not None else self.batch_size
        self.max_length = max_length if max_length is not None else self.max_length
        self.seed = seed if seed is not None else self.seed

    # -- resolved settings ------------------------------------------------------------------------------------
    @property
    def resolved_max_length(self) -> int:
        if self.max_length is not None:
            return self.max_length
        if self.task.kind == "language_modeling":
            return int(getattr(self.task, "chunk_length", 512))
        return 512

    @property
    def resolved_mlm_probability(self) -> float:
        if self.mlm_probability is not None:
            return self.mlm_probability
        return float(getattr(self.task, "mlm_probability", 0.15))

    @property
    def resolved_packing(self) -> Packing:
        """The task's ``packing`` (reference tasks), else ``stream``; only language modelling reads it."""
        packing: Packing = getattr(self.task, "packing", "stream")
        return packing

    def _files_for(self, language: str) -> DataFiles | None:
        files: Any = self.data_files
        if files is None or isinstance(files, str) or len(self.languages) == 1:
            return files  # type: ignore[no-any-return]
        if language not in files:
            raise ConfigError(f"data_files has no entry for language {language!r}; it has {sorted(files)}")
        return files[language]  # type: ignore[no-any-return]

    def load_examples(self, split: str, limit: int | None) -> list[Example]:
        """Formatted examples of ``split`` in every language of the module, in language order."""
        out: list[Example] = []
        for lang in self.languages:
            ds = self.task.load(lang, split, data_files=self._files_for(lang), limit=limit, seed=self.seed)
            out.extend(self.task.format(row) for row in ds.to_list())  # one Arrow conversion, not one per row
        if not out:
            raise ConfigError(f"task {self.task.name!r} has no {split!r} examples for {', '.join(self.languages)}")
        return out

    def _encode(self, examples: Sequence[Example], *, seed: int) -> list[dict[str, Any]]:
        if self.tokenizer is None or self.objective is None:
            raise ConfigError("TaskDataModule needs a tokenizer and an objective (pass them or call connect())")
        return encode_examples(
            examples, tokenizer=self.tokenizer, objective=self.objective, task_kind=self.task.kind,
            task_name=self.task.name, max_length=self.resolved_max_length, seed=seed,
            mlm_probability=self.resolved_mlm_probability, packing=self.resolved_packing,
        )

    def _cache_key(self) -> tuple[Any, ...] | None:
        """What determines the encoded data, or ``None`` when it may change between calls (local files)."""
        if self.data_files is not None or self.tokenizer is None:
            return None
        # the seed draws limited subsets and MLM masks; otherwise it orders batches only, which is not cached
        seeded = self.limit is not None or self.val_limit is not None or self.objective == "masked_lm"
        key = (self.task, self.languages, self.train_split, self.val_split, self.limit, self.val_limit,
               self.seed if seeded else None, self.objective, self.resolved_max_length,
               self.resolved_mlm_probability, len(self.tokenizer), getattr(self.tokenizer, "name_or_path", None))
        try:
            hash(key)
        except TypeError:  # a task with unhashable fields is simply not cached
            return None
        return key

    # -- Lightning hooks -------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load, format and encode the data (once; later calls do nothing).

        Within a process, the encoded data of a (task, languages, splits, limits, seed, objective, lengths,
        tokenizer) seen before is reused (Hub and generated data only; local ``data_files`` are always read), so
        runs that train several adapters on the same data (seeds, adapter types, sweeps) encode it once.
        """
        if self.train_set is not None:
            return
        key = self._cache_key()
        cached = _SETUP_CACHE.get(self.tokenizer, {}).get(key) if key is not None else None
        if cached is not None:
            self.train_set, self.val_set, self.label_counts, self.fingerprint = cached
            return
        self._setup_uncached()
        if key is not None and len(self.train_set or []) + len(self.val_set or []) <= _CACHE_MAX_ITEMS:
            per_tokenizer = _SETUP_CACHE.setdefault(self.tokenizer, {})
            while len(per_tokenizer) >= _CACHE_ENTRIES:
                per_tokenizer.pop(next(iter(per_tokenizer)))  # the oldest entry
            per_tokenizer[key] = (self.train_set, self.val_set, self.label_counts, self.fingerprint)

    def _setup_uncached(self) -> None:
        examples = self.load_examples(self.train_split, self.limit)
        items = self._encode(examples, seed=self.seed)
        self.train_set = EncodedDataset(items)
        if self.objective == "sequence_classification":
            self.label_counts = dict(sorted(Counter(int(it["labels"]) for it in items).items()))
        assert self.tokenizer is not None
        header = {
            "task": self.task.name, "languages": list(self.languages), "split": self.train_split,
            "objective": self.objective, "max_length": self.resolved_max_length,
            "tokenizer": type(self.tokenizer).__name__, "vocab_size": len(self.tokenizer),
        }
        if self.resolved_packing != "stream":  # absent for stream, so earlier fingerprints stay valid
            header["packing"] = self.resolved_packing
        self.fingerprint = data_fingerprint(items, header)
        if self.val_split is not None:
            val = self.load_examples(self.val_split, self.val_limit)
            self.val_set = EncodedDataset(self._encode(val, seed=self.seed + 1))

    @property
    def collator(self) -> Collator:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else None
        if pad is None and tok is not None:
            pad = tok.eos_token_id  # decoders often lack a pad token; padded positions are masked anyway
        return Collator(pad_id=int(pad or 0), pad_to_multiple_of=self.pad_to_multiple_of)

    def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        """Endless batches for this rank, starting where the trainer's restored step count says (resumption).

        Shards by itself (see the module docstring): build the ``Trainer`` with
        ``use_distributed_sampler=False``.
        """
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        trainer = self.trainer
        world, rank, start = 1, 0, 0
        if trainer is not None:
            world, rank = trainer.world_size, trainer.global_rank
            start = trainer.global_step * trainer.accumulate_grad_batches
        sampler = StreamBatchSampler(len(self.train_set), self.batch_size, world_size=world, rank=rank,
                                     seed=self.seed, start=start, group_by_length=self.group_by_length,
                                     lengths=[len(it["input_ids"]) for it in self.train_set.items]
                                     if self.group_by_length else None)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=self.collator,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]] | list[Any]:
        """Validation batches of this rank (an empty list, which Lightning skips, without ``val_split``)."""
        if self.val_set is None:
            return []
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        indices = list(range(rank, len(self.val_set), world))
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        return DataLoader(self.val_set, batch_sampler=batches, collate_fn=self.collator,
                          num_workers=self.num_workers)

    def steps_per_epoch(self, *, world_size: int = 1, accumulate: int = 1) -> int:
        """Optimiser steps that see every training item about once."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return max(1, math.ceil(len(self.train_set) / (self.batch_size * world_size * accumulate)))
