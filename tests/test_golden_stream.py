"""Golden streams: exact draws for fixed seeds, kept apart from the statistical tests.

These numbers are the definition of "klest stream v1" (klest.engine.plan): where NumPy's own
samplers differ from them, NumPy changed, not klest (tests/test_stream_contract.py's canary).
If one of these fails, the random stream changed (numpy's generator, klest's seeding scheme
or a sampler's algorithm): every published number from a fixed seed moves with it. Update the
constants only deliberately, with a note in the commit message. Integer and Gaussian draws are
compared exactly; draws that go through libm or LAPACK (gamma, Cholesky) to 1e-14, and the
engine's merged means to 1e-12 (their last bits depend on the BLAS summation kernel of the
CPU, not on the stream).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import klest
from klest.engine.plan import block_generator


def test_block_seeding_stream() -> None:
    # block 0 of case 0 for seed 2020: SeedSequence(2020, spawn_key=(0, 0))
    assert block_generator(2020, 0, 0).standard_normal(3).tolist() == [
        -2.6135674097448662,
        -0.22620290188940934,
        -0.8628455572914312,
    ]


def test_normal_stream() -> None:
    draws = klest.Normal(loc=1.0, scale=2.0).sample(block_generator(7, 1, 3), 3)
    assert draws.tolist() == [-0.9768511143779552, 1.4788961441467723, 3.1903714987140273]


def test_categorical_inverse_cdf_stream() -> None:
    q = klest.Categorical(probs=[0.1, 0.2, 0.3, 0.4])
    assert q.sample(np.random.default_rng(5), 8).tolist() == [3, 3, 2, 1, 0, 2, 2, 0]


def test_gamma_and_mvn_streams() -> None:
    gamma = klest.Gamma(shape=2.0, rate=1.5).sample(np.random.default_rng(5), 3)
    assert gamma == pytest.approx([0.5539646840433412, 0.9107698999005145, 2.403706670787116],
                                  rel=1e-14)  # fmt: skip
    mvn = klest.MultivariateNormal(mean=[0.0, 1.0], cov=[[1.0, 0.5], [0.5, 2.0]])
    draws = mvn.sample(np.random.default_rng(5), 2)
    expected = [[-0.8019314252534474, -1.1529279871283982],
                [-0.24836162209524854, 1.4320159588737345]]  # fmt: skip
    assert np.allclose(draws, expected, rtol=1e-14, atol=0)


def test_engine_stream() -> None:
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0, scale=1.0)
    res = klest.simulate(q, p, ["k1", "k2", "k3"], n=100_003, seed=42, block_size=10_000,
                         exact=False)  # fmt: skip
    frame = res.to_frame()
    golden = {
        "k1": ("0x1.fdf0031570e0fp-2", "0x1.ff32495cc9b7ap-1"),
        "k2": ("0x1.3f14c201fb182p-1", "0x1.7b7564b9cb5d0p-1"),
        "k3": ("0x1.0063f161b06adp-1", "0x1.746f8fdbbe122p-1"),
    }
    for name, (mean, var) in golden.items():
        assert frame.loc[name, "mean"] == pytest.approx(float.fromhex(mean), rel=1e-12)
        assert frame.loc[name, "var"] == pytest.approx(float.fromhex(var), rel=1e-12)


def test_normal_block_of_the_engine_stream() -> None:
    # a whole engine-sized block (klest's compiled ziggurat, not NumPy's small-size path);
    # its first draws are test_normal_stream's, and 16 of its draws take the ziggurat's tail
    draws = klest.Normal(loc=1.0, scale=2.0).sample(block_generator(7, 1, 3), 65_536)
    assert [v.hex() for v in draws[:3]] == [
        "-0x1.f425d44aa102ap-1", "0x1.7a98f00d4a77bp+0", "0x1.985e17e0889bcp+1",
    ]  # fmt: skip
    assert int((np.abs(draws - 1.0) > 2.0 * 3.6541528853610088).sum()) == 16
    assert (draws.max().hex(), draws.min().hex()) == (
        "0x1.2d71c4fc6c62cp+3", "-0x1.cf9ba8a9c8894p+2",
    )  # fmt: skip
    digest = hashlib.sha256(draws.astype("<f8").tobytes()).hexdigest()
    assert digest == "5671c3b40cf01f5f2af4e567dedc5dade9efe1c870010c8fc7abda0909bac68a"


def test_categorical_block_of_the_engine_stream() -> None:
    # klest's inverse CDF of PCG64 doubles, drawn from block 5 of case 2
    q = klest.Categorical(probs=[0.1, 0.2, 0.3, 0.4])
    draws = q.sample(block_generator(11, 2, 5), 10_000)
    assert draws[:8].tolist() == [1, 3, 3, 3, 0, 2, 2, 2]
    assert np.bincount(draws, minlength=4).tolist() == [969, 2023, 3066, 3942]
    digest = hashlib.sha256(draws.astype("<i8").tobytes()).hexdigest()
    assert digest == "baa2ddc92bf9a655db170dc926df042a01b69504beadfeaa71bc2649dfaa8e5c"
