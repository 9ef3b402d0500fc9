"""The engine: reproducibility across workers and executors, bookkeeping, bad input."""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import klest
from klest.engine.moments import block_moments, merge
from klest.engine.plan import RunPlan
from klest.engine.results import ConvergenceWarning
from klest.engine.runner import block_values, simulate

Q = klest.Normal(loc=0.0, scale=1.0)
P = klest.Normal(loc=1.0, scale=1.0)
ESTIMATORS = ["k1", "k2", "k3", "rev_kl"]


def _same(a, b) -> None:
    """Bit-identical statistics (NaN == NaN)."""
    for field in (
        "count",
        "mean",
        "m2",
        "m3",
        "m4",
        "minimum",
        "maximum",
        "negative",
        "nonfinite",
        "posinf",
        "neginf",
        "joint_mean",
        "comoment",
        "histogram",
    ):
        x, y = getattr(a.stats, field), getattr(b.stats, field)
        assert np.array_equal(x, y, equal_nan=True), field
    assert a.stats.joint_count == b.stats.joint_count
    fa, fb = a.to_frame(), b.to_frame()
    numeric = fa.select_dtypes("number").columns
    assert np.array_equal(fa[numeric].to_numpy(), fb[numeric].to_numpy(), equal_nan=True)


@pytest.fixture(scope="module")
def serial():
    # 40 blocks of 5,000 draws: 3 tasks of up to 16 blocks, the last one partial
    return simulate(Q, P, ESTIMATORS, n=197_003, seed=11, block_size=5_000, exact=False)


def test_process_pool_is_bit_identical(serial) -> None:
    for workers in (2, 3):
        parallel = simulate(
            Q, P, ESTIMATORS, n=197_003, seed=11, block_size=5_000, workers=workers, exact=False
        )
        _same(serial, parallel)


def test_any_executor_is_bit_identical(serial) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = simulate(
            Q, P, ESTIMATORS, n=197_003, seed=11, block_size=5_000, executor=pool, exact=False
        )
    _same(serial, threaded)


def test_thread_executor_with_long_blocks_is_bit_identical() -> None:
    # long blocks are where a multi-threaded BLAS would split the dot products; threads share
    # the process-wide BLAS limit, which must hold for the whole run (a race once broke this)
    kwargs = {"n": 2_500_000, "seed": 5, "exact": False}
    serial = simulate(Q, P, ["k1", "k3"], **kwargs)
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=4) as pool:
            _same(serial, simulate(Q, P, ["k1", "k3"], executor=pool, **kwargs))


def test_dask_local_cluster_is_bit_identical(serial) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_dask = simulate(
            Q,
            P,
            ESTIMATORS,
            n=197_003,
            seed=11,
            block_size=5_000,
            executor=client.get_executor(),
            exact=False,
        )
    _same(serial, on_dask)


def test_result_depends_on_seed_n_block_size_and_case(serial) -> None:
    base = serial.to_frame()["mean"]
    for kwargs in ({"seed": 12}, {"n": 197_004}, {"block_size": 5_001}, {"case": 1}):
        args = {"n": 197_003, "seed": 11, "block_size": 5_000, **kwargs}
        other = simulate(Q, P, ESTIMATORS, exact=False, **args).to_frame()["mean"]
        assert not np.array_equal(base.to_numpy(), other.to_numpy()), kwargs


def test_block_seeding_follows_design() -> None:
    plan = RunPlan(Q, P, ("k1",), 30, 5, 2, 10, None)
    expected = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(2, 1))).standard_normal(
        10
    )
    log_ratio = P.log_prob(expected) - Q.log_prob(expected)
    assert np.allclose(block_values(plan, 1)[0], -log_ratio, rtol=0, atol=1e-12)
    assert [row.shape for row in block_values(plan, 2)] == [(10,), (10,)]


def test_merged_moments_equal_one_pass_statistics() -> None:
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, size=(3, 10_000)) - 1.0
    whole = block_moments(values, None, 1)
    pieces = [
        block_moments(values[:, a:b], None, 1) for a, b in ((0, 1), (1, 4000), (4000, 10_000))
    ]
    merged = merge(merge(pieces[0], pieces[1]), pieces[2])
    centred = values - values.mean(axis=1, keepdims=True)
    for got in (whole, merged):
        assert np.allclose(got.mean, values.mean(axis=1), rtol=1e-13)
        assert np.allclose(got.m2, (centred**2).sum(axis=1), rtol=1e-12)
        assert np.allclose(got.m3, (centred**3).sum(axis=1), rtol=1e-10)
        assert np.allclose(got.m4, (centred**4).sum(axis=1), rtol=1e-12)
        assert np.allclose(got.comoment, centred @ centred.T, rtol=1e-12)
        assert np.array_equal(got.minimum, values.min(axis=1))
        assert np.array_equal(got.negative, (values < 0).sum(axis=1))


def test_nonfinite_values_are_counted_and_excluded() -> None:
    values = np.array([[1.0, 2.0, np.inf, 3.0], [1.0, np.nan, 5.0, 7.0]])
    stats = block_moments(values, np.linspace(0, 10, 11), 1)
    assert stats.nonfinite.tolist() == [1, 1]
    assert stats.count.tolist() == [3, 3]
    assert stats.mean.tolist() == [2.0, 13.0 / 3.0]
    assert stats.joint_count == 2  # draws 0 and 3
    assert np.allclose(stats.joint_mean, [2.0, 4.0])
    assert stats.histogram[0].sum() == 3 and stats.histogram[1].sum() == 3


