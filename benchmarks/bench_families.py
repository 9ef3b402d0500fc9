"""Engine speed per family against NumPy's own sampler for that family (issue 12, section 3).

    .venv/bin/python benchmarks/bench_families.py            # about 30 s
    .venv/bin/python benchmarks/bench_families.py --quick    # a smoke test, a few seconds

:func:`family_rows` returns ``(label, measured value, target)`` rows (``bench_engine.py``
prints them among its targets); run alone, this script prints them under the CPU model and
NumPy's SIMD dispatch. The definitions (engine: 1 worker, k1 + k2 + k3, ``exact=False``):

- Gamma, Beta, StudentT, Laplace pairs: engine draws/s over the draws/s of NumPy's raw
  ``Generator`` method for q's family (``gamma``, ``beta``, ``standard_t``, ``laplace``)
  with q's parameters, chunked 65,536 per call on one core (as ``bench_engine.py``'s
  ``raw_normal_rate``); target >= 0.8.
- GaussianMixture, 2 components each (q: w = [.3, .7], locs = [-1, 1], scales = [.5, 1];
  p: w = [.5, .5], locs = [-.5, 1.5], scales = [1, .7]): engine M draws/s; target >= 20.
- MultivariateNormal d = 16 (q = N(0, I), p = N(0.1, A A^T / 16 + I) for a fixed random A):
  engine M vectors/s; target >= 5.

Every rate is the best of 3 runs (the least disturbed by other processes); for a ratio the
engine and NumPy's sampler are timed in turns, three rounds. The allocator is
tuned as the engine tunes it (:func:`klest.engine.allocator.tune_allocator`) before anything
is timed, so that NumPy's raw sampler and the engine allocate under the same rules.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import numpy as np
from machine import best_interleaved, best_of, print_machine, target_line

import klest
from klest.engine.allocator import tune_allocator
from klest.engine.runner import DEFAULT_BLOCK_SIZE

ESTIMATORS = ["k1", "k2", "k3"]
RATIO_TARGET = 0.8
MIXTURE_TARGET = 20.0  # M draws/s
MVN_TARGET = 5.0  # M vectors/s
MVN_DIM = 16


def ratio_pairs() -> dict[str, tuple[klest.Distribution, klest.Distribution, Callable]]:
    """label -> (q, p, raw) with raw(rng, m) NumPy's sampler of q's family and parameters."""
    return {
        "Gamma": (
            klest.Gamma(shape=2.0, rate=1.0),
            klest.Gamma(shape=3.0, rate=1.5),
            lambda g, m: g.gamma(2.0, 1.0, m),
        ),
        "Beta": (
            klest.Beta(alpha=2.0, beta=3.0),
            klest.Beta(alpha=3.0, beta=2.0),
            lambda g, m: g.beta(2.0, 3.0, m),
        ),
        "StudentT": (
            klest.StudentT(df=5.0),
            klest.StudentT(df=3.0, loc=0.5),
            lambda g, m: g.standard_t(5.0, m),
        ),
        "Laplace": (
            klest.Laplace(loc=0.0, scale=1.0),
            klest.Laplace(loc=0.5, scale=2.0),
            lambda g, m: g.laplace(0.0, 1.0, m),
        ),
    }


def mixture_pair() -> tuple[klest.GaussianMixture, klest.GaussianMixture]:
    q = klest.GaussianMixture(weights=[0.3, 0.7], locs=[-1.0, 1.0], scales=[0.5, 1.0])
    p = klest.GaussianMixture(weights=[0.5, 0.5], locs=[-0.5, 1.5], scales=[1.0, 0.7])
    return q, p


def mvn_pair(d: int = MVN_DIM) -> tuple[klest.MultivariateNormal, klest.MultivariateNormal]:
    a = np.random.default_rng(0).standard_normal((d, d))
    q = klest.MultivariateNormal(mean=np.zeros(d), cov=np.eye(d))
    p = klest.MultivariateNormal(mean=np.full(d, 0.1), cov=a @ a.T / d + np.eye(d))
    return q, p


def raw_run(raw: Callable, n: int, chunk: int = DEFAULT_BLOCK_SIZE) -> Callable[[], None]:
    """``raw(rng, chunk)`` called n // chunk times (one core)."""
    rng = np.random.default_rng(0)

    def run() -> None:
        for _ in range(n // chunk):
            raw(rng, chunk)

    return run


def engine_run(q: klest.Distribution, p: klest.Distribution, n: int) -> Callable[[], None]:
    """klest.simulate with 1 worker."""

    def run() -> None:
        klest.simulate(q, p, ESTIMATORS, n=n, seed=0, workers=1, exact=False, progress=False)

    return run


def engine_rate(q: klest.Distribution, p: klest.Distribution, n: int) -> float:
    """Draws/s (vectors/s for a MultivariateNormal) of klest.simulate with 1 worker."""
    return n / best_of(3, engine_run(q, p, n))


def ratio_to_raw(q: klest.Distribution, p: klest.Distribution, raw: Callable, n: int) -> float:
    """Engine draws/s over raw NumPy draws/s, the two timed in turns (three rounds, each at
    its best: the same spells of a shared machine)."""
    times = best_interleaved(3, {"engine": engine_run(q, p, n), "raw": raw_run(raw, n)})
    raw_draws = (n // DEFAULT_BLOCK_SIZE) * DEFAULT_BLOCK_SIZE
    return (n / times["engine"]) / (raw_draws / times["raw"])


def family_rows(quick: bool) -> list[tuple[str, float, float]]:
    """(label, measured value, target) for each per-family target of issue 12."""
    tune_allocator()
    n = 500_000 if quick else 8_000_000
    n_mvn = 100_000 if quick else 2_000_000
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, (q, p, raw) in ratio_pairs().items():
            ratio = ratio_to_raw(q, p, raw, n)
            rows.append((f"{label} engine 1w / raw NumPy {label}", ratio, RATIO_TARGET))
        mixture = engine_rate(*mixture_pair(), n) / 1e6
        rows.append(("GaussianMixture engine 1w (M draws/s)", mixture, MIXTURE_TARGET))
        mvn = engine_rate(*mvn_pair(), n_mvn) / 1e6
        rows.append((f"MVN d={MVN_DIM} engine 1w (M vectors/s)", mvn, MVN_TARGET))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller n")
    args = parser.parse_args()
    print_machine()
    for label, value, target in family_rows(args.quick):
        print(target_line(label, value, target))


if __name__ == "__main__":
    main()
