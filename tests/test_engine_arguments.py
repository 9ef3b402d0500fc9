"""simulate's arguments: seed=None draws fresh entropy (recorded, replayable); workers capped."""

from __future__ import annotations

import numpy as np
import pytest

import klest

Q, P = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.5, scale=1.0)


def test_seed_none_draws_fresh_entropy_and_records_it() -> None:
    first = klest.simulate(Q, P, ["k1", "k3"], n=5000, seed=None)
    second = klest.simulate(Q, P, ["k1", "k3"], n=5000, seed=None)
    assert isinstance(first.seed, int) and first.seed != second.seed
    assert first.seed.bit_length() > 64  # SeedSequence's 128 bits of OS entropy
    assert first.metadata()["seed"] == first.seed
    replay = klest.simulate(Q, P, ["k1", "k3"], n=5000, seed=first.seed)
    assert np.array_equal(replay.stats.mean, first.stats.mean)
    assert replay.to_frame().equals(first.to_frame())


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_invalid_seeds_are_rejected(seed) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative integer or None"):
        klest.simulate(Q, P, ["k1"], n=100, seed=seed)


def test_too_many_workers_are_capped_with_a_warning() -> None:
    cpus = klest.engine.runner.available_cpus()
    with pytest.warns(UserWarning, match=f"workers=1000 is more than the {cpus} CPUs"):
        capped = klest.simulate(
            Q, P, ["k1"], n=3 * 16 * 1000, seed=1, block_size=1000, workers=1000
        )
    serial = klest.simulate(Q, P, ["k1"], n=3 * 16 * 1000, seed=1, block_size=1000)
    assert capped.to_frame().equals(serial.to_frame())
