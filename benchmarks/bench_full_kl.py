"""Time and memory of ``klest.rl.full_kl`` at LLM scale: V = 152,064 (Qwen2) vocabulary.

    .venv/bin/python benchmarks/bench_full_kl.py          # 8192 positions (~8 GB RAM, minutes)
    .venv/bin/python benchmarks/bench_full_kl.py --quick  # 32 positions, a smoke test

Each case runs in a fresh process: it allocates the two logit arrays, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``), runs ``full_kl`` (and, for torch, the backward
pass), and reports the wall time and the peak resident memory *beyond the inputs* (and the
gradient, for torch). An unchunked float64 evaluation of 8192 x 152,064 entries would need
about 10 GB per working array; chunking keeps the extra memory to a few working arrays of
``chunk_size x V`` float64 entries, whatever the number of positions.

Cases: numpy float16 logits (float64 result), numpy float32 logits at a quarter of the
positions, torch bfloat16 logits with ``requires_grad`` (forward, then backward of the sum).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VOCAB = 152_064


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _fill(out, rng, scale: float, base=None) -> None:  # type: ignore[no-untyped-def]
    """Fill ``out`` row block by row block (no full-size float64 temporary)."""
    import numpy as np

    for s in range(0, out.shape[0], 64):
        block = rng.standard_normal((min(64, out.shape[0] - s), out.shape[1]), dtype=np.float32)
        block *= scale
        if base is not None:
            block += np.asarray(base[s : s + 64], dtype=np.float32)
        out[s : s + 64] = block


def run_case(backend: str, dtype: str, positions: int, threads: int) -> dict:
    import numpy as np

    import klest

    rng = np.random.default_rng(0)
    if backend == "numpy":
        a = np.empty((positions, VOCAB), dtype=dtype)
        b = np.empty_like(a)
        _fill(a, rng, 3.0)
        _fill(b, rng, 0.1, base=a)
        _reset_peak()
        base = _rss_mb("VmRSS")
        start = time.perf_counter()
        out = klest.rl.full_kl(a, b)
        seconds = time.perf_counter() - start
        extra = _rss_mb("VmHWM") - base
        return {
            "backend": backend,
            "dtype": dtype,
            "positions": positions,
            "seconds": round(seconds, 2),
            "extra_peak_mb": round(extra, 1),
            "input_mb": round(2 * a.nbytes / 2**20, 1),
            "mean_kl": float(out.mean()),
        }
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch_dtype = getattr(torch, dtype)
    a = torch.empty((positions, VOCAB), dtype=torch_dtype)
    b = torch.empty_like(a)
    for s in range(0, positions, 64):
        blk = torch.from_numpy(rng.standard_normal((min(64, positions - s), VOCAB), np.float32))
        a[s : s + 64] = blk * 3.0
        b[s : s + 64] = a[s : s + 64].float() + 0.1 * torch.from_numpy(
            rng.standard_normal((min(64, positions - s), VOCAB), np.float32)
        )
    a.requires_grad_(True)
    _reset_peak()
    base = _rss_mb("VmRSS")
    start = time.perf_counter()
    out = klest.rl.full_kl(a, b)
    forward = time.perf_counter() - start
    extra_forward = _rss_mb("VmHWM") - base
    start = time.perf_counter()
    out.float().sum().backward()
    backward = time.perf_counter() - start
    grad_mb = a.grad.numel() * a.grad.element_size() / 2**20
    extra = _rss_mb("VmHWM") - base - grad_mb
    return {
        "backend": backend,
        "dtype": dtype,
        "positions": positions,
        "seconds": round(forward, 2),
        "backward_seconds": round(backward, 2),
        "extra_peak_mb": round(extra_forward, 1),
        "extra_peak_backward_mb": round(extra, 1),
        "input_mb": round(2 * a.numel() * a.element_size() / 2**20, 1),
        "mean_kl": float(out.detach().float().mean()),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 positions, not 8192")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); with other jobs on the machine, "
        "1 thread avoids threads waiting for each other",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        backend, dtype, positions = args.case.split(":")
        print(json.dumps(run_case(backend, dtype, int(positions), args.torch_threads)))
        return
    n = 32 if args.quick else 8192
    # float32 at a quarter of the positions: 8192 x V float32 logits alone take 10 GB
    cases = [("numpy", "float16", n), ("numpy", "float32", n // 4), ("torch", "bfloat16", n)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"full_kl, V = {VOCAB:,}, one fresh process per case (load average {load})")
    for backend, dtype, positions in cases:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                f"{backend}:{dtype}:{positions}",
                f"--torch-threads={args.torch_threads}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        line = (
            f"  {backend:5s} {dtype:8s} {positions:5d} positions, inputs "
            f"{r['input_mb']:6.0f} MB | forward "
            f"{r['seconds']:6.1f} s ({positions / r['seconds']:6.0f} positions/s), extra peak "
            f"{r['extra_peak_mb']:6.0f} MB"
        )
        if "backward_seconds" in r:
            line += (
                f" | backward {r['backward_seconds']:6.1f} s, extra peak "
                f"{r['extra_peak_backward_mb']:6.0f} MB beyond the gradient, "
                f"{r['torch_threads']} threads"
            )
        print(line + f" | mean KL {r['mean_kl']:.5f}")


if __name__ == "__main__":
    main()
