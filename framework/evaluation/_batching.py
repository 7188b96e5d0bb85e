"""Model facts and batching helpers shared by the scoring primitives of :mod:`adamergex.scoring`.

What a model is (sequence classifier, masked LM), how long its inputs may be, which token ids pad and end a text,
how requests are padded and grouped into longest-first batches, and how prompts are tokenised the way the model
reads them (:class:`_Encoder`). Import the public names from :mod:`adamergex.scoring`.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..models import unwrap

if TYPE_CHECKING:
    import torch


# -- model and tokenizer facts ---------------------------------------------------------------------------------
def model_max_length(model: Any, tokenizer: Any, max_length: int | None = None) -> int:
    """``max_length`` if given, else the smaller of the model's position limit and the tokenizer's (2048 when
    neither says)."""
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length must be an integer of at least 2, got {max_length!r}")
        return max_length
    limits = []
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:  # transformers uses a huge int for "no limit"
        limits.append(tok_limit)
    return min(limits) if limits else 2048


def _device(model: Any) -> torch.device:
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for p in model.parameters():
        return p.device  # type: ignore[no-any-return]
    return torch.device("cpu")


def _forward_params(model: Any) -> set[str]:
    """Named parameters of the underlying model's ``forward`` (``**kwargs`` does not count)."""
    try:
        params = inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):
        return set()
    return {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    gen_cfg = getattr(model, "generation_config", None)
    eos = getattr(gen_cfg, "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0  # attention masks hide padding; any id in the vocabulary does


@contextlib.contextmanager
def _inference(model: Any) -> Iterator[None]:
    import torch

    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _progress(total: int, desc: str | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=desc is None, leave=False, file=sys.stderr, unit="batch")


def _pad(rows: Sequence[Sequence[int]], value: int, *, left: bool, device: torch.device) -> torch.Tensor:
    """``(B, T)`` tensor of ``rows`` padded with ``value`` to the longest, on the left or the right."""
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            if left:
                out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            else:
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of ``batch_size``, longest first (so a too-large batch fails at once)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _Encoder:
    """Tokenises prompts the way the model reads them: the tokenizer's leading special tokens (BOS), then text."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.prefix = self._special_prefix(tokenizer)
        # A continuation needs a token before it. Without a prompt or a BOS the tokenizer adds itself, EOS starts
        # the text, as between the documents of packed training data (BOS where there is no EOS).
        bos = getattr(tokenizer, "bos_token_id", None)
        self.start = self.prefix or _eos_ids(model, tokenizer)[:1] or ([int(bos)] if bos is not None else [])

    @staticmethod
    def _special_prefix(tokenizer: Any) -> list[int]:
        probe = "a"
        with_specials = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
        plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        for s in range(len(with_specials) - len(plain) + 1):
            if with_specials[s : s + len(plain)] == plain:
                return with_specials[:s]
        return []

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def context(self, ids: list[int]) -> list[int]:
        """``ids`` behind the special prefix; the start token alone when both are empty."""
        if self.prefix or ids:
            return self.prefix + ids
        if not self.start:
            raise ConfigError(
                "an empty prompt needs a BOS or EOS token to condition on, and the tokenizer has neither"
            )
        return list(self.start)
