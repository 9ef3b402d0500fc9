"""Engine throughput and memory against its baselines, measured in one run on one machine.

    .venv/bin/python benchmarks/bench_engine.py            # full run (about 60 s)
    .venv/bin/python benchmarks/bench_engine.py --quick    # smaller n, for a smoke test
    .venv/bin/python benchmarks/bench_engine.py --avx2     # an AVX2-only CPU, on this one

``--avx2`` reproduces an AVX2 machine (no AVX-512) on an AVX-512 one: klest's kernels run
their AVX2 variant (KLEST_SIMD_LEVEL=avx2, inherited by the worker processes) and NumPy's
dispatch drops every AVX-512 target (NPY_DISABLE_CPU_FEATURES, set before NumPy is imported:
the script runs itself again with both set). The header names the CPU, klest's SIMD level
and NumPy's dispatch (``np.show_runtime()``'s SIMD part), so every figure names its machine.

Prints draws/s and the ratios the engine issue asks for:
  1. engine (1 worker) / raw ``Generator.standard_normal`` (chunked, one core), Schulman case
     q = N(0,1), p = N(1,1), estimators k1 + k2 + k3;
  2. engine 2 workers / engine 1 worker;
  3. engine / Schulman's one-shot torch snippet (if torch is installed) and / a naive
     one-shot numpy + scipy.stats.norm.logpdf version: one core against one core (engine
     1 worker, torch 1 thread), and two against two (engine 2 workers, torch 2 threads:
     the whole of the 2-core machine the targets were set on);
  4. peak resident memory of a whole run in a fresh process, for two n (constant in n);
  5. Categorical over a 131,072-entry vocabulary: inverse-CDF sampling rate and engine rate;
  6. the per-family rows of ``bench_families.py`` (Gamma, Beta, StudentT, Laplace against
     NumPy's own sampler; GaussianMixture and MultivariateNormal d = 16 rates).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
from bench_families import family_rows
from machine import best_interleaved, best_of, numpy_dispatch, print_machine, target_line

import klest
import klest.native
from klest.native.sampler import standard_normal

Q = klest.Normal(loc=0.0, scale=1.0)
P = klest.Normal(loc=1.0, scale=1.0)
SCHULMAN = ["k1", "k2", "k3"]


def raw_normal(n: int, chunk: int) -> Callable[[], None]:
    """n draws of raw ``Generator.standard_normal``, chunked, into one buffer."""
    rng = np.random.default_rng(0)
    buffer = np.empty(chunk)

    def run() -> None:
        for _ in range(n // chunk):
            rng.standard_normal(out=buffer)

    return run


def compiled_normal(n: int, chunk: int) -> Callable[[], None]:
    """klest.native.sampler.standard_normal: the same stream as NumPy's, compiled."""
    rng = np.random.default_rng(0)

    def run() -> None:
        for _ in range(n // chunk):
            standard_normal(rng, chunk)

    return run


def engine_run(n: int, workers: int) -> Callable[[], None]:
    def run() -> None:
        klest.simulate(Q, P, SCHULMAN, n=n, seed=0, workers=workers, exact=False, progress=False)

    return run


def numpy_one_shot(n: int) -> Callable[[], None]:
    from scipy import stats

    def run() -> None:
        x = np.random.default_rng(0).standard_normal(n)
        logr = stats.norm.logpdf(x, loc=1.0) - stats.norm.logpdf(x, loc=0.0)
        for k in (-logr, logr**2 / 2, np.expm1(logr) - logr):
            k.mean(), k.std()

    return run


def torch_one_shot(n: int, threads: int) -> Callable[[], None] | None:
    try:
        import torch
        import torch.distributions as dis
    except ImportError:
        return None

    def run() -> None:  # Schulman's snippet, with p = N(1, 1)
        torch.set_num_threads(threads)
        p = dis.Normal(loc=1, scale=1)
        q = dis.Normal(loc=0, scale=1)
        x = q.sample(sample_shape=(n,))
        truekl = dis.kl_divergence(q, p)
        logr = p.log_prob(x) - q.log_prob(x)
        k1 = -logr
        k2 = logr**2 / 2
        k3 = (logr.exp() - 1) - logr
        for k in (k1, k2, k3):
            ((k.mean() - truekl) / truekl).item(), (k.std() / truekl).item()

    return run


# VmHWM (the peak resident set of this process image) rather than ru_maxrss, which Linux
# carries over from the forking parent across exec.
PEAK_SCRIPT = """
import sys, warnings, klest
warnings.simplefilter("ignore")
n = int(sys.argv[1])
klest.simulate(klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0, scale=1.0),
               ["k1", "k2", "k3"], n=n, seed=0, workers=int(sys.argv[2]), progress=False)
status = open("/proc/self/status").read().split("\\n")
print(int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024)
"""


def peak_rss_mb(n: int, workers: int = 1) -> float:
    """Peak resident set (MB) of a fresh process running the whole simulation."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(n), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def categorical_rates(vocab: int, n: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(vocab) * 2.0
    q = klest.Categorical(logits=logits)
    p = klest.Categorical(logits=logits + 0.3 * rng.standard_normal(vocab))

    def run() -> None:
        klest.simulate(q, p, SCHULMAN, n=n, seed=0, exact=False, progress=False)

    # timed in turns, three rounds, each at its best (as the headline rates)
    times = best_interleaved(
        3, {"sample": lambda: q.sample(np.random.default_rng(1), n), "engine": run}
    )
    return n / times["sample"], n / times["engine"]


def rerun_as_avx2() -> None:
    """Run this script again with klest's kernels at AVX2 and NumPy's AVX-512 targets off."""
    # NumPy 2.x names its AVX-512 targets X86_V4, AVX512_ICL, AVX512_SPR; 1.x AVX512F,
    # AVX512_SKX, ...; NPY_DISABLE_CPU_FEATURES takes the names of this NumPy's dispatch
    off = [f for f in numpy_dispatch()["found"] if f.startswith("AVX512") or f == "X86_V4"]
    env = dict(os.environ, KLEST_SIMD_LEVEL="avx2", NPY_DISABLE_CPU_FEATURES=" ".join(off))
    env["KLEST_BENCH_AVX2_CHILD"] = "1"
    sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small n (smoke test)")
    parser.add_argument("--avx2", action="store_true", help="reproduce an AVX2-only CPU")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    if args.avx2 and not os.environ.get("KLEST_BENCH_AVX2_CHILD"):
        rerun_as_avx2()
    warnings.simplefilter("ignore")
    print_machine()
    n = 1_000_000 if args.quick else 50_000_000
    # the engine runs long enough (about a second with 2 workers) that starting the
    # process pool counts for little against the per-draw cost being measured
    n_engine = 2_000_000 if args.quick else 200_000_000
    chunk = klest.engine.runner.DEFAULT_BLOCK_SIZE
    results: dict[str, float | None] = {}

    print(f"cores: {os.cpu_count()}, n = {n:,} (engine: {n_engine:,}), block = {chunk:,}")
    # the engine and its baselines are timed in turns, five rounds, each at its best: the
    # ratios then compare them in the same spells of this (possibly shared) machine, whose
    # speed drifts by up to 1.5x within a minute
    n_draws = (n // chunk) * chunk
    shot = 10_000_000 if not args.quick else 1_000_000
    runs = {
        "raw": raw_normal(n, chunk),
        "compiled": compiled_normal(n, chunk),
        "one": engine_run(n_engine, 1),
        "two": engine_run(n_engine, 2),
        "numpy_shot": numpy_one_shot(shot),
        "torch_1": torch_one_shot(shot, threads=1),
    }
    times = best_interleaved(5, {name: run for name, run in runs.items() if run is not None})
    results["raw_rate"] = raw = n_draws / times["raw"]
    results["compiled_normal_rate"] = compiled = n_draws / times["compiled"]
    results["engine_1w_rate"] = one = n_engine / times["one"]
    results["engine_2w_rate"] = two = n_engine / times["two"]
    print(f"raw standard_normal     {raw / 1e6:8.1f} M draws/s   (NumPy, chunked, one core)")
    print(f"klest's compiled one    {compiled / 1e6:8.1f} M draws/s   (same stream, bit for bit)")
    print(f"engine, 1 worker        {one / 1e6:8.1f} M draws/s   ratio to raw {one / raw:.2f}")
    print(f"engine, 2 workers       {two / 1e6:8.1f} M draws/s   ratio to 1 worker {two / one:.2f}")

    results["numpy_one_shot_rate"] = npy = shot / times["numpy_shot"]
    print(f"numpy/scipy one-shot    {npy / 1e6:8.1f} M draws/s   engine 1w is {one / npy:.1f}x")
    tch = shot / times["torch_1"] if "torch_1" in times else None
    # (two threads after the rounds: torch's idle threads spin on after each call)
    two_threads = torch_one_shot(shot, threads=2)
    tch_two = None if two_threads is None else shot / best_of(3, two_threads)
    results["torch_one_shot_rate"], results["torch_one_shot_2_threads_rate"] = tch, tch_two
    if tch is None or tch_two is None:
        print("torch one-shot          (torch not installed)")
    else:
        print(f"torch one-shot, 1 thr   {tch / 1e6:8.1f} M draws/s   engine 1w is {one / tch:.1f}x")
        print(
            f"torch one-shot, 2 thr   {tch_two / 1e6:8.1f} M draws/s   engine 2w is {two / tch_two:.1f}x"  # noqa: E501
        )

    big, small = (2 * 10**8, 2 * 10**7) if not args.quick else (4 * 10**6, 10**6)
    for label, size in (("small", small), ("big", big)):
        results[f"peak_rss_mb_{label}"] = mb = peak_rss_mb(size)
        print(f"peak RSS, n = {size:>11,}  {mb:8.1f} MB")

    vocab = 131_072
    # n large enough that the run's one-off costs (pilot block, truths) count for little
    samp, eng = categorical_rates(vocab, 20_000_000 if not args.quick else 500_000)
    results["categorical_sample_rate"], results["categorical_engine_rate"] = samp, eng
    print(
        f"Categorical V={vocab:,}: sampling {samp / 1e6:.1f} M draws/s, "
        f"engine {eng / 1e6:.1f} M draws/s"
    )
    families = family_rows(args.quick)
    results |= {label: value for label, value, _ in families}
    print("targets (issue 12), ratios measured in this run:")
    for line in (
        target_line("engine 1w / klest's compiled sampler", one / compiled, 0.5),
        target_line("engine 1w / raw NumPy standard_normal", one / raw, 1.4),
        target_line("engine 1w / torch one-shot (1 thread)", None if tch is None else one / tch, 5),
        target_line("engine 2w / engine 1w", two / one, 1.8),
        target_line("peak RSS (MB), larger n", results["peak_rss_mb_big"], 150, "<="),
        target_line("Categorical engine / its sampling", eng / samp, 0.8),
        *(target_line(label, value, target) for label, value, target in families),
    ):
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
