"""What every benchmark prints beside its numbers: the machine, and targets met or missed.

The CPU model, klest's SIMD level (forced by KLEST_SIMD_LEVEL, or the best the CPU has) and
NumPy's SIMD dispatch (``np.show_runtime()``'s part), so that every figure names its machine.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable

import numpy as np

import klest.native


def best_of(repeats: int, fn) -> float:
    """Shortest wall time of ``repeats`` calls (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_interleaved(rounds: int, fns: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Shortest wall time of each function over ``rounds`` rounds, each round calling every
    function once in turn: on a shared machine whose speed drifts over seconds, the ratios
    of these minima compare the functions in the same spells, which back-to-back repeats of
    one function and then the next do not."""
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def rss_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status in MB: "VmRSS" (resident now)
    or "VmHWM" (the peak since start, or since :func:`reset_peak`)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Reset this process's VmHWM to its current resident size (Linux: /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_dispatch() -> dict[str, list[str]]:
    """The SIMD part of ``np.show_runtime()``: baseline, and dispatch targets found / not."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath as umath
    features = umath.__cpu_features__
    dispatch = umath.__cpu_dispatch__
    return {
        "baseline": list(umath.__cpu_baseline__),
        "found": [f for f in dispatch if features.get(f)],
        "not_found": [f for f in dispatch if not features.get(f)],
    }


def print_machine() -> None:
    level = klest.native.SIMD_LEVELS
    forced = os.environ.get("KLEST_SIMD_LEVEL")
    chosen = forced if forced else level[klest.native.best_simd_level()]
    dispatch = numpy_dispatch()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), {platform.python_implementation()} "
          f"{platform.python_version()}, NumPy {np.__version__}")  # fmt: skip
    print(f"klest SIMD level: {chosen} (best here: {level[klest.native.best_simd_level()]})")
    print(f"NumPy SIMD: baseline {' '.join(dispatch['baseline'])}; dispatch found "
          f"{' '.join(dispatch['found']) or '-'}; not found "
          f"{' '.join(dispatch['not_found']) or '-'}")  # fmt: skip
    disabled = os.environ.get("NPY_DISABLE_CPU_FEATURES")
    if disabled:
        print(f"NPY_DISABLE_CPU_FEATURES={disabled}")


def target_line(label: str, value: float | None, target: float, cmp: str = ">=") -> str:
    if value is None:
        return f"  {label:<44} {'n/a':>7}   target {cmp} {target:g}"
    ok = value >= target if cmp == ">=" else value <= target
    return f"  {label:<44} {value:7.2f}   target {cmp} {target:g}   {'met' if ok else 'MISSED'}"
