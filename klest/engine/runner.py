"""The sampling engine: streaming, paired, block-seeded, parallel Monte Carlo.

A run of n draws x ~ q is cut into fixed-size blocks. Block k of case c draws from
``Generator(PCG64(SeedSequence(seed, spawn_key=(c, k))))`` (klest stream v1,
:mod:`klest.engine.plan`); every estimator (and the control variate r - 1) is evaluated on
the same draws, reduced to mergeable statistics
(:mod:`klest.engine.moments`) and thrown away. Blocks are grouped into tasks of a fixed number of
blocks (the plan and its seeding: :mod:`klest.engine.plan`), so the merge tree depends on
(n, block size) only: workers only choose which tasks they run, and the result is bit-identical
for 1, 2 or 8 workers, a process pool or a Dask cluster. Memory is constant in n. After the
draws, :func:`simulate` computes the truths (:mod:`klest.engine.truths`), hands them with the
statistics to :class:`klest.engine.results.SimulationResult` and raises its warnings.

The hot path is compiled (``klest/native/csrc/kernels.c``). When every estimator has a
compiled form (k1, k2, k3: ``computed_series``) the block goes through
``klest.native.block_stats`` in one pass: for a Gaussian pair the draws themselves (klest's
PCG64 + ziggurat, NumPy's stream value for value), their log-ratio, klest's own expm1 (r - 1,
shared with k3), the series and their statistics are made tile by tile in the L1 cache, and a
task's blocks are one compiled call; so are a Categorical pair's (the uniforms, the inverse
CDF's categories, and each category's log-ratio and expm1 from a table) and a Laplace pair's
(NumPy's Laplace draws and their log-ratio, compiled). For other pairs the log-ratio of the
block is sampled first (:func:`klest.distributions.log_ratio.sample_log_ratio`, specialised
by pair) and the rest is the same pass. An estimator without a compiled form sends its
values through memory (:func:`block_series`, :class:`klest.engine.moments.Accumulator`).
Both routes give the same bits (tests/test_block_stats.py, tests/test_drawn_block_stats.py).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from klest import estimators as _estimators
from klest import native as _native
from klest.distributions.base import Distribution
from klest.distributions.log_ratio import (
    categorical_tables,
    fused_laplace_parameters,
    fused_mixture_parameters,
    fused_normal_parameters,
    sample_log_ratio,
)
from klest.engine.allocator import tune_allocator
from klest.engine.moments import Accumulator, Moments, merge
from klest.engine.plan import RunPlan, block_generator
from klest.engine.results import ConvergenceWarning, SimulationResult
from klest.engine.seeding import block_states
from klest.engine.truths import truths
from klest.engine.worker_pool import worker_pool
from klest.errors import check_integer

__all__ = ["DEFAULT_BLOCK_SIZE", "available_cpus", "simulate", "usable_workers"]

DEFAULT_BLOCK_SIZE = 1 << 16  # 65,536 draws: ~0.5 MB per series, cache-friendly
HISTOGRAM_BINS = 200
HISTOGRAM_STRIDE = 16  # histograms use every 16th draw; moments use every draw
MAX_IN_FLIGHT_PER_WORKER = 4


def block_series(plan: RunPlan, k: int) -> tuple[list[np.ndarray | str], np.ndarray, np.ndarray]:
    """Block k as the accumulator takes it: (series, log-ratio, expm1(log-ratio)).

    ``series`` has one entry per estimator, then r - 1 = expm1(l) (computed once per block
    and shared with the estimators built on it). An estimator with a ``computed_series``
    is given by that name: the compiled accumulator computes its values tile by tile, in
    cache, instead of reading them from memory.
    """
    rng = block_generator(plan.seed, plan.case, k)
    log_ratio = np.ascontiguousarray(
        sample_log_ratio(plan.q, plan.p, rng, plan.block_length(k)), dtype=np.float64
    )
    # klest's own expm1, compiled and vectorised (NumPy's is vectorised only with AVX-512):
    # the same bits as klest._special.expm1, whatever the CPU and NumPy build
    ratio_minus_one = _native.expm1(log_ratio, np.empty_like(log_ratio))
    series: list[np.ndarray | str] = []
    for name in plan.estimators:
        estimator = _estimators.get(name)
        series.append(estimator.computed_series or estimator.evaluate(log_ratio, ratio_minus_one))
    series.append(ratio_minus_one)
    return series, log_ratio, ratio_minus_one


def block_values(plan: RunPlan, k: int) -> list[np.ndarray]:
    """Per-sample values of block k: one array per estimator, then one of r - 1."""
    series, log_ratio, ratio_minus_one = block_series(plan, k)
    return [
        _estimators.get(name).evaluate(log_ratio, ratio_minus_one)
        if isinstance(entry, str)
        else entry
        for entry, name in zip(series, (*plan.estimators, ""), strict=True)
    ]


# BLAS must run on one thread while blocks are reduced: a multi-threaded dot product splits
# its sum differently (so the last bits would depend on the thread count), and short dot
# products beside other workers are slower threaded anyway. threadpoolctl's limits are
# process-wide, so they are set once around a whole run in the calling process (covering
# thread executors, whose threads would otherwise race entering and leaving the limit) and
# once, for good, in other processes (pool and Dask workers, which Dask itself already runs
# with one BLAS thread).
_LIMITED_BY_CALLER = False
_LIMITED_FOR_PROCESS = False


def _ensure_single_threaded_blas() -> None:
    global _LIMITED_FOR_PROCESS
    if not (_LIMITED_BY_CALLER or _LIMITED_FOR_PROCESS):
        threadpool_limits(limits=1, user_api="blas")
        _LIMITED_FOR_PROCESS = True


@contextmanager
def _single_threaded_blas_for_this_run() -> Iterator[None]:
    global _LIMITED_BY_CALLER
    if _LIMITED_BY_CALLER or _LIMITED_FOR_PROCESS:  # nested run, or a worker process
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        _LIMITED_BY_CALLER = True
        try:
            yield
        finally:
            _LIMITED_BY_CALLER = False


def run_blocks(plan: RunPlan, first: int, count: int) -> Moments:
    """Statistics of blocks first, ..., first + count - 1, merged in block order."""
    tune_allocator(plan.block_size)
    _ensure_single_threaded_blas()
    return _run_blocks(plan, first, count)


def _run_blocks(plan: RunPlan, first: int, count: int) -> Moments:
    accumulator = Accumulator(
        len(plan.estimators) + 1, plan.edges, HISTOGRAM_STRIDE, hist_rows=len(plan.estimators)
    )
    names = _computed_names(plan.estimators)
    if names is None:  # an estimator without a compiled form: its values go through memory
        for k in range(first, first + count):
            accumulator.add(*block_series(plan, k))
        return accumulator.to_moments()
    # every series is computed in the compiled pass from the log-ratio (for a Gaussian pair,
    # drawn in that pass too): the same bits as block_series, in one pass through the cache
    blocks = range(first, first + count)
    drawn_pass = _drawn_pass(plan.q, plan.p)
    if drawn_pass is not None:  # the task's blocks in one compiled call, from their states
        states = block_states(plan.seed, plan.case, blocks)  # (their generators' own)
        drawn_pass(accumulator, names, states, [plan.block_length(k) for k in blocks])
        return accumulator.to_moments()
    for k in blocks:
        rng = block_generator(plan.seed, plan.case, k)
        log_ratio = sample_log_ratio(plan.q, plan.p, rng, plan.block_length(k))
        accumulator.add_computed(names, np.ascontiguousarray(log_ratio, dtype=np.float64))
    return accumulator.to_moments()


#: accumulator.add_*_blocks(names, states, lengths): a task's blocks, drawn in one call
DrawnPass = Callable[[Accumulator, list[str], np.ndarray, list[int]], None]


def _drawn_pass(q: Distribution, p: Distribution) -> DrawnPass | None:
    """The compiled pass that draws this pair's blocks itself (Gaussian, Categorical,
    Laplace and GaussianMixture pairs), with the bits of :func:`sample_log_ratio` then the
    accumulator; None for the other pairs, whose log-ratio is sampled block by block first."""
    normal = fused_normal_parameters(q, p)
    if normal is not None:
        return lambda acc, names, gens, lengths: acc.add_normal_blocks(
            names, gens, lengths, *normal
        )
    tables = categorical_tables(q, p)
    if tables is not None:
        return lambda acc, names, gens, lengths: acc.add_categorical_blocks(
            names, gens, lengths, tables
        )
    laplace = fused_laplace_parameters(q, p)
    if laplace is not None:
        return lambda acc, names, gens, lengths: acc.add_laplace_blocks(
            names, gens, lengths, laplace
        )
    mixture = fused_mixture_parameters(q, p)
    if mixture is not None:
        return lambda acc, names, gens, lengths: acc.add_mixture_blocks(
            names, gens, lengths, mixture
        )
    return None


def _computed_names(estimators: Sequence[str]) -> list[str] | None:
    """The compiled series of the estimators, then "expm1" (r - 1); None unless all have one."""
    names = [_estimators.get(name).computed_series for name in estimators]
    return None if any(name is None for name in names) else [*names, "expm1"]


def _histogram_edges(values: np.ndarray) -> np.ndarray | None:
    """Shared bins for all estimators, from the 0.05% and 99.95% points of block 0."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = np.quantile(finite, [0.0005, 0.9995])
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # keep 0 in view: most estimators start there
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, HISTOGRAM_BINS + 1)


