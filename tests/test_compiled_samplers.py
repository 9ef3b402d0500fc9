"""The compiled samplers: NumPy's normal stream value for value, the guide-table inverse CDF
searchsorted's answer for every uniform, and the fused log-ratios bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import klest
from klest import native
from klest.distributions.log_ratio import log_ratio_function, sample_log_ratio
from klest.engine.plan import block_generator
from klest.native.sampler import family_draws, scaled_normal, standard_normal


def twin_generators(seed: int, key: tuple[int, ...]) -> tuple[np.random.Generator, ...]:
    return tuple(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)) for _ in "ab")


@pytest.mark.parametrize("seed", [0, 1, 2020, 2**63 + 5])
def test_same_stream_as_numpy_over_a_million_draws(seed: int) -> None:
    ours, numpys = twin_generators(seed, (3, 7))
    got = standard_normal(ours, 1_000_003)
    assert np.array_equal(got, numpys.standard_normal(1_000_003))
    # the ziggurat's tail branch (|x| > r = 3.654, about 260 per million) was exercised
    assert np.count_nonzero(np.abs(got) > 3.6541528853610088) > 100


@pytest.mark.parametrize("size", [0, 1, 2047, 65_536, (300, 7), (2, 3, 1000)])
def test_shapes_and_sizes_match_numpy(size) -> None:
    ours, numpys = twin_generators(11, (0,))
    got = standard_normal(ours, size)
    want = numpys.standard_normal(size)
    assert got.shape == want.shape and np.array_equal(got, want)


def test_generator_is_left_where_numpy_leaves_it() -> None:
    ours, numpys = twin_generators(5, (1, 2))
    # a buffered 32-bit half (from a float32 draw) must survive untouched
    assert ours.random(dtype=np.float32) == numpys.random(dtype=np.float32)
    standard_normal(ours, 100_000)
    numpys.standard_normal(100_000)
    assert ours.bit_generator.state == numpys.bit_generator.state
    assert ours.random(dtype=np.float32) == numpys.random(dtype=np.float32)
    assert ours.integers(0, 2**40, size=5).tolist() == numpys.integers(0, 2**40, size=5).tolist()
    assert np.array_equal(standard_normal(ours, 50_000), numpys.standard_normal(50_000))


@pytest.mark.parametrize("level", range(native.best_simd_level() + 1))
def test_every_call_size_continues_numpys_stream_at_every_simd_level(level: int) -> None:
    """The PCG64 outputs are made ahead in batches of 512 and the ziggurat runs 4 draws at a
    time: calls of every size from 1 to past two batches, one after the other on the same
    generator, start and stop at every position in a batch and in a vector, and each must
    leave the generator exactly where NumPy's own draws leave it."""
    ours, numpys = twin_generators(17, (4,))
    try:
        native.set_simd_level(level)
        for size in range(1, 1100):
            got = standard_normal(ours, size)
            assert np.array_equal(got, numpys.standard_normal(size)), size
            assert ours.bit_generator.state == numpys.bit_generator.state, size
    finally:
        native.set_simd_level(native.best_simd_level())


FAMILY_CASES = [
    ("laplace", 0.0, 1.0),
    ("laplace", -0.5, 3.0),
    ("gamma", 2.0, 1.0),
    ("gamma", 1.0 + 2.0**-40, 0.25),  # b = shape - 1/3 barely above 2/3
    ("gamma", 1e6, 2.0),
    ("standard_t", 5.0, 0.0),
    ("standard_t", 2.0 + 2.0**-40, 0.0),
    ("beta", 2.0, 3.0),
    ("beta", 1.5, 400.0),
]


def numpy_family(rng: np.random.Generator, family: str, size, p0: float, p1: float):
    return (
        rng.standard_t(p0, size) if family == "standard_t" else getattr(rng, family)(p0, p1, size)
    )


@pytest.mark.parametrize(("family", "p0", "p1"), FAMILY_CASES)
def test_family_draws_are_numpys_own(family: str, p0: float, p1: float) -> None:
    ours, numpys = twin_generators(23, (5, 1))
    got = family_draws(ours, family, 400_003, p0, p1)
    assert np.array_equal(got, numpy_family(numpys, family, 400_003, p0, p1))
    assert ours.bit_generator.state == numpys.bit_generator.state
    assert np.array_equal(
        family_draws(ours, family, (3, 5), p0, p1), numpy_family(numpys, family, (3, 5), p0, p1)
    )


