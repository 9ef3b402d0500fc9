"""klest.engine.seeding.block_states: the PCG64 states of klest stream v1's blocks, computed
without building their generators, equal NumPy's own (SeedSequence with the spawn key
(case, block), then PCG64's seeding) -- a canary too: a change in NumPy's seeding shows here."""

from __future__ import annotations

import numpy as np
import pytest

from klest import native
from klest.engine.plan import block_generator
from klest.engine.seeding import block_states


def numpy_states(seed: int, case: int, blocks) -> np.ndarray:
    generators = [block_generator(seed, case, k) for k in blocks]
    with native.pcg64_states([g.bit_generator for g in generators]) as states:
        return states.copy()


SEEDS = [0, 1, 2020, 2**32 - 1, 2**32, 2**64 + 5, 2**96 - 1, 2**96, 2**127 + 3, 2**200 + 17]
CASES = [0, 1, 7, 2**32 - 1, 2**32, 2**40]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES)
def test_the_states_are_those_of_the_blocks_generators(seed: int, case: int) -> None:
    # block indices of one 32-bit word, and of two (NumPy's SeedSequence then computes them)
    for blocks in (range(16), range(16, 32), [2**32 - 1, 2**32, 5, 2**33 + 1], [10**6]):
        states = block_states(seed, case, blocks)
        assert states.dtype == np.uint64 and states.shape == (len(blocks), 4)
        assert np.array_equal(states, numpy_states(seed, case, blocks)), (seed, case, blocks)


def test_the_states_draw_what_the_generators_draw() -> None:
    states = block_states(2020, 3, range(4))
    out = np.empty(1000)
    for k, state in enumerate(states):
        native.fill_normal(state, out, 1.0, 0.0, None)
        assert np.array_equal(out, block_generator(2020, 3, k).standard_normal(1000))


def test_no_block_is_an_empty_result() -> None:
    assert block_states(5, 0, []).shape == (0, 4)
