"""Time the sampling kernels against their torch references and a plain read of their input (the memory-bound floor).

    python -m vllm_ptp.bench.kernels_bench [--vocab 8192 32000 49152 128256] [--rows 1 8 64 512] [--dtype bf16]

On CUDA (with triton) each operation is timed three ways: the Triton kernel, the torch reference on the same device,
and `x.sum(-1)` over the same input (one read of it: what a streaming kernel cannot beat). Elsewhere only the reference
and the floor are timed (the Triton kernels need CUDA). Prints a Markdown table of milliseconds per call.
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from vllm_ptp.kernels import reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RANK = 4  # CP mixture components for cp_posterior


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, min_seconds: float = 0.2, max_reps: int = 100) -> float:
    """Median milliseconds per call: one warm-up, then repeats until min_seconds or max_reps. On CUDA, triton's
    do_bench (CUDA events, L2 flushed between calls), so a kernel is not timed out of a warm cache."""
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=10, rep=max(20, int(min_seconds * 1000)), return_mode="median"))
    fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_seconds or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


def _cases(N: int, V: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator(device="cpu").manual_seed(N * 7919 + V)
    logits = (torch.randn(N, V, generator=g) * 2).to(device=device, dtype=dtype)
    temp = torch.full((N,), 0.8, device=device)
    top_k = torch.full((N,), 50, device=device, dtype=torch.long)
    top_p = torch.full((N,), 0.9, device=device)
    u = torch.rand(N, generator=g).to(device)
    tokens = reference.pick_from_logits(logits, temp, top_k, top_p, u)[0]
    comp = torch.randn(N, RANK, V, generator=g).log_softmax(-1).to(device=device, dtype=dtype)
    log_w = torch.randn(N, RANK, generator=g).to(device)
    kp = (top_k, top_p)
    off = (None, None)
    # name, input read by the floor, torch reference, triton kernel (a callable taking the kernels module)
    return [
        ("pick (T only)", logits,
         lambda: reference.pick_from_logits(logits, temp, *off, u),
         lambda K: K.pick_from_logits(logits, temp, *off, u)),
        ("pick + probs (T only)", logits,
         lambda: reference.pick_from_logits(logits, temp, *off, u, True),
         lambda K: K.pick_from_logits(logits, temp, *off, u, True)),
        ("cdf_interval (T only)", logits,
         lambda: reference.cdf_interval(logits, temp, *off, tokens),
         lambda K: K.cdf_interval(logits, temp, *off, tokens)),
        ("pick (top-k 50, top-p 0.9)", logits,
         lambda: reference.pick_from_logits(logits, temp, *kp, u),
         lambda K: K.pick_from_logits(logits, temp, *kp, u)),
        ("pick + probs (top-k, top-p)", logits,
         lambda: reference.pick_from_logits(logits, temp, *kp, u, True),
         lambda K: K.pick_from_logits(logits, temp, *kp, u, True)),
        ("cdf_interval (top-k, top-p)", logits,
         lambda: reference.cdf_interval(logits, temp, *kp, tokens),
         lambda K: K.cdf_interval(logits, temp, *kp, tokens)),
        (f"cp_posterior (r={RANK})", comp,
         lambda: reference.cp_posterior(log_w, comp, tokens, comp),
         lambda K: K.cp_posterior(log_w, comp, tokens, comp)),
    ]


def run(vocabs, rows, dtype: torch.dtype, device: torch.device, min_seconds: float = 0.2) -> list[dict]:
    kernels = None
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        from vllm_ptp.kernels import triton_sampling as kernels
    results = []
    for V in vocabs:
        for N in rows:
            for name, x, ref_fn, triton_fn in _cases(N, V, dtype, device):
                row = {"V": V, "N": N, "op": name,
                       "floor": time_call(lambda: x.sum(-1), device, min_seconds),
                       "ref": time_call(ref_fn, device, min_seconds),
                       "triton": None}
                if kernels is not None:
                    row["triton"] = time_call(lambda: triton_fn(kernels), device, min_seconds)
                results.append(row)
                print(_format_row(row), flush=True)
    return results


def _format_row(r: dict) -> str:
    tri = "n/a" if r["triton"] is None else f"{r['triton']:.3f}"
    tri_x = "n/a" if r["triton"] is None else f"{r['triton'] / r['floor']:.1f}x"
    return (f"| {r['V']} | {r['N']} | {r['op']} | {r['floor']:.3f} | {r['ref']:.3f} | {tri} | "
            f"{r['ref'] / r['floor']:.1f}x | {tri_x} |")


HEADER = ("| V | N | op | floor: x.sum(-1) ms | torch ref ms | triton ms | ref / floor | triton / floor |\n"
          "|---:|---:|---|---:|---:|---:|---:|---:|")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vllm_ptp.bench.kernels_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[8192, 32000, 49152, 128256],
                        help="8192 is the PTP draft vocabulary of the shipped drafts")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64, 512])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="time spent repeating each measurement")
    a = parser.parse_args(argv)
    device = torch.device(a.device)
    note = "Triton kernels vs torch reference" if device.type == "cuda" else \
        "torch reference only: the Triton kernels need CUDA"
    print(f"# sampling kernels on {device} ({a.dtype}, {torch.get_num_threads()} threads): {note}\n")
    print(HEADER, flush=True)
    run(a.vocab, a.rows, DTYPES[a.dtype], device, a.min_seconds)


if __name__ == "__main__":
    main()
