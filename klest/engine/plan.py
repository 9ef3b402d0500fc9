"""What determines a run's numbers: its plan, the random stream and the task layout.

A run of n draws of case c is cut into blocks of ``block_size`` draws; blocks are grouped into
tasks of :data:`BLOCKS_PER_TASK` blocks (:meth:`RunPlan.tasks`), so the merge tree depends on
(n, block size) only, never on the workers that run the tasks.

**klest stream v1** (:data:`STREAM_VERSION`) is the contract that fixes the draws:

1. Seeding. Block k of case c draws from
   ``Generator(PCG64(SeedSequence(seed, spawn_key=(c, k))))``, built explicitly
   (:func:`block_generator`), never through ``default_rng`` (which may change its bit
   generator). NumPy promises a stable stream for SeedSequence and PCG64, its bit generators;
   it does not promise one for ``Generator`` methods. The engine's compiled passes take
   those generators' PCG64 states computed directly (:func:`klest.engine.seeding.
   block_states`: NumPy's seeding written out, checked against NumPy's own).
2. Normal and MultivariateNormal draws (and the fused Normal-Normal log-ratio) come from
   klest's own PCG64 + 256-layer ziggurat (:func:`klest.native.scaled_normal`,
   :func:`klest.native.standard_normal`): NumPy's algorithm, value for value and with the same
   final generator state, frozen in klest. A MultivariateNormal then multiplies by its
   Cholesky factor (BLAS: the last bits depend on the CPU's kernel, not on the stream).
   GaussianMixture's normal parts come from the same sampler; the engine's MultivariateNormal
   log-ratio is computed from the standard normal rows themselves (x is not formed).
3. Uniform doubles are PCG64's own: ``(next_uint64 >> 11) * 2**-53`` (its ``next_double``,
   part of the bit generator), which klest takes from ``Generator.random``. Categorical
   draws are klest's inverse CDF (:meth:`klest.Categorical.inverse_cdf`: the first index
   whose CDF exceeds u) of those doubles (a batched Categorical: ``searchsorted`` over each
   row's CDF, the same rule); Bernoulli is ``u < p``; GaussianMixture picks its component by
   the same rule over its cumulative weights.
4. Everything else draws through NumPy ``Generator`` methods, and so depends on NumPy's
   version: Gamma (``gamma``), Beta (``beta``), StudentT (``standard_t``), Poisson
   (``poisson``), Laplace (``laplace``), Exponential (``exponential``), LogNormal
   (``lognormal``) and Uniform (``uniform``). Generators other than
   PCG64 (never the engine's) also call NumPy's ``standard_normal``. Gamma (shape > 1),
   Beta (both shapes > 1), StudentT (df > 2) and Laplace are drawn by a compiled port of
   NumPy's algorithms (:func:`klest.native.family_draws`, ``csrc/family_stream.h``) on
   klest's PCG64 and ziggurat, faster; they stay defined as NumPy's methods' draws, which
   the port equals value for value (tests/test_compiled_samplers.py), and the NumPy
   fallback calls NumPy's methods.

klest's golden streams (``tests/test_golden_stream.py``) are the definition of the stream.
``tests/test_stream_contract.py`` keeps a canary: klest's sampler equals NumPy's own
``Generator.standard_normal`` and PCG64's doubles equal ``Generator.random``; if NumPy ever
changes those, the canary fails and says so: the golden streams stay the definition (klest's
compiled sampler does not move; what still calls NumPy must then move into klest). Every
:class:`klest.engine.results.SimulationResult` records :func:`stream_versions` (the stream
version and NumPy's version) among its versions, and so do the results store's meta.json and
case key (a case stored under another stream or NumPy version is recomputed).

>>> plan = RunPlan(None, None, ("k1",), n=100, seed=0, case=0, block_size=30, edges=None)
>>> plan.n_blocks, plan.block_length(3), plan.tasks()
(4, 10, [(0, 4)])
>>> STREAM_VERSION
'klest stream v1'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from klest.distributions.base import Distribution

__all__ = ["BLOCKS_PER_TASK", "STREAM_VERSION", "RunPlan", "block_generator", "stream_versions"]

BLOCKS_PER_TASK = 16  # fixed: part of what makes results independent of the worker count

#: the random stream's contract (this module's docstring); a new version whenever any draw of
#: any family for a fixed (seed, case, block) changes
STREAM_VERSION = "klest stream v1"


@dataclass(frozen=True)
class RunPlan:
    """Everything a worker needs to run blocks of one case (picklable)."""

    q: Distribution
    p: Distribution
    estimators: tuple[str, ...]
    n: int
    seed: int
    case: int
    block_size: int
    edges: np.ndarray | None

    @property
    def n_blocks(self) -> int:
        return -(-self.n // self.block_size)

    def block_length(self, k: int) -> int:
        return min(self.block_size, self.n - k * self.block_size)

    def tasks(self) -> list[tuple[int, int]]:
        """(first block, block count) of each task, in merge order."""
        return [
            (first, min(BLOCKS_PER_TASK, self.n_blocks - first))
            for first in range(0, self.n_blocks, BLOCKS_PER_TASK)
        ]


def block_generator(seed: int, case: int, block: int) -> np.random.Generator:
    """The generator of block ``block`` of case ``case``:
    ``Generator(PCG64(SeedSequence(seed, spawn_key=(case, block))))``, built explicitly.

    >>> rng = block_generator(2020, 0, 0)
    >>> type(rng.bit_generator).__name__, rng.bit_generator.seed_seq.spawn_key
    ('PCG64', (0, 0))
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(case, block))
    return np.random.Generator(np.random.PCG64(sequence))


def stream_versions() -> dict[str, str]:
    """What the draws depend on besides (seed, case, block): the stream and NumPy's version.

    >>> sorted(stream_versions())
    ['numpy', 'stream']
    """
    return {"stream": STREAM_VERSION, "numpy": np.__version__}
