"""A pool of worker processes for independent jobs (adapter trainings; merges and evaluations) on one machine.

Used by :func:`adamergex.recipes.ablate.run_pool` (and so by ``adamergex demo``).

The world's models are so small that one training step is dominated by per-operation overhead, which a second
intra-op thread does not shorten; a second *process* does. :func:`job_pool` therefore runs jobs in ``workers``
processes with ``threads`` torch threads each, or inline (``workers=1``, the same code path, no pool).

Workers read their inputs (base model, tokenizer, tasks) from a *context* that is built once: on Linux the pool
forks after the parent has built it (copy-on-write, nothing reloaded, as PyTorch's own ``DataLoader`` workers
do); where ``fork`` is unavailable or unsafe (macOS, Windows) each spawned worker builds it again from
``build(*args)``. Jobs are module-level functions that read :func:`context` and return plain data (adapters
travel through the adapter cache, not the pipes), so results are the same whichever way they ran.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

__all__ = ["context", "default_workers", "job_pool"]

_CONTEXT: Any = None


def default_workers() -> int:
    """The CPU cores this process may use (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def context() -> Any:
    """The context of the pool this process belongs to (the parent's, inline)."""
    if _CONTEXT is None:
        raise RuntimeError("no job context: call jobs only inside job_pool()")
    return _CONTEXT


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _init_spawned(threads: int | None, build: Callable[..., Any], args: tuple[Any, ...]) -> None:
    global _CONTEXT
    _set_threads(threads)
    _CONTEXT = build(*args)


class _Inline(Executor):
    """Runs each job as it is submitted, in this process (``workers=1``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, as a pool would
            future.set_exception(exc)
        return future


def _start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    # fork only where it is the platform's safe default for this stack (Linux); macOS's system libraries are
    # not fork-safe, and Windows has no fork.
    return "fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn"


@contextlib.contextmanager
def job_pool(
    ctx: Any, *, workers: int, threads: int | None, build: Callable[..., Any], build_args: tuple[Any, ...]
) -> Iterator[Executor]:
    """An executor whose jobs see ``ctx`` through :func:`context`.

    Args:
        ctx: The parent's context (used inline and inherited by forked workers).
        workers: Processes; 1 runs jobs inline in this process.
        threads: Torch intra-op threads per worker (``None``: leave torch's setting; inline, the caller's).
        build, build_args: How a spawned worker builds its own copy of the context (module-level, picklable).
    """
    global _CONTEXT
    previous = _CONTEXT
    _CONTEXT = ctx
    try:
        if workers <= 1:
            yield _Inline()
            return
        method = _start_method()
        # The tokenizer may have run its Rust thread pool in this process; forked children must not use it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if method == "fork":
            initializer: Callable[..., None] = _set_threads
            initargs: tuple[Any, ...] = (threads,)
        else:
            initializer, initargs = _init_spawned, (threads, build, build_args)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=initializer,
                                   initargs=initargs)
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    finally:
        _CONTEXT = previous