def _validate(
    q: Any, p: Any, names: Sequence[str], n: Any, seed: Any, block_size: Any, workers: Any
) -> tuple[tuple[str, ...], int, int, int]:
    """Checked arguments of :func:`simulate`: (estimator names, n, seed, block size)."""
    if not isinstance(q, Distribution) or not isinstance(p, Distribution):
        raise TypeError(
            f"simulate needs two klest distributions, got {type(q).__name__} and {type(p).__name__}"
        )
    if q.batch_shape or p.batch_shape:
        raise ValueError("simulate runs one pair of distributions; got batched Categorical")
    if q.event_shape != p.event_shape:
        raise ValueError(f"q and p live on different spaces: {q!r} vs {p!r}")
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("simulate needs at least one estimator name")
    canonical = tuple(_estimators.get(name).name for name in names)
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"estimator list has duplicates (after aliases): {list(names)}")
    n = check_integer("n", n, minimum=1)
    block_size = check_integer("block_size", block_size, minimum=1)
    check_integer("workers", workers, minimum=1)
    if seed is None:  # fresh entropy from the OS, as numpy.random.default_rng(None)
        seed = np.random.SeedSequence().entropy
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return canonical, n, int(seed), block_size


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def usable_workers(workers: Any) -> Any:
    """``workers`` capped at :func:`available_cpus`, with a warning (more processes than CPUs
    only add memory and scheduling overhead); anything not a positive integer is returned
    unchanged for the caller's own check."""
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        return workers
    cpus = available_cpus()
    if workers > cpus:
        warnings.warn(
            f"workers={int(workers)} is more than the {cpus} CPUs available; using {cpus}",
            UserWarning,
            stacklevel=3,
        )
        return cpus
    return int(workers)


