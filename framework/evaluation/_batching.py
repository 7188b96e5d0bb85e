"""Model facts and batching helpers shared by the scoring primitives of :mod:`adamergex.scoring`.

What a model is (sequence classifier, masked LM), how long its inputs may be, which token ids pad and end a text,
how requests are padded and grouped into longest-first batches, and how prompts are tokenised the way the model
reads them (:class:`_Encoder`), and log-likelihood requests padded into batches once (:class:`_SequencePlan`). Import the public names from :mod:`adamergex.scoring`.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    # Switching modes walks every module; a model already all in eval mode (every tuning trial) is left alone.
    switch = any(m.training for m in model.modules())
    if switch:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if switch:
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


# -- log-likelihood requests, batched once -----------------------------------------------------------------------
def _last_logits(
    model: Any, params: set[str], input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int
) -> torch.Tensor:
    """Logits ``(B, keep, V)`` of the last ``keep`` positions of a left-padded batch (``params``: the named
    parameters of the model's ``forward``)."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "position_ids" in params:  # left padding: positions count real tokens only
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if "use_cache" in params:
        kwargs["use_cache"] = False
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = keep
    elif "num_logits_to_keep" in params:
        kwargs["num_logits_to_keep"] = keep
    logits: torch.Tensor = model(**kwargs).logits
    return logits[:, -keep:]


_LOGSOFTMAX_ELEMENTS = 2**26  # float32 elements per log-softmax chunk (256 MiB), so long windows fit


@dataclass(frozen=True)
class _Batch:
    """One padded batch of a :class:`_SequencePlan` and where its continuation tokens go."""

    input_ids: torch.Tensor  # (B, T) left-padded model input
    mask: torch.Tensor  # (B, T)
    keep: int  # logits needed at the end of each row
    rows: torch.Tensor  # (N,) N = continuation tokens answered by the batch: row of each
    cols: torch.Tensor  # (N,) the position (among the last ``keep``) that predicts it
    gold: torch.Tensor  # (N,) the token
    owner: torch.Tensor  # (N,) the request it belongs to (on the CPU)


class _SequencePlan:
    """Log-likelihood requests grouped, padded and indexed once; :meth:`run` scores them on any model that reads
    the same tokens (the base model, or it carrying any adapter), so a tuning study tokenises and pads once.

    The model reads ``seqs[i][:-1]`` and its logits at the last ``n_conts[i]`` positions are scored. Requests
    that read the same tokens share one row: the choices of a multiple-choice example whose continuations are
    single tokens (``yes``/``maybe``/``no``) cost one forward pass, not one each. Batches are longest first.
    """

    def __init__(
        self, seqs: Sequence[list[int]], n_conts: Sequence[int], *, pad_id: int, batch_size: int,
        device: torch.device,
    ) -> None:
        import torch

        by_input: dict[tuple[int, ...], list[int]] = {}  # model input -> the requests it answers
        for i, seq in enumerate(seqs):
            by_input.setdefault(tuple(seq[:-1]), []).append(i)
        rows_ids, members = list(by_input), list(by_input.values())
        keep = [max(n_conts[i] for i in m) for m in members]
        self.size = len(seqs)
        self._model: Any = None
        self._params: set[str] = set()
        self.batches: list[_Batch] = []
        for idx in _batches([len(r) for r in rows_ids], batch_size):
            k = max(keep[r] for r in idx)
            b_idx: list[int] = []
            cols: list[int] = []
            gold: list[int] = []
            owner: list[int] = []
            for b, r in enumerate(idx):
                for i in members[r]:
                    n = n_conts[i]
                    b_idx += [b] * n
                    cols += range(k - n, k)  # the positions that predict the last n tokens of seqs[i]
                    gold += seqs[i][-n:]
                    owner += [i] * n
            self.batches.append(_Batch(
                input_ids=_pad([rows_ids[r] for r in idx], pad_id, left=True, device=device),
                mask=_pad([[1] * len(rows_ids[r]) for r in idx], 0, left=True, device=device),
                keep=k, rows=torch.tensor(b_idx, device=device), cols=torch.tensor(cols, device=device),
                gold=torch.tensor(gold, device=device), owner=torch.tensor(owner),
            ))

    def run(self, model: Any, progress: str | None = None) -> list[float]:
        """Summed log-probability of each request's continuation under ``model`` (call in :func:`_inference`)."""
        import torch

        if self._model is not model:  # inspect.signature costs a millisecond; a study scores one model
            self._model, self._params = model, _forward_params(model)
        params = self._params
        totals = torch.zeros(self.size, dtype=torch.float64)  # (R,) summed log-probability per request
        with _progress(len(self.batches), progress) as bar:
            for batch in self.batches:
                logits = _last_logits(model, params, batch.input_ids, batch.mask, batch.keep)  # (B, k, V)
                n = len(batch.rows)
                token_lp = torch.empty(n, device=logits.device, dtype=torch.float32)  # (N,)
                chunk = max(1, _LOGSOFTMAX_ELEMENTS // logits.shape[-1])
                for s in range(0, n, chunk):
                    picked = logits[batch.rows[s : s + chunk], batch.cols[s : s + chunk]].float()  # (c, V)
                    token_lp[s : s + chunk] = (
                        picked.gather(-1, batch.gold[s : s + chunk, None]).squeeze(-1) - picked.logsumexp(-1)
                    )
                totals.index_add_(0, batch.owner, token_lp.double().cpu())
                bar.update(1)
        return totals.tolist()
