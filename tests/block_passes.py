"""What the tests of the engine's one-pass kernels share (tests/test_block_stats.py,
tests/test_drawn_block_stats.py, tests/test_mixture_pass.py): the arrays route of one block,
the bits of an accumulator, the run of a pass over two blocks from fixed PCG64 states, and
the GaussianMixture pairs of the mixture pass.

    from block_passes import EDGES, NAMES, arrays_route, record, two_block_run
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import klest
from klest import native
from klest.engine.moments import Accumulator

#: the series of k1, k2, k3 and r - 1, as the compiled passes name them
NAMES = ["negate", "half_square", "k3", "expm1"]
#: the histogram edges of those tests' accumulators
EDGES = np.linspace(-3.0, 6.0, 31)


def arrays_route(l: np.ndarray, edges: np.ndarray) -> Accumulator:
    """The arrays route of one block's log-ratio l: klest's expm1, then the accumulator."""
    accumulator = Accumulator(4, edges, 5, hist_rows=3)
    em1 = native.expm1(l, np.empty_like(l))
    accumulator.add(["negate", "half_square", "k3", em1], l, em1)
    return accumulator


def record(accumulator: Accumulator) -> tuple[bytes, ...]:
    """The bits of an accumulator's statistics, co-moments and histogram."""
    return tuple(
        a.tobytes()
        for a in (accumulator.stats, accumulator.joint, accumulator.comoment, accumulator.histogram)
    )


def two_block_run(kernel: Callable[..., None], *parameters: object) -> tuple[bytes, ...]:
    """The bits a pass leaves: ``kernel(NAMES, (states, lengths, *parameters), <fresh
    accumulator arrays>, 3, 7, -3.0, 0.3)`` over two blocks (3,000 and 1,100 draws) from
    fixed PCG64 states, then the states it advanced."""
    stats = np.zeros((4, len(native.FIELDS)))
    stats[:, 5], stats[:, 6] = np.inf, -np.inf
    arrays = [stats, np.zeros(5), np.zeros((4, 4)), np.zeros((4, 32), np.int64)]
    state = np.array([0x1234, 0x5678, 0x9ABC, 0xDEF1], dtype=np.uint64)
    states = np.stack([state, state + np.uint64(2)])  # two blocks (odd increments)
    lengths = np.array([3000, 1100], np.int64)
    kernel(NAMES, (states, lengths, *parameters), *arrays, 3, 7, -3.0, 0.3)
    return (*(a.tobytes() for a in arrays), states.tobytes())


GM = klest.GaussianMixture  # (short: the pairs below)

MIXTURE_PAIRS = {
    "two and two": (
        GM(weights=[0.3, 0.7], locs=[-1.0, 1.0], scales=[0.5, 1.0]),
        GM(weights=[0.5, 0.5], locs=[-0.5, 1.5], scales=[1.0, 0.7]),
    ),
    "one component, zero weight in p": (
        GM(weights=[1.0], locs=[0.3], scales=[2.0]),
        GM(weights=[0.2, 0.0, 0.8], locs=[-1.0, 0.0, 1.0], scales=[1.0, 3.0, 0.5]),
    ),
    # more components than the comparison pick (8): the binary search over the cut points
    "twelve components": (
        GM(
            weights=np.arange(1, 13) / 78.0,
            locs=np.linspace(-3, 3, 12),
            scales=np.linspace(0.2, 2.0, 12),
        ),
        GM(weights=[0.0, 0.5, 0.5], locs=[9.0, 0.0, 1.0], scales=[1.0, 1.5, 0.5]),
    ),
    # zero weights first, between and last: those components are never picked
    "zero weights in q": (
        GM(
            weights=[0.0, 0.4, 0.0, 0.6, 0.0],
            locs=[5.0, -1.0, 2.0, 1.0, 7.0],
            scales=[1.0, 0.5, 1.0, 1.0, 1.0],
        ),
        GM(weights=[0.5, 0.5], locs=[-0.5, 1.5], scales=[1.0, 0.7]),
    ),
}