def _progress_bar(total: int, progress: bool | None) -> Any:
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    # deferred: tqdm.auto imports asyncio and ssl (~20 ms), needed only when a bar is shown
    from tqdm.auto import tqdm

    # delay: the bar appears only for runs that take more than a couple of seconds
    return tqdm(total=total, unit="draw", unit_scale=True, delay=0.0 if progress else 2.0)


def _merge_in_order(plan: RunPlan, executor: Executor | None, window: int, bar: Any) -> Moments:
    tasks = plan.tasks()
    total: Moments | None = None

    def absorb(stats: Moments, first: int, count: int) -> None:
        nonlocal total
        total = stats if total is None else merge(total, stats)
        if bar is not None:
            last = min(plan.n, (first + count) * plan.block_size)
            bar.update(last - first * plan.block_size)

    if executor is None:
        for first, count in tasks:
            absorb(run_blocks(plan, first, count), first, count)
    else:
        pending: list[tuple[Future[Moments], int, int]] = []
        queue: Iterable[tuple[int, int]] = iter(tasks)
        try:
            for first, count in queue:
                pending.append((executor.submit(run_blocks, plan, first, count), first, count))
                if len(pending) >= window:
                    future, f0, c0 = pending.pop(0)
                    absorb(future.result(), f0, c0)
            while pending:
                future, f0, c0 = pending.pop(0)
                absorb(future.result(), f0, c0)
        except BaseException:  # a failed task or an interruption: the rest is not needed
            for future, _, _ in pending:
                future.cancel()
            raise
    assert total is not None
    return total