@pytest.mark.parametrize("level", range(native.best_simd_level() + 1))
def test_family_calls_of_every_size_continue_numpys_stream(level: int) -> None:
    """As for the normal draws: the made-ahead batches end anywhere in a call, with the
    gamma's rejections (a normal and a uniform per try) consuming outputs unevenly."""
    ours, numpys = twin_generators(29, (6,))
    try:
        native.set_simd_level(level)
        for size in range(1, 600):
            family, p0, p1 = FAMILY_CASES[size % len(FAMILY_CASES)]
            got = family_draws(ours, family, size, p0, p1)
            assert np.array_equal(got, numpy_family(numpys, family, size, p0, p1)), size
            assert ours.bit_generator.state == numpys.bit_generator.state, size
    finally:
        native.set_simd_level(native.best_simd_level())


@pytest.mark.parametrize(
    ("family", "p0", "p1"),
    [("gamma", 0.5, 1.0), ("gamma", 1.0, 2.0), ("standard_t", 1.5, 0.0), ("beta", 0.5, 2.0),
     ("beta", 1.0, 1.0), ("laplace", 0.0, 0.0)],
)  # fmt: skip
def test_family_parameters_outside_the_compiled_branches_are_numpys_draws(
    family: str, p0: float, p1: float
) -> None:
    ours, numpys = twin_generators(31, (7,))
    got = family_draws(ours, family, 10_000, p0, p1)
    assert np.array_equal(got, numpy_family(numpys, family, 10_000, p0, p1))
    assert ours.bit_generator.state == numpys.bit_generator.state


def test_family_draws_refuse_what_is_not_a_generator_or_a_family() -> None:
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator, got RandomState"):
        family_draws(np.random.RandomState(0), "gamma", 3, 2.0, 1.0)
    with pytest.raises(ValueError, match="unknown family 'poisson'; valid: laplace, gamma"):
        family_draws(np.random.default_rng(0), "poisson", 3, 2.0)


def test_other_bit_generators_go_through_numpy() -> None:
    ours, numpys = (np.random.Generator(np.random.Philox(9)) for _ in "ab")
    assert np.array_equal(standard_normal(ours, 100_000), numpys.standard_normal(100_000))


@pytest.mark.parametrize("size", [10, 100_000])
def test_scaled_normal_is_multiply_then_add(size: int) -> None:
    ours, numpys = twin_generators(4, (0, 0))
    want = numpys.standard_normal(size)
    want *= 1.7
    want += -0.3
    assert np.array_equal(scaled_normal(ours, size, 1.7, -0.3), want)


def test_distributions_and_engine_blocks_use_the_numpy_stream() -> None:
    q = klest.Normal(loc=2.0, scale=0.5)
    want = block_generator(3, 1, 4).standard_normal(70_000) * 0.5 + 2.0
    assert np.array_equal(q.sample(block_generator(3, 1, 4), 70_000), want)
    mvn = klest.MultivariateNormal(mean=[0.0, 1.0], cov=[[1.0, 0.5], [0.5, 2.0]])
    z = np.random.default_rng(8).standard_normal((40_000, 2))
    expected = mvn.mean() + z @ np.linalg.cholesky([[1.0, 0.5], [0.5, 2.0]]).T
    assert np.allclose(mvn.sample(np.random.default_rng(8), 40_000), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [100, 70_000])
@pytest.mark.parametrize("p", [klest.Normal(loc=1.0, scale=0.7), klest.Normal(loc=-2.0, scale=0.7)])
def test_fused_log_ratio_equals_sample_then_log_ratio(size: int, p) -> None:
    for q in (
        klest.Normal(loc=0.3, scale=0.7),
        klest.Normal(loc=0.3, scale=1.9),
    ):  # affine, quadratic
        fused = sample_log_ratio(q, p, block_generator(1, 0, 2), size)
        plain = log_ratio_function(q, p)(q.sample(block_generator(1, 0, 2), size))
        assert np.array_equal(fused, plain)
        generic = p.log_prob(q.sample(block_generator(1, 0, 2), size)) - q.log_prob(
            q.sample(block_generator(1, 0, 2), size)
        )
        assert np.allclose(fused, generic, rtol=1e-12, atol=1e-12)


def test_threads_sharing_one_generator_never_reuse_draws() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(12)
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda _: standard_normal(rng, 50_000), range(16)))
    drawn = np.sort(np.concatenate(parts))
    # the 16 calls consumed the stream once, in some order: the same multiset of values
    assert np.array_equal(drawn, np.sort(np.random.default_rng(12).standard_normal(800_000)))


