"""AdaMergeX merge speed on Llama-2-7B-shaped LoRA adapters: exact factored route vs the dense-SVD route.

Three LoRA adapters (task, ref_source, ref_target) with r=8 on all seven projections of 32 layers (224 matrices,
random factors) are merged with the registered ``adamergex`` strategy and compressed back to rank 8. The fast
route never forms a ``d×d`` matrix (QR of the stacked factors + an SVD of a 24×24 core). The baseline is the
dense route of PEFT's ``svd`` combination: form each merged ``ΔW`` and run a full SVD. The dense route is timed
on ``--dense-samples`` matrices of each of the three shapes and scaled to all 224 (it is slow), and on those
matrices the two results are compared (relative Frobenius difference of the rank-8 updates).

It then times ``adamergex merge`` as a user runs it: a fresh process reading the three adapters as PEFT
directories and writing the rank-``k`` merge, next to a fresh process that only imports torch and safetensors
(interleaved, ``--cli-repeats`` each, medians). The difference is what the command costs beyond the merge's
own libraries: its imports (PEFT and transformers must not be among them), reading, merging and writing.

Run: ``python benchmarks/merge_speed.py`` (about 1–2 minutes on a 2-core CPU, most of it the dense samples).
Goals: ≥ 1000× faster than the dense route, same result to 1e-4 relative, whole merge < 2 s (issue #2);
``adamergex merge`` at most 2 s slower than ``import torch, safetensors`` (issue #8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from adamergex.adapter_state import AdapterState
from adamergex.merging import merge
from adamergex.registry import ADAPTERS

HIDDEN, FFN, LAYERS = 4096, 11008, 32
SHAPES = {  # module → (out, in)
    "self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN), "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN), "mlp.gate_proj": (FFN, HIDDEN), "mlp.up_proj": (FFN, HIDDEN),
    "mlp.down_proj": (HIDDEN, FFN),
}


def make_adapter(seed: int, rank: int, language: str) -> AdapterState:
    g = torch.Generator().manual_seed(seed)
    params, scaling = {}, {}
    for layer in range(LAYERS):
        for name, (out_f, in_f) in SHAPES.items():
            m = f"base_model.model.model.layers.{layer}.{name}"
            params[m] = {"lora_A": torch.randn(rank, in_f, generator=g) / in_f**0.5,
                         "lora_B": torch.randn(out_f, rank, generator=g) * 0.01}
            scaling[m] = 16 / rank
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": sorted({n.split(".")[1] for n in SHAPES})}
    return AdapterState("lora", "llama-2-7b-shaped", params, config, scaling, metadata={"language": language})


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x - ref) / torch.linalg.matrix_norm(ref))


def _wall(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def time_cli(adapters: dict[str, AdapterState], rank: int, t: float, repeats: int) -> dict[str, float]:
    """Median wall time of ``adamergex merge`` in a fresh process against a fresh ``import torch, safetensors``."""
    from adamergex.io import load_adapter, save_adapter

    with tempfile.TemporaryDirectory(prefix="adamergex-merge-bench-") as tmp:
        root = Path(tmp)
        for role, state in adapters.items():
            save_adapter(state, root / role)
        merge_cmd = [sys.executable, "-c", "from adamergex.cli import console; console()", "merge",
                     "--strategy", "adamergex", "--task", str(root / "task"), "--ref-source", str(root / "ref_source"),
                     "--ref-target", str(root / "ref_target"), "--param", f"t={t}", "--rank", str(rank),
                     "--output", str(root / "out"), "--overwrite"]
        import_cmd = [sys.executable, "-c", "import torch, safetensors.torch"]
        _wall(import_cmd)  # warm the file cache for both
        _wall(merge_cmd)
        cli, bare = [], []
        for _ in range(repeats):
            bare.append(_wall(import_cmd))
            cli.append(_wall(merge_cmd))
        written = load_adapter(root / "out")
        expected = merge("adamergex", adapters, {"t": t}, rank=rank).output
        same = all(torch.equal(written.params[m][n], expected.params[m][n]) for m in expected.params
                   for n in expected.params[m])
    return {"cli_merge_s": statistics.median(cli), "import_torch_safetensors_s": statistics.median(bare),
            "cli_minus_imports_s": statistics.median(cli) - statistics.median(bare), "cli_output_equals_library": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--t", type=float, default=1.0)
    parser.add_argument("--dense-samples", type=int, default=1, help="matrices per shape for the dense route")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=32, help="transformer layers (32 for Llama-2-7B)")
    parser.add_argument("--cli-repeats", type=int, default=3, help="fresh-process runs of each command (0: skip)")
    args = parser.parse_args()
    global LAYERS
    LAYERS = args.layers
    adapters = {"task": make_adapter(1, args.rank, "en"), "ref_source": make_adapter(2, args.rank, "en"),
                "ref_target": make_adapter(3, args.rank, "fr")}
    lora = ADAPTERS.get("lora")

    # Exact merge (no compression): concatenation, memory bound.
    merge("adamergex", adapters, {"t": args.t})  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        exact = merge("adamergex", adapters, {"t": args.t}).output
        times.append(time.perf_counter() - t0)
    exact_s = min(times)
    moved = sum(t.numel() * t.element_size() for s in adapters.values() for _, t in s.tensors())
    moved += sum(t.numel() * t.element_size() for _, t in exact.tensors())

    # Fast route: the registered strategy + exact factored SVD to rank k.
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast_result = merge("adamergex", adapters, {"t": args.t}, rank=args.rank)
        times.append(time.perf_counter() - t0)
    fast, fast_report = fast_result.output, fast_result.compression
    fast_s = min(times)
    assert fast_report is not None

    # Dense route on samples of each shape (torch's default threads, as PEFT runs it): form the float32
    # ΔW = Σ wᵢ sᵢ Bᵢ Aᵢ, full SVD, keep the top k. A float64 dense SVD of the first sample is the exact reference.
    weights = {"task": 1.0, "ref_target": args.t, "ref_source": -args.t}
    dense_total, rel_f32, rel_f64, rel_err, samples = 0.0, 0.0, 0.0, 0.0, 0
    for name, (out_f, in_f) in SHAPES.items():
        if name not in ("self_attn.q_proj", "mlp.gate_proj", "mlp.down_proj"):
            continue
        per_shape = sum(1 for n in SHAPES.values() if n == (out_f, in_f)) * LAYERS
        shape_times = []
        for layer in range(args.dense_samples):
            m = f"base_model.model.model.layers.{layer}.{name}"
            t0 = time.perf_counter()
            delta = sum(w * adapters[r].scaling[m] * (adapters[r].params[m]["lora_B"] @ adapters[r].params[m]["lora_A"])
                        for r, w in weights.items())
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            dense_k = (u[:, : args.rank] * s[: args.rank]) @ vh[: args.rank]
            shape_times.append(time.perf_counter() - t0)
            fast_k = lora.delta(fast, m, torch.float64)
            rel_f32 = max(rel_f32, _rel(fast_k, dense_k.double()))
            optimal = float(s[args.rank :].double().square().sum().sqrt())
            reported = fast_report["per_module"][m]["error"]
            rel_err = max(rel_err, abs(reported - optimal) / optimal)
            if samples == 0:
                d64 = sum(
                    w * adapters[r].scaling[m] * (adapters[r].params[m]["lora_B"].double() @ adapters[r].params[m]["lora_A"].double())
                    for r, w in weights.items())
                u64, s64, vh64 = torch.linalg.svd(d64, full_matrices=False)
                rel_f64 = _rel(fast_k, (u64[:, : args.rank] * s64[: args.rank]) @ vh64[: args.rank])
            samples += 1
        dense_total += sum(shape_times) / len(shape_times) * per_shape
    ratio = dense_total / fast_s
    result = {
        "matrices": len(exact.params), "rank": args.rank, "threads": torch.get_num_threads(),
        "fast_merge_rank_k_s": round(fast_s, 4), "dense_route_estimated_s": round(dense_total, 1),
        "dense_samples": samples, "speedup_vs_dense": round(ratio, 1),
        "max_rel_diff_vs_float32_dense": rel_f32, "rel_diff_vs_float64_dense_first_sample": rel_f64,
        "max_rel_diff_of_truncation_error": rel_err,
        "exact_merge_s": round(exact_s, 4), "exact_merge_GB_per_s": round(moved / exact_s / 1e9, 2),
    }
    if args.cli_repeats:
        result.update({k: round(v, 3) if isinstance(v, float) else v
                       for k, v in time_cli(adapters, args.rank, args.t, args.cli_repeats).items()})
    print(json.dumps(result, indent=2))
    print(f"ratio (dense route / adamergex rank-{args.rank} merge): {ratio:.0f}x  "
          f"[goal >= 1000x; same result to 1e-4: {rel_f64:.1e} vs float64 dense, {rel_f32:.1e} vs the float32 "
          f"dense route; whole merge {fast_s:.2f} s, goal < 2 s]")
    if args.cli_repeats:
        print(f"adamergex merge in a fresh process: {result['cli_merge_s']:.2f} s, import torch+safetensors "
              f"{result['import_torch_safetensors_s']:.2f} s, difference {result['cli_minus_imports_s']:.2f} s "
              f"[goal <= 2 s]; ratio {result['cli_merge_s'] / result['import_torch_safetensors_s']:.2f}")


if __name__ == "__main__":
    main()
