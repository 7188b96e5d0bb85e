"""Evaluation throughput: log-likelihood scoring of multiple-choice examples against a bare forward pass.

XNLI-shaped examples (a premise of 10–60 words, a question naming the three options, three one-word choices) are
scored with :func:`adamergex.evaluation.score_choices`, which tokenises, batches every (example, choice) pair
longest first, runs the model with logits only for the continuation positions and takes log-softmax there;
pairs that feed the model the same tokens share one row, so one-token choices cost one pass per example. The
baseline is a bare ``model(input_ids, attention_mask)`` over every (example, choice) sequence in the same padded
batches (full logits, nothing computed from them, tokenisation not timed): what scoring each pair apart costs. A second reference is the same forward
asking for the last position's logits only (``logits_to_keep=1``): the least any scoring of these tokens can
cost, so the ratio to it is the harness's own overhead. All are measured in the same run, interleaved; medians
and best times of ``--repeats`` are printed (on a shared machine the best is the least disturbed run).

The default model is a Llama-shaped decoder built in code (vocabulary 32,000 as Llama-2, 4 layers, width 128), so
the script runs offline (``--hidden-size``/``--layers`` make it larger); ``--model PATH`` scores a real checkpoint.

Run: ``python benchmarks/eval_throughput.py --threads 1`` (about a minute on a busy 2-core CPU);
``python benchmarks/eval_throughput.py --device cuda --dtype bfloat16 --hidden-size 2048 --layers 16 --examples 512
--batch-size 32`` (seconds on a GPU). Goal (issue #3): report scoring throughput as a ratio to the bare forward
over the same tokens. Seen (ratio = harness examples/s ÷ bare-forward examples/s, medians):

* 2-core CPU, defaults with ``--threads 1``, since choices share rows: 12.22 (199.5 vs 16.3 examples/s; 2.10
  times the last-logit forward over every pair, which still runs three sequences per example). Before sharing,
  on the same machine under load 5–6: 3.86 (28.8 vs 7.5 examples/s; 0.86 of the last-logit forward). With torch's default 2 threads the same run gave 2.24 (median) to 3.95 (best):
  there, threads contend and timings swing several-fold between repeats.
* NVIDIA H200 (before sharing; not rerun since), defaults with ``--device cuda --examples 256 --batch-size 32``
  (float32): 0.69 (1973 vs 2862
  examples/s: launch-bound, so tokenisation and bookkeeping show).
* NVIDIA H200 (before sharing), the ~0.8B-parameter bf16 command above: 0.91 (786 vs 859 examples/s); 0.89 of the last-logit
  forward.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch

from adamergex.evaluation import model_max_length, score_choices
from adamergex.evaluation._batching import _batches, _Encoder, _pad, _pad_id
from adamergex.evaluation._scoring import _requests
from adamergex.task import Example
from adamergex.tiny import tiny_llama, train_tokenizer

CHOICES = (" True", " Neither", " False")


def make_examples(n: int, seed: int) -> tuple[list[Example], list[str]]:
    """``n`` XNLI-shaped examples over a seeded synthetic vocabulary, and a corpus to train a tokenizer on."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "la", "chi", "dan", "er", "ol"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)})
    examples = []
    for _ in range(n):
        premise = " ".join(rng.choice(words) for _ in range(rng.randint(10, 60)))
        hypothesis = " ".join(rng.choice(words) for _ in range(rng.randint(5, 15)))
        prompt = f"{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:"
        examples.append(Example(prompt=prompt, choices=CHOICES, label=rng.randrange(3)))
    corpus = [ex.prompt + c for ex in examples[:200] for c in CHOICES]
    return examples, corpus


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint path or Hub id (default: a Llama-shaped model built in code)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=128, help="width of the built-in model")
    parser.add_argument("--layers", type=int, default=4, help="layers of the built-in model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)

    examples, corpus = make_examples(args.examples, args.seed)
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    else:
        tokenizer = train_tokenizer(corpus, vocab_size=2000)
        width = args.hidden_size
        model = tiny_llama(32000, hidden_size=width, layers=args.layers, heads=max(1, width // 64),
                           intermediate_size=int(width * 8 / 3) // 8 * 8, max_positions=1024, seed=args.seed,
                           name_or_path="llama-shaped").to(dtype)
    model.to(device).eval()

    # The exact token sequences and batches the harness builds (same code path), for the bare forward.
    pairs = [(ex.prompt, c) for ex in examples for c in ex.choices]
    seqs, _, _ = _requests(_Encoder(model, tokenizer), pairs, model_max_length(model, tokenizer))
    pad_id = _pad_id(tokenizer)
    sorted_batches = _batches([len(s) for s in seqs], args.batch_size)
    input_order = [list(range(i, min(i + args.batch_size, len(seqs)))) for i in range(0, len(seqs), args.batch_size)]
    padded = []
    for idx in sorted_batches:
        rows = [seqs[i] for i in idx]
        padded.append((_pad(rows, pad_id, left=True, device=device),
                       _pad([[1] * len(r) for r in rows], 0, left=True, device=device)))

    def bare(**kwargs: Any) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for input_ids, mask in padded:
                    model(input_ids=input_ids, attention_mask=mask, **kwargs)

        return run

    runs: dict[str, Callable[[], Any]] = {
        "harness": lambda: score_choices(model, tokenizer, examples, batch_size=args.batch_size),
        "bare_forward": bare(),
        "bare_forward_last_logit": bare(logits_to_keep=1),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so a slow spell on a shared machine hits every route
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}  # on a shared machine the least disturbed run
    throughput = {name: len(examples) / t for name, t in median.items()}
    tokens = sum(len(s) for s in seqs)
    padded_tokens = {
        "sorted": sum(len(b) * max(len(seqs[i]) for i in b) for b in sorted_batches),
        "unsorted": sum(len(b) * max(len(seqs[i]) for i in b) for b in input_order),
    }

    print(f"{len(examples)} examples × {len(CHOICES)} choices = {len(seqs)} sequences, {tokens} tokens "
          f"(padded: {padded_tokens['sorted']} sorted, {padded_tokens['unsorted']} unsorted); "
          f"batch {args.batch_size}, {device} {args.dtype}, {torch.get_num_threads()} threads")
    print(f"  {'route':<24} {'median s':>9} {'best s':>9} {'examples/s (median)':>20}")
    for name in runs:
        print(f"  {name:<24} {median[name]:9.3f} {best[name]:9.3f} {throughput[name]:20.1f}")
    ratio = median["bare_forward"] / median["harness"]
    for ref, what in (("bare_forward", "bare forward over the same batches"),
                      ("bare_forward_last_logit", "forward with the last logit only")):
        print(f"ratio harness / {what}: {median[ref] / median['harness']:.2f} (median), "
              f"{best[ref] / best['harness']:.2f} (best)")
    print(json.dumps({
        "benchmark": "eval_throughput", "git_sha": git_sha(), "device": str(device), "dtype": args.dtype,
        "model": args.model or f"llama-shaped (vocab 32000, {args.layers} layers, width {args.hidden_size})",
        "examples": len(examples), "sequences": len(seqs), "tokens": tokens, "padded_tokens": padded_tokens,
        "batch_size": args.batch_size, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "seconds": times, "examples_per_second": throughput, "ratio_vs_bare_forward": ratio,
        "ratio_vs_bare_forward_best": best["bare_forward"] / best["harness"],
        "ratio_vs_last_logit_forward": median["bare_forward_last_logit"] / median["harness"],
    }))


if __name__ == "__main__":
    main()