def test_support_mismatch_run_reports_nonfinite_not_nan() -> None:
    # q = N(0,1) puts half its mass where p = Exponential(1) has none: log r = -inf there
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Exponential(rate=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        frame = simulate(q, p, ["k1", "rev_kl"], n=40_000, seed=3).to_frame()
    k1, rev = frame.loc["k1"], frame.loc["rev_kl"]
    # z = 5 on a binomial proportion of 1/2
    assert abs(k1["nonfinite"] / 40_000 - 0.5) <= 5 * math.sqrt(0.25 / 40_000)
    assert k1["n_posinf"] == k1["nonfinite"] and k1["n_neginf"] == k1["n_nan"] == 0
    # the headline covers every draw: +inf draws make the mean +inf; the finite subset's
    # statistics are only in the finite_* columns
    assert k1["mean"] == math.inf and k1["n"] == 40_000
    assert k1["finite_n"] == 40_000 - k1["nonfinite"] and math.isfinite(k1["finite_mean"])
    assert k1["frac_nonfinite"] == k1["nonfinite"] / 40_000
    assert k1["truth"] == math.inf
    assert rev["nonfinite"] == 0 and math.isfinite(rev["mean"])


def test_frame_columns_and_metadata(serial) -> None:
    frame = serial.to_frame()
    for column in (
        "mean",
        "var",
        "std",
        "truth",
        "bias",
        "rel_bias",
        "rel_std",
        "se_mean",
        "se_std",
        "n",
        "nonfinite",
        "frac_negative",
        "min",
        "max",
    ):
        assert column in frame.columns
    assert list(frame.index) == ESTIMATORS
    assert (frame["n"] == 197_003).all()
    assert frame.loc["k1", "frac_negative"] > 0 and frame.loc["k3", "frac_negative"] == 0
    assert frame.loc["rev_kl", "target"] == "KL(p||q)"
    meta = serial.metadata()
    assert meta["seed"] == 11 and meta["block_size"] == 5_000 and meta["n"] == 197_003
    assert meta["q"] == Q.to_dict() and "numpy" in meta["versions"]


def test_paired_difference_and_control_variate(serial) -> None:
    cov = serial.covariance()
    assert list(cov.columns) == [*ESTIMATORS, "r-1"]
    diff, se = serial.difference("k2", "k3")
    frame = serial.to_frame()
    assert diff == pytest.approx(frame.loc["k2", "mean"] - frame.loc["k3", "mean"], abs=1e-12)
    # k2 and k3 are strongly correlated on the same draws (correlation about 0.68 here), so
    # the paired error bar is far below the unpaired one
    assert se < 0.7 * math.hypot(frame.loc["k2", "se_mean"], frame.loc["k3", "se_mean"])
    cv = serial.control_variate("k1")
    # for a mean shift, k1 + 1*(r - 1) = k3: lambda* close to 1 and variance no larger than k3's
    assert cv["var"] <= frame.loc["k3", "var"] * (1 + 1e-9)
    assert 0.3 < cv["lambda"] < 1.2


def test_histogram_and_quantiles(serial) -> None:
    edges, counts, below, above = serial.histogram("k1")
    assert len(edges) == len(counts) + 1
    stride = klest.engine.runner.HISTOGRAM_STRIDE
    expected = len(range(0, 5_000, stride)) * 39 + len(range(0, 2_003, stride))
    assert counts.sum() + below + above == expected
    median = serial.quantiles("k1", [0.5])[0]
    # k1 = 0.5 - x for x ~ N(0,1): median 0.5 (histogram resolution: one bin)
    assert abs(median - 0.5) <= (edges[1] - edges[0]) + 0.02


def test_infinite_exact_variance_warns() -> None:
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.0, scale=math.sqrt(2.5))
    with pytest.warns(ConvergenceWarning, match="k3: the exact variance is infinite"):
        res = simulate(q, p, ["k1", "k3"], n=20_000, seed=0)
    frame = res.to_frame()
    assert "infinite" in frame.loc["k3", "note"] and frame.loc["k1", "note"] == ""


def test_heavy_tail_in_the_draws_warns_without_exact() -> None:
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.0, scale=3.0)
    with pytest.warns(ConvergenceWarning, match="k3"):
        simulate(q, p, ["k3"], n=50_000, seed=1, exact=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be an integer >= 1"),
        ({"n": 1.5}, "n must be an integer"),
        ({"n": 10, "seed": -1}, "seed must be a non-negative integer"),
        ({"n": 10, "block_size": 0}, "block_size"),
        ({"n": 10, "workers": 0}, "workers"),
        ({"n": 10, "case": -2}, "case"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        simulate(Q, P, ["k1"], **kwargs)


def test_bad_estimators_and_pairs() -> None:
    with pytest.raises(KeyError, match="unknown estimator 'k9'"):
        simulate(Q, P, ["k1", "k9"], n=10)
    with pytest.raises(ValueError, match="duplicates"):
        simulate(Q, P, ["k1", "kl"], n=10)
    with pytest.raises(ValueError, match="at least one"):
        simulate(Q, P, [], n=10)
    with pytest.raises(TypeError, match="two klest distributions"):
        simulate(Q, "normal", ["k1"], n=10)  # type: ignore[arg-type]
    batched = klest.Categorical(probs=[[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="batched"):
        simulate(batched, batched, ["k1"], n=10)
    mvn = klest.MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))
    with pytest.raises(ValueError, match="different spaces"):
        simulate(Q, mvn, ["k1"], n=10)


def test_single_estimator_name_as_string_and_small_n() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # 3 draws: no false alarm
        res = simulate(Q, P, "k3", n=3, seed=0)
    frame = res.to_frame()
    assert frame.loc["k3", "n"] == 3 and math.isfinite(frame.loc["k3", "std"])
