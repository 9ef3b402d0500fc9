"""Time and memory of ``klest.rl.full_kl`` at LLM scale: V = 152,064 (Qwen2) vocabulary.

    .venv/bin/python benchmarks/bench_full_kl.py                  # 256 positions (~1.5 GB, ~1 min)
    .venv/bin/python benchmarks/bench_full_kl.py --positions 8192 # ~8 GB of inputs, minutes
    .venv/bin/python benchmarks/bench_full_kl.py --avx2           # an AVX2-only CPU, reproduced
    .venv/bin/python benchmarks/bench_full_kl.py --quick          # 32 positions, one process

Each case runs in a fresh process at ``--threads`` torch threads (default 1): it allocates
the two logit arrays, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``),
runs the case (best of ``--repeats``), and reports the wall time, the throughput in logits
(positions x V) per second, and the peak resident memory *beyond the inputs* (and the
gradient, for the backward pass).

Cases: klest on numpy float16 logits, on numpy float32 logits, on torch bfloat16 logits
(forward, then the backward of the sum), and the baseline the issue names: the plain torch
formula on the same bfloat16 tensors, ``lp = log_softmax(a.float()); lr =
log_softmax(b.float()); (lp.exp() * (lp - lr)).sum(-1)`` (float32, unchunked: its memory
grows with the positions). The ratio klest bf16 forward / baseline ends the output.
``--avx2`` runs klest's kernels at their AVX2 level (KLEST_SIMD_LEVEL=avx2) and torch's at
AVX2 too (ATEN_CPU_CAPABILITY=avx2), so an AVX-512 machine shows the AVX2 figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VOCAB = 152_064


def _inputs(backend: str, dtype: str, positions: int):  # type: ignore[no-untyped-def]
    """a = 3 N(0, 1), b = a + 0.1 N(0, 1), filled 64 rows at a time (no large temporary)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    t = torch.bfloat16 if dtype == "bfloat16" else getattr(torch, dtype)
    a = torch.empty((positions, VOCAB), dtype=t)
    b = torch.empty_like(a)
    for s in range(0, positions, 64):
        m = min(64, positions - s)
        block = torch.from_numpy(3.0 * rng.standard_normal((m, VOCAB), np.float32))
        a[s : s + m] = block
        b[s : s + m] = a[s : s + m].float() + torch.from_numpy(
            0.1 * rng.standard_normal((m, VOCAB), np.float32)
        )
    if backend == "numpy":
        return a.numpy(), b.numpy()
    return a, b


def plain_formula(a, b):  # type: ignore[no-untyped-def]
    import torch

    lp = torch.log_softmax(a.float(), -1)
    lr = torch.log_softmax(b.float(), -1)
    return (lp.exp() * (lp - lr)).sum(-1)


def run_case(case: str, dtype: str, positions: int, repeats: int) -> dict:
    import torch
    from machine import reset_peak, rss_mb  # this script's directory is on sys.path

    import klest

    backend = "numpy" if case == "numpy" else "torch"
    a, b = _inputs(backend, dtype, positions)
    input_mb = 2 * positions * VOCAB * (2 if dtype in ("float16", "bfloat16") else 4) / 2**20
    if case == "torch":
        a.requires_grad_(True)
    fn = plain_formula if case == "plain" else klest.rl.full_kl
    reset_peak()
    base = rss_mb("VmRSS")
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad() if case == "plain" else torch.enable_grad():
            out = fn(a, b)
        seconds.append(time.perf_counter() - start)
    result = {
        "seconds": min(seconds),
        "extra_peak_mb": rss_mb("VmHWM") - base,
        "input_mb": input_mb,
        "mean_kl": float(out.detach().float().mean() if hasattr(out, "detach") else out.mean()),
        "threads": torch.get_num_threads(),
    }
    if case == "torch":
        start = time.perf_counter()
        out.float().sum().backward()
        result["backward_seconds"] = time.perf_counter() - start
        grad_mb = a.grad.numel() * a.grad.element_size() / 2**20
        result["extra_peak_backward_mb"] = rss_mb("VmHWM") - base - grad_mb
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=256, help="positions (default 256)")
    parser.add_argument("--quick", action="store_true", help="32 positions, one repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--avx2", action="store_true", help="klest and torch at AVX2")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        case, dtype, positions = args.case.split(":")
        print(json.dumps(run_case(case, dtype, int(positions), args.repeats)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.avx2:
        os.environ["KLEST_SIMD_LEVEL"] = "avx2"
        os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
    from machine import print_machine

    print_machine()
    n, repeats = (32, 1) if args.quick else (args.positions, args.repeats)
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        print(f"ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"full_kl, V = {VOCAB:,}, {n} positions, {args.threads} torch thread(s), best of "
          f"{repeats}, one fresh process per case (load average {load})")  # fmt: skip
    cases = [("numpy", "float16"), ("numpy", "float32"), ("torch", "bfloat16"),
             ("plain", "bfloat16")]  # fmt: skip
    rates = {}
    if args.quick:  # a smoke test: one process (its peak-memory figures are not clean)
        import torch

        torch.set_num_threads(args.threads)
    for case, dtype in cases:
        if args.quick:
            r = run_case(case, dtype, n, repeats)
        else:
            proc = subprocess.run(
                [sys.executable, __file__, "--case", f"{case}:{dtype}:{n}",
                 f"--threads={args.threads}", f"--repeats={repeats}"],
                capture_output=True, text=True, check=True, env=os.environ,
            )  # fmt: skip
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        rate = n * VOCAB / r["seconds"] / 1e6
        rates[case] = rate
        label = "plain torch fp32 formula" if case == "plain" else f"klest {case}"
        line = (
            f"  {label:24s} {dtype:8s} inputs {r['input_mb']:6.0f} MB | forward "
            f"{r['seconds']:6.2f} s ({rate:6.1f} M logits/s), extra peak "
            f"{r['extra_peak_mb']:6.0f} MB"
        )
        if "backward_seconds" in r:
            line += (
                f" | backward {r['backward_seconds']:6.2f} s, extra peak "
                f"{r['extra_peak_backward_mb']:6.0f} MB beyond the gradient"
            )
        print(line + f" | mean KL {r['mean_kl']:.6f}")
    ratio = rates["torch"] / rates["plain"]
    met = "met" if ratio >= 1.0 else "MISSED"
    met = "(--quick: a smoke test, not a measurement)" if args.quick else met
    print(f"  klest bf16 forward / plain torch fp32 formula: {ratio:.2f}x (target >= 1)  {met}")


if __name__ == "__main__":
    main()
