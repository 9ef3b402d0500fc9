"""klest's compiled elementary functions against NumPy's, ns per value (best of 30).

    .venv/bin/python benchmarks/bench_math.py           # this CPU, as it is
    NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" KLEST_SIMD_LEVEL=avx2 \\
        .venv/bin/python benchmarks/bench_math.py       # an AVX2-only CPU (NumPy 2.x names)

65,536 float64 values per call, inputs like the engine's (a log-ratio for expm1, Gamma,
StudentT and Beta draws for log and log1p). NumPy vectorises float64 exp, expm1, log and
log1p only with AVX-512; klest's are the same machine code at every SIMD level (and the same
bits, also in its NumPy fallback).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from machine import print_machine

from klest import native

N = 65_536


def ns_per_value(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(30):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / N * 1e9


def main() -> None:
    print_machine()
    rng = np.random.default_rng(0)
    cases = {
        "expm1(l)": (rng.standard_normal(N) - 0.5, native.expm1, np.expm1),
        "log(x)": (rng.gamma(2.0, 1.0, N), native.log, np.log),
        "log1p(x)": (rng.standard_t(5.0, N) ** 2 / 5.0, native.log1p, np.log1p),
        "log1p(-x)": (-rng.beta(2.0, 3.0, N), native.log1p, np.log1p),
    }
    out = np.empty(N)
    for name, (x, ours, numpys) in cases.items():
        mine = ns_per_value(lambda f=ours, x=x: f(x, out))
        theirs = ns_per_value(lambda f=numpys, x=x: f(x, out=out))
        print(f"  {name:<10} klest {mine:5.2f} ns   NumPy {theirs:5.2f} ns")


if __name__ == "__main__":
    main()