def simulate(
    q: Distribution,
    p: Distribution,
    estimators: Sequence[str] | str,
    n: int,
    *,
    seed: int | None = 0,
    block_size: int | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    progress: bool | None = None,
    case: int = 0,
    exact: bool = True,
) -> SimulationResult:
    """Run every estimator on the same n draws x ~ q and return their statistics.

    The result depends on (seed, n, block_size, case) only — not on ``workers`` or
    ``executor``. ``seed`` is any non-negative integer (SeedSequence entropy, of any size);
    the default 0 makes a bare call reproducible, and ``seed=None`` draws fresh entropy from
    the operating system, recorded as ``result.seed`` so that the run can be replayed.
    ``executor`` is any ``concurrent.futures.Executor`` (e.g. a Dask client's
    ``get_executor()``); ``workers`` beyond the CPUs available are capped, with a warning.
    ``case`` is the case index c of the seeding scheme. With
    ``exact=True`` the exact moments (where klest can compute them) sit beside the Monte
    Carlo ones.

    >>> import klest
    >>> q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0, scale=1.0)
    >>> res = simulate(q, p, ["k1", "k3"], n=100_000, seed=0)
    >>> frame = res.to_frame()
    >>> bool(abs(frame.loc["k3", "mean"] - 0.5) < 5 * frame.loc["k3", "se_mean"])
    True
    """
    workers = usable_workers(workers)
    names, n, seed, block = _validate(
        q, p, estimators, n, seed, DEFAULT_BLOCK_SIZE if block_size is None else block_size,
        workers,
    )  # fmt: skip
    if isinstance(case, bool) or not isinstance(case, int | np.integer) or case < 0:
        raise ValueError(f"case must be a non-negative integer, got {case!r}")
    started = time.perf_counter()
    pilot = RunPlan(q, p, names, n, seed, int(case), block, None)
    edges = _histogram_edges(np.concatenate(block_values(pilot, 0)[:-1]))
    plan = RunPlan(q, p, names, n, seed, int(case), block, edges)

    bar = _progress_bar(n, progress)
    try:
        with _single_threaded_blas_for_this_run():
            if executor is not None:
                stats = _merge_in_order(plan, executor, MAX_IN_FLIGHT_PER_WORKER * 8, bar)
            elif workers > 1 and len(plan.tasks()) > 1:
                with worker_pool(workers) as pool:  # workers die with this process
                    window = MAX_IN_FLIGHT_PER_WORKER * workers
                    stats = _merge_in_order(plan, pool, window, bar)
            else:
                stats = _merge_in_order(plan, None, 1, bar)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - started
    known = truths(q, p, names, exact=exact)
    result = SimulationResult.build(
        plan,
        stats,
        exact=known.exact,
        exact_notes=known.notes,
        truth=known.value,
        fourth_moment_finite=known.fourth_moment_finite,
        elapsed=elapsed,
    )
    for name in result.alarms:
        warnings.warn(f"{name}: {result.notes[name]}", ConvergenceWarning, stacklevel=2)
    return result


def throughput(result: SimulationResult) -> float:
    """Draws per second of a finished run (for benchmarks)."""
    return result.n / result.elapsed if result.elapsed > 0 else math.inf