@pytest.mark.parametrize("k", [1, 2, 3, 7, 1000, 131_072])
@pytest.mark.parametrize("shape", ["flat", "peaked", "holes"])
def test_guide_table_inverse_cdf_is_searchsorted(k: int, shape: str) -> None:
    rng = np.random.default_rng(k)
    logits = rng.standard_normal(k) * (8.0 if shape == "peaked" else 1.0)
    if shape == "holes" and k > 2:  # categories of zero mass, which are never drawn
        logits[rng.random(k) < 0.5] = -np.inf
        logits[0] = 0.0
    q = klest.Categorical(logits=logits)
    g = q._guide.size - 1
    u = np.concatenate([rng.random(200_000), np.arange(g) / g, [0.0, 1.0 - 2.0**-53]])
    got = q.inverse_cdf(u)
    assert np.array_equal(got, np.searchsorted(q._cdf, u, side="right"))
    assert np.all(q.probs[got] > 0)


def test_categorical_log_ratio_in_one_pass() -> None:
    rng = np.random.default_rng(2)
    logits = rng.standard_normal(5000) * 2.0
    logits[::7] = -np.inf  # p has holes: log-ratio -inf there
    q = klest.Categorical(logits=rng.standard_normal(5000))
    p = klest.Categorical(logits=logits)
    fused = sample_log_ratio(q, p, np.random.default_rng(3), 50_000)
    plain = log_ratio_function(q, p)(q.sample(np.random.default_rng(3), 50_000))
    assert np.array_equal(fused, plain)
    assert np.isneginf(fused).any()
    batched = klest.Categorical(logits=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unbatched"):
        batched.inverse_cdf(np.array([0.5]))
    with pytest.raises(ValueError, match="5000 entries"):
        q.inverse_cdf(np.array([0.5]), table=np.zeros(3))


@pytest.mark.parametrize(
    "probs",
    [
        [0.25, 0.25, 0.5],  # one bucket, the short scan
        [0.25, 0.0, 0.0, 0.25, 0.5],  # repeated CDF values: zero-mass categories are skipped
        [2.0**-10] * 40 + [41 * 2.0**-10] * 24,  # 40 categories in bucket 0: the binary search
    ],
    ids=["scan", "holes", "binary-search"],
)
def test_inverse_cdf_with_u_exactly_on_cdf_values(probs: list[float]) -> None:
    # dyadic probabilities: the CDF is exact, so u can sit exactly on each CDF value, where
    # the guide table's `cdf[i] <= u` (not `<`) decides: searchsorted(side="right") skips it
    q = klest.Categorical(probs=probs)
    cdf = q._cdf
    assert np.array_equal(cdf, np.cumsum(probs))  # exact
    on = cdf[cdf < 1.0]
    g = q._guide.size - 1
    u = np.concatenate([on, np.nextafter(on, 0.0), np.nextafter(on, 1.0), np.arange(g) / g])
    for table in (None, np.arange(len(probs), dtype=np.float64) * 10.0):
        got = q.inverse_cdf(u, table=table)
        want = np.searchsorted(cdf, u, side="right")
        assert np.array_equal(got, want if table is None else table[want])
    assert np.all(q.probs[q.inverse_cdf(u)] > 0)


def test_inverse_cdf_refuses_u_outside_the_unit_interval() -> None:
    q = klest.Categorical(probs=[0.1, 0.2, 0.3, 0.4])
    for bad in (1.0, 1.5, 50.0, -1e-300, -np.inf, np.inf, np.nan):
        u = np.array([0.5, 0.25, bad, 0.0])
        for table in (None, np.zeros(4)):
            with pytest.raises(ValueError, match=r"u must lie in \[0, 1\), got .* at index 2$"):
                q.inverse_cdf(u, table=table)
    with pytest.raises(ValueError, match=r"at index \(1, 0\)"):
        q.inverse_cdf(np.array([[0.5, 0.5], [1.0, 0.5]]))


def test_inverse_cdf_converts_or_refuses_its_arguments() -> None:
    q = klest.Categorical(probs=[0.25, 0.25, 0.5])
    # any real dtype, any shape, any strides: the result has u's shape
    u = np.array([[0.1, 0.3], [0.6, 0.9]], dtype=np.float32).T
    assert q.inverse_cdf(u).tolist() == [[0, 2], [1, 2]]
    assert q.inverse_cdf([0, 0.5]).tolist() == [0, 2]
    assert q.inverse_cdf(np.zeros(0)).shape == (0,)
    assert q.inverse_cdf(np.float64(0.3)).shape == ()
    assert q.inverse_cdf(np.array([0.3]), table=[1, 2, 3]).tolist() == [2.0]
    with pytest.raises(TypeError, match="u must be real numbers, got complex128"):
        q.inverse_cdf(np.array([0.5 + 0j]))
    with pytest.raises(TypeError, match="u must be real numbers, got <U"):
        q.inverse_cdf(np.array(["0.5"]))
    with pytest.raises(TypeError, match="table must be real numbers, got object"):
        q.inverse_cdf(np.array([0.5]), table=np.array([1.0, None, 2.0]))
    with pytest.raises(ValueError, match=r"table must have 3 entries, got shape \(3, 1\)"):
        q.inverse_cdf(np.array([0.5]), table=np.zeros((3, 1)))


def test_scaled_normal_refuses_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        scaled_normal(np.random.RandomState(0), 10, 1.0, 0.0)  # type: ignore[arg-type]
    for size in (-1, (5000, -1), (-1, -5000)):
        with pytest.raises(ValueError, match="size must be non-negative"):
            scaled_normal(rng, size, 1.0, 0.0)
    for size in (2.5, "10", (3, 1.5), None):
        with pytest.raises(TypeError, match="size must be an int or a tuple of ints"):
            scaled_normal(rng, size, 1.0, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"size .* is too large"):
        scaled_normal(rng, (2**40, 2**40), 1.0, 0.0)
    with pytest.raises(TypeError, match="scale must be a real number"):
        scaled_normal(rng, 3000, np.ones(2), 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quadratic must be 3 numbers"):
        scaled_normal(rng, 3000, 1.0, 0.0, quadratic=(1.0, 2.0))  # type: ignore[arg-type]
    # non-finite parameters are arithmetic, as in NumPy: the same values on both paths
    for size in (10, 3000):
        assert np.isnan(scaled_normal(rng, size, np.nan, 0.0)).all()
        assert np.isinf(scaled_normal(rng, size, 1.0, np.inf)).all()
    assert scaled_normal(rng, (0, 3), 1.0, 0.0).shape == (0, 3)


def test_native_wrappers_refuse_what_the_kernels_would_index_out_of_bounds() -> None:
    from klest import native as _native

    q = klest.Categorical(probs=[0.25, 0.25, 0.5])
    cdf, guide, u = q._cdf, q._guide, np.array([0.5])
    bad_guide = guide.copy()
    bad_guide[0] = 7
    cases = [
        (lambda: _native.inverse_cdf(cdf, bad_guide, u), ValueError, r"guide entries must be"),
        (lambda: _native.inverse_cdf(cdf[:2], guide, u), ValueError, "ending in 1.0"),
        (lambda: _native.inverse_cdf(cdf, guide[:1], u), ValueError, "power of two"),
        (lambda: _native.inverse_cdf(cdf, guide.astype(np.int64), u), TypeError, "int32"),
        (lambda: _native.inverse_cdf(cdf, guide, u, np.zeros(2)), ValueError, "table must"),
        (lambda: _native.inverse_cdf(cdf, guide, np.array([0.5, 50.0])), ValueError, "index 1"),
        (lambda: _native.inverse_cdf(cdf, guide, u.astype(np.float32)), TypeError, "float64"),
        (
            lambda: _native.fill_normal(np.zeros(3, np.uint64), np.zeros(9), 1, 0),
            ValueError,
            r"state must have shape \(4,\)",
        ),
        (
            lambda: _native.fill_normal(np.zeros(4, np.uint64), np.zeros(9)[::3], 1, 0),
            ValueError,
            "C-contiguous",
        ),
        (
            lambda: _native.fill_normal(np.zeros(4, np.uint64), np.broadcast_to(0.0, (9,)), 1, 0),
            ValueError,
            "C-contiguous",
        ),
        (
            lambda: _native.k3_from_expm1(np.zeros(5), np.zeros(9), np.zeros(9)),
            ValueError,
            r"expm1_l must have shape \(9,\)",
        ),
        (
            lambda: _native.k3_from_expm1(np.zeros(9), np.zeros(9), np.zeros(8)),
            ValueError,
            r"out must have shape \(9,\)",
        ),
    ]
    read_only = np.zeros(9)
    read_only.flags.writeable = False
    cases.append(
        (lambda: _native.k3_from_expm1(np.zeros(9), np.zeros(9), read_only), ValueError, "writable")
    )
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
