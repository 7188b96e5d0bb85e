"""Tuning throughput: trials per minute of ``adamergex tune``'s path against a naive per-trial loop.

Both routes score the same AdaMergeX merges (the ``t`` values the tuner's sampler drew, in the same order) on the
same validation data with the synthetic world's base model (``adamergex.tasks.world.model.load_base_model``):

* **tuner**: :func:`adamergex.tuning.tune` with :func:`adamergex.tuning.evaluation_objective`, as ``adamergex
  tune`` runs it: the model and adapters are loaded once; the objective tokenises the validation data at the
  first trial and wraps the model with PEFT once, and every trial merges and writes the merge into that wrapper
  in place (:class:`adamergex.evaluation.PreparedEvaluation`);
* **naive**: per trial, load the base model (and tokenizer) from the world cache, load the three adapters from
  their PEFT directories, merge them, and :func:`adamergex.evaluation.evaluate` the merge (which wraps the model
  with PEFT, loads and tokenises the data, scores, and unwraps).

The adapters are LoRA (or (IA)³ with ``--adapter-type ia3``) with random weights, made as in ``tests/_adapters.py``
and saved as PEFT directories: scoring costs the same whatever the weights are. The forward passes of the base
model are timed by wrapping its ``forward`` (PEFT calls ``model.forward`` directly, so a forward hook would miss
them); a trial's **overhead** is the share of its time spent outside them (merging, Optuna, writing tensors,
log-softmax over the kept logits, and, on the naive route, loading, wrapping and tokenising). Per-trial scores of
the two routes are checked to be equal (they must be, bit for bit).

Run: ``python benchmarks/tune_throughput.py`` (one torch thread; the first run builds and caches the default world
model, about a minute on a 2-core CPU); ``--size tiny --trials 4`` for a quick look. Goal (issue #10, item 5):
ratio ≥ 10 and tuner overhead under 5% on the default model. Seen (2-core CPU, load average 7.5 from other
developers' jobs while it ran, one thread, LoRA r=8 on q/k/v/o, world_nli/lex, 10 trials per route):

* ``--limit 64``: tuner 402 trials/min, naive 180, ratio 2.23; tuner overhead 60% of all ``tune()`` time (the
  first trial tokenises and wraps; each trial merges, with provenance fingerprints, in ``tune()``), 13.9% of the
  objective's time after the first trial. Scores identical on both routes.
* ``--limit 300`` (the whole validation split, what ``adamergex tune`` reads by default): 170 vs 75 trials/min,
  ratio 2.25; overhead 18.1% of ``tune()``, 8.6% of the objective after the first trial. Scores identical.

Short of the goal because the naive loop is cheap on this model: the world model (262k parameters) loads from
local safetensors in tens of milliseconds, and the world's data is generated once per process and cached, so
the naive route's per-trial cost is mostly its own forward passes (55–70% of its time), which the tuner pays
too. A forward over 16 sequences takes a few milliseconds, so merging, Optuna and bookkeeping (~2–5 ms per
trial) cannot be under 5% of it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def clock_forward(model: Any, clock: list[float]) -> None:
    """Add the wall time of every call of ``model.forward`` to ``clock[0]`` (signature kept for the harness)."""
    inner = model.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - start

    model.forward = forward


def make_adapters(model: Any, kind: str, rank: int, out: Path) -> dict[str, Path]:
    """Three adapters (task, ref_source, ref_target) with random weights, saved as PEFT directories."""
    import copy

    from peft import IA3Config, LoraConfig, get_peft_model

    from adamergex.io import save_adapter, state_from_peft_model

    dirs = {}
    for seed, role in enumerate(("task", "ref_source", "ref_target"), start=1):
        if kind == "ia3":
            cfg: Any = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                                 task_type="CAUSAL_LM")
        else:
            cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                             init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(copy.deepcopy(model), cfg)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                elif "ia3_l" in name:
                    p.copy_(1.0 + 0.3 * torch.rand(p.shape, generator=g) - 0.15)
        dirs[role] = save_adapter(state_from_peft_model(peft_model), out / role)
    return dirs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="default", help="world base model preset: default or tiny")
    parser.add_argument("--task", default="world_nli", help="registered task scored (default: world_nli)")
    parser.add_argument("--languages", default="lex", help="comma-separated target languages")
    parser.add_argument("--limit", type=int, default=64, help="validation examples per language")
    parser.add_argument("--trials", type=int, default=10, help="trials per route")
    parser.add_argument("--adapter-type", default="lora", choices=("lora", "ia3"))
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of each input adapter")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the cores are shared)")
    parser.add_argument("--cache-dir", help="world model cache root (default: $ADAMERGEX_CACHE or ~/.cache/adamergex)")
    parser.add_argument("--pretrain-steps", type=int, help="override the world model's pretraining steps (tests)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import optuna

    from adamergex.evaluation import evaluate
    from adamergex.io import load_adapter
    from adamergex.merging import merge
    from adamergex.tasks.world.model import load_base_model
    from adamergex.tuning import evaluation_objective, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    langs = [x.strip() for x in args.languages.split(",") if x.strip()]
    load_avg_start = os.getloadavg()
    model_options: dict[str, Any] = {"cache_dir": args.cache_dir}
    if args.pretrain_steps is not None:
        model_options["steps"] = args.pretrain_steps
    base = load_base_model(args.size, **model_options)  # builds and caches the model on first use
    with tempfile.TemporaryDirectory() as tmp:
        dirs = make_adapters(base.model, args.adapter_type, args.rank, Path(tmp))
        # Warm-up, untimed: imports, the world's data generation (cached per process) and the kernels, so that
        # neither route pays for them and the order of the routes does not matter.
        evaluate(base.model, base.tokenizer, args.task, langs, limit=args.limit, batch_size=args.batch_size,
                 purpose="tuning", progress=False)
        optuna.create_study(sampler=optuna.samplers.TPESampler(seed=args.seed)).optimize(lambda trial: 0.0,
                                                                                         n_trials=1)

        # -- tuner: the path of `adamergex tune` ---------------------------------------------------------------
        model, tokenizer = base.model, base.tokenizer
        forward = [0.0]
        clock_forward(model, forward)
        states = {role: load_adapter(d) for role, d in dirs.items()}
        objective = evaluation_objective(model, tokenizer, args.task, langs, limit=args.limit,
                                         batch_size=args.batch_size, seed=0)
        tuner_trials: list[dict[str, Any]] = []

        def recorded(merged: Any, trial: optuna.Trial) -> float:
            start, fwd = time.perf_counter(), forward[0]
            value = objective(merged, trial)
            tuner_trials.append({"params": dict(trial.params), "value": value,
                                 "objective_s": time.perf_counter() - start, "forward_s": forward[0] - fwd})
            return value

        start = time.perf_counter()
        tune("adamergex", states, recorded, n_trials=args.trials, seed=args.seed)
        tuner_s = time.perf_counter() - start
        tuner_forward_s = forward[0]

        # -- naive: everything again, every trial -------------------------------------------------------------
        naive_trials: list[dict[str, Any]] = []
        start = time.perf_counter()
        for record in tuner_trials:
            trial_start = time.perf_counter()
            loaded = load_base_model(args.size, progress=False, **model_options)
            clock = [0.0]
            clock_forward(loaded.model, clock)
            inputs = {role: load_adapter(d) for role, d in dirs.items()}
            merged = merge("adamergex", inputs, record["params"]).output
            result = evaluate(loaded.model, loaded.tokenizer, args.task, langs, adapter=merged, limit=args.limit,
                              batch_size=args.batch_size, seed=0, purpose="tuning", progress=False)
            values = [sorted(s.items())[0][1] for s in result.scores.values()]
            value = sum(values) / len(values)  # as the objective averages
            naive_trials.append({"value": value, "trial_s": time.perf_counter() - trial_start, "forward_s": clock[0]})
        naive_s = time.perf_counter() - start

    n = len(tuner_trials)
    tuner_rate, naive_rate = 60 * n / tuner_s, 60 * n / naive_s
    naive_forward_s = sum(t["forward_s"] for t in naive_trials)
    steady = tuner_trials[1:] or tuner_trials
    steady_overhead = 1 - sum(t["forward_s"] for t in steady) / sum(t["objective_s"] for t in steady)
    identical = [t["value"] for t in tuner_trials] == [t["value"] for t in naive_trials]
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s)"
    print(f"{args.task} {langs}, {args.limit} validation examples per language, {args.adapter_type} "
          f"(rank {args.rank}), {n} trials per route, world model {args.size!r} ({base.config.hidden_size} wide, "
          f"{base.config.layers} layers)")
    print(f"machine: {machine}; load average {load_avg_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"  {'route':<8} {'seconds':>9} {'trials/min':>11} {'forward s':>10} {'overhead':>9}")
    print(f"  {'tuner':<8} {tuner_s:9.2f} {tuner_rate:11.1f} {tuner_forward_s:10.2f} "
          f"{1 - tuner_forward_s / tuner_s:9.1%}")
    print(f"  {'naive':<8} {naive_s:9.2f} {naive_rate:11.1f} {naive_forward_s:10.2f} "
          f"{1 - naive_forward_s / naive_s:9.1%}")
    print(f"ratio tuner / naive trials per minute: {tuner_rate / naive_rate:.2f}")
    print(f"tuner overhead outside forward passes: {1 - tuner_forward_s / tuner_s:.1%} of all tune() time, "
          f"{steady_overhead:.1%} of the objective's time after the first trial (which tokenises and wraps)")
    print(f"per-trial scores identical on both routes: {identical}")
    summary = {
        "benchmark": "tune_throughput", "git_sha": git_sha(), "machine": machine, "size": args.size,
        "task": args.task, "languages": langs, "limit": args.limit, "adapter_type": args.adapter_type,
        "rank": args.rank, "trials": n, "batch_size": args.batch_size, "tuner_s": tuner_s, "naive_s": naive_s,
        "tuner_trials_per_min": tuner_rate, "naive_trials_per_min": naive_rate, "ratio": tuner_rate / naive_rate,
        "tuner_overhead": 1 - tuner_forward_s / tuner_s, "tuner_steady_objective_overhead": steady_overhead,
        "naive_overhead": 1 - naive_forward_s / naive_s, "scores_identical": identical,
        "load_average": [load_avg_start[0], os.getloadavg()[0]],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
