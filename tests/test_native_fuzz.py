"""Property-based fuzz of every entry point that reaches klest's compiled code (issue 10).

The C kernels index their arrays without bounds checks, so each entry point must refuse
(TypeError / ValueError, one line) or convert anything that would send them out of bounds:
NaN, inf, empty, huge, wrong dtype, non-contiguous, misaligned, read-only, wrong lengths,
wrong ndim, wrong tables. A segfault would kill pytest itself, so each fuzz body runs in a
child interpreter (faulthandler on, address space capped so that huge allocations fail
with MemoryError instead of swapping) and the test asserts the child exited 0, not by a
signal. Hypothesis is derandomized there as in the rest of the suite (tests/conftest.py):
the examples are a fixed function of the code; set KLEST_FUZZ_EXAMPLES to search more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: one xdist worker runs this module (its fuzz children run once per test run): --dist loadgroup
pytestmark = pytest.mark.xdist_group("native_fuzz")

#: examples per fuzz body (each child runs in ~1-3 s)
EXAMPLES = int(os.environ.get("KLEST_FUZZ_EXAMPLES", "200"))

# ---- arbitrary array-like arguments --------------------------------------------------------

DTYPES = [
    np.dtype(np.float64), np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int64),
    np.dtype(np.int32), np.dtype(np.uint64), np.dtype(np.int8), np.dtype(np.bool_),
    np.dtype(np.complex128), np.dtype(">f8"), np.dtype(">i4"), np.dtype("<U3"),
]  # fmt: skip
LAYOUTS = [
    "as is", "as is", "reversed", "every other", "transposed", "read-only", "misaligned",
    "huge broadcast", "list", "scalar", "object",
]  # fmt: skip
#: floats that matter to the kernels: the unit interval's ends, out of range, specials
EDGE_FLOATS = [
    0.0, -0.0, 0.5, 1.0 - 2.0**-53, 1.0, 1.0 + 2.0**-52, 50.0, -1e-300, 5e-324, 1e308,
    -1e308, np.inf, -np.inf, np.nan, 2.0**63, -(2.0**63),
]  # fmt: skip


#: float64 elements; arrays of other float dtypes are cast from them (no check that each
#: value is representable: a float32 array simply holds the rounded values)
FLOAT_ELEMENTS = st.one_of(
    st.sampled_from(EDGE_FLOATS), st.floats(0.0, 1.0, exclude_max=True), st.floats()
)


@st.composite
def array_likes(draw: st.DrawFn, dtypes: list[np.dtype] = DTYPES, max_side: int = 6) -> Any:
    """An array, or an array-like, of any dtype, shape and layout in LAYOUTS."""
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    if dtype.kind == "f":
        array = draw(hnp.arrays(np.float64, shape, elements=FLOAT_ELEMENTS))
        with np.errstate(over="ignore"):
            array = array.astype(dtype)
    else:
        array = draw(hnp.arrays(dtype, shape))
    return with_layout(array, draw(st.sampled_from(LAYOUTS)))


def with_layout(array: np.ndarray, layout: str) -> Any:
    if layout == "reversed":
        return array[::-1] if array.ndim else array
    if layout == "every other":
        return array[::2] if array.ndim else array
    if layout == "transposed":
        return array.T
    if layout == "read-only":
        array = array.copy()
        array.flags.writeable = False
        return array
    if layout == "misaligned" and array.dtype.kind != "U":
        buffer = np.zeros(array.nbytes + 1, dtype=np.uint8)
        view = buffer[1:].view(array.dtype).reshape(array.shape)
        view[...] = array
        return view
    if layout == "huge broadcast":  # 2**40 values without memory: stride 0, read-only
        one = array.reshape(-1)[:1] if array.size else np.zeros(1, array.dtype)
        return np.broadcast_to(one, (2**40,))
    if layout == "list":
        return array.tolist()
    if layout == "scalar":
        return array.reshape(-1)[0] if array.size else 0.5
    if layout == "object":
        return array.astype(object)
    return array


def clean(call: Any) -> tuple[bool, Any]:
    """(True, result) or (False, error) for the errors a bad argument may raise; anything
    else (IndexError, ctypes.ArgumentError, OverflowError, ...) fails the property."""
    try:
        return True, call()
    except (TypeError, ValueError, MemoryError) as error:
        assert "\n" not in str(error).strip(), f"a multi-line error: {error}"
        return False, error


def fuzz(test: Any) -> Any:
    return settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )(test)


# ---- the fuzz bodies (run in the child) --------------------------------------------------


def categoricals() -> list[Any]:
    import klest

    rng = np.random.default_rng(0)
    holes = rng.standard_normal(64)
    holes[rng.random(64) < 0.5] = -np.inf
    holes[0] = 0.0
    return [
        klest.Categorical(probs=[1.0]),
        klest.Categorical(probs=[0.25, 0.25, 0.5]),
        klest.Categorical(probs=[0.1, 0.2, 0.3, 0.4]),
        klest.Categorical(probs=[2.0**-10] * 40 + [41 * 2.0**-10] * 24),
        klest.Categorical(logits=holes),
    ]


def fuzz_categorical_inverse_cdf() -> None:
    qs = categoricals()

    @fuzz
    @given(st.sampled_from(range(len(qs))), array_likes(), st.none() | array_likes())
    def body(which: int, u: Any, table: Any) -> None:
        q = qs[which]
        ok, got = clean(lambda: q.inverse_cdf(u, table=table))
        if not ok:
            return
        flat = np.asarray(u, dtype=np.float64)
        assert got.shape == flat.shape
        assert np.all((flat >= 0.0) & (flat < 1.0))  # accepted only inside [0, 1)
        want = np.searchsorted(q._cdf, flat, side="right")
        if table is None:
            assert got.dtype == np.int64 and np.array_equal(got, want)
        else:
            values = np.asarray(table, dtype=np.float64)
            assert np.array_equal(got, values[want], equal_nan=True)

    body()


@st.composite
def corrupted(draw: st.DrawFn, array: np.ndarray) -> Any:
    """``array`` as it is, with one entry or its length changed, or replaced altogether."""
    how = draw(st.sampled_from(["same", "entry", "shorter", "longer", "reversed", "other"]))
    out = array.copy()
    if how == "entry" and out.size:
        i = draw(st.integers(0, out.size - 1))
        if out.dtype.kind == "f":
            out[i] = draw(st.sampled_from(EDGE_FLOATS))
        else:
            out[i] = draw(st.integers(np.iinfo(out.dtype).min, np.iinfo(out.dtype).max))
    elif how == "shorter":
        out = out[: draw(st.integers(0, max(out.size - 1, 0)))].copy()
    elif how == "longer":
        out = np.concatenate([out, out[-1:]]).astype(out.dtype)
    elif how == "reversed":
        out = out[::-1]
    elif how == "other":
        return draw(array_likes())
    return out


def fuzz_native_inverse_cdf() -> None:
    from klest import native as _native

    tables = [(q._cdf, q._guide) for q in categoricals()]

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        cdf, guide = data.draw(st.sampled_from(tables))
        cdf = data.draw(corrupted(cdf))
        guide = data.draw(corrupted(guide))
        u = data.draw(st.one_of(array_likes([np.dtype(np.float64)]), array_likes()))
        table = data.draw(st.none() | st.builds(np.ones, st.integers(0, 70)) | array_likes())
        ok, got = clean(lambda: _native.inverse_cdf(cdf, guide, u, table))
        if ok and table is None:
            assert got.shape == u.shape and np.all((got >= 0) & (got < cdf.size))

    body()


def fuzz_scaled_normal() -> None:
    from klest.native.sampler import quadratic_in_place, scaled_normal

    numbers = st.one_of(
        st.sampled_from(EDGE_FLOATS), st.floats(-10, 10), st.integers(-3, 3), st.complex_numbers(),
        st.just("1.0"), st.none(), st.builds(np.ones, st.integers(0, 3)),
    )  # fmt: skip
    sizes = st.one_of(
        st.integers(-3, 5000),
        st.integers(2**40, 2**70),
        st.tuples(st.integers(-2, 80), st.integers(-2, 80)),
        st.lists(st.integers(0, 2**40), max_size=3).map(tuple),
        st.floats(0, 10),
        st.none(),
        st.just("10"),
        st.just(True),
    )
    generators = st.sampled_from(["pcg64", "philox", "randomstate", "none"])

    @fuzz
    @given(generators, sizes, numbers, numbers, st.none() | st.lists(numbers, max_size=4))
    def body(kind: str, size: Any, scale: Any, loc: Any, quadratic: Any) -> None:
        def make() -> Any:
            return {
                "pcg64": lambda: np.random.default_rng(7),
                "philox": lambda: np.random.Generator(np.random.Philox(7)),
                "randomstate": lambda: np.random.RandomState(7),
                "none": lambda: None,
            }[kind]()

        ok, got = clean(lambda: scaled_normal(make(), size, scale, loc, quadratic))
        if not ok:
            return
        want = make().standard_normal(size)
        if scale != 1.0 or loc != 0.0:
            want *= scale
            want += loc
        if quadratic is not None:
            want = quadratic_in_place(want, *quadratic)
        assert got.shape == want.shape and np.array_equal(got, want, equal_nan=True)

    body()


def fuzz_fill_normal() -> None:
    from klest import native as _native

    state = np.array([1, 2, 3, 5], dtype=np.uint64)

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        s = data.draw(st.one_of(corrupted(state), array_likes()))
        out = data.draw(st.one_of(array_likes([np.dtype(np.float64)], max_side=40), array_likes()))
        scale = data.draw(st.sampled_from([1.0, np.nan, "2", 1j, np.ones(2)]))
        quadratic = data.draw(st.sampled_from([None, (1.0, 2.0, 3.0), (0.0, 1.0), (1, "b", 2)]))
        clean(lambda: _native.fill_normal(s, out, scale, 0.0, quadratic))

    body()


def fuzz_fill_family() -> None:
    from klest import native as _native

    state = np.array([1, 2, 3, 5], dtype=np.uint64)
    families = st.sampled_from(["laplace", "gamma", "standard_t", "beta", "normal", "", 3])
    parameters = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(-5, 50), st.just("2"))

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        s = data.draw(st.one_of(corrupted(state), array_likes()))
        out = data.draw(st.one_of(array_likes([np.dtype(np.float64)], max_side=40), array_likes()))
        family, p0, p1 = data.draw(families), data.draw(parameters), data.draw(parameters)
        clean(lambda: _native.fill_family(s, out, family, p0, p1))

    body()


def fuzz_family_draws() -> None:
    from klest.native.sampler import family_draws

    parameters = st.one_of(
        st.sampled_from(EDGE_FLOATS), st.floats(-5, 50), st.integers(-3, 60), st.just("2"),
        st.builds(np.full, st.integers(0, 3), st.floats(0.5, 9)),
    )  # fmt: skip
    sizes = st.one_of(st.integers(-3, 3000), st.tuples(st.integers(0, 40), st.integers(0, 40)))
    families = st.sampled_from(["laplace", "gamma", "standard_t", "beta"])

    @fuzz
    @given(families, sizes, parameters, parameters, st.booleans())
    def body(family: str, size: Any, p0: Any, p1: Any, pcg64: bool) -> None:
        def make() -> np.random.Generator:
            bits = np.random.PCG64(7) if pcg64 else np.random.Philox(7)
            return np.random.Generator(bits)

        ok, got = clean(lambda: family_draws(make(), family, size, p0, p1))
        numpys = make()
        method = getattr(numpys, family)
        args = (p0,) if family == "standard_t" else (p0, p1)
        ok_numpy, want = clean(lambda: method(*args, size))
        assert ok == ok_numpy, (got, want)
        if ok:
            assert np.shape(got) == np.shape(want)
            assert np.array_equal(got, want, equal_nan=True)

    body()


def fuzz_k3() -> None:
    from klest import estimators
    from klest import native as _native

    @fuzz
    @given(array_likes(), st.one_of(st.none(), array_likes()), array_likes())
    def body(l: Any, expm1_l: Any, out: Any) -> None:
        with np.errstate(all="ignore"):
            ok, got = clean(lambda: estimators.k3_given_expm1(l, np.expm1(l) if expm1_l is None else expm1_l))  # noqa: E501  # fmt: skip
        if ok and expm1_l is None:
            assert got.shape == np.shape(l) and np.all((got >= 0) | np.isnan(got))
        for call in (
            lambda: estimators.expm1_minus_x(l),
            lambda: estimators.get("k3")(l),
            lambda: _native.k3_from_expm1(l if expm1_l is None else expm1_l, l, out),
        ):
            clean(call)

    body()


def fuzz_accumulator() -> None:
    from klest.engine.moments import Accumulator, block_moments, merge

    edges = st.one_of(
        st.none(),
        st.just(np.linspace(-3.0, 3.0, 7)),
        st.lists(st.sampled_from(EDGE_FLOATS), min_size=0, max_size=4).map(np.array),
    )
    series = st.one_of(array_likes(), st.sampled_from(["negate", "half_square", "k3", "k9"]))

    @fuzz
    @given(
        st.integers(0, 3), edges, st.integers(-1, 3), st.none() | st.integers(-1, 5),
        st.lists(series, max_size=4), st.none() | array_likes(), st.none() | array_likes(),
    )  # fmt: skip
    def body(n, edges, stride, rows, values, log_ratio, expm1_l) -> None:
        ok, acc = clean(lambda: Accumulator(n, edges, stride, rows))
        if ok:
            with np.errstate(all="ignore"):
                clean(lambda: acc.add(values, log_ratio, expm1_l))
            m = block_moments(np.ones((1, 3)), None, 1)
            clean(lambda: merge(acc.to_moments(), m))

    body()


def fuzz_native_accumulate() -> None:
    from klest import native as _native

    fields = len(_native.FIELDS)
    arrays = st.one_of(array_likes([np.dtype(np.float64)]), array_likes())

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        e = data.draw(st.integers(1, 3))
        stats = data.draw(st.one_of(corrupted(np.zeros(e * fields)).map(
            lambda a: a.reshape(e, -1) if isinstance(a, np.ndarray) and a.size % e == 0 else a),
            arrays))  # fmt: skip
        joint = data.draw(st.one_of(corrupted(np.zeros(e + 1)), arrays))
        comoment = data.draw(st.one_of(st.just(np.zeros((e, e))), arrays))
        stats_b, joint_b, comoment_b = np.zeros((e, fields)), np.zeros(e + 1), np.zeros((e, e))
        clean(lambda: _native.merge(stats, joint, comoment, stats_b, joint_b, comoment_b))
        m = data.draw(st.integers(1, 3000))
        series = [
            data.draw(st.one_of(st.just(np.ones(m)), arrays, st.sampled_from(["k3", "negate"])))
            for _ in range(e)
        ]
        log_ratio = data.draw(st.one_of(st.just(np.zeros(m)), st.none(), arrays))
        histogram = data.draw(st.one_of(st.just(np.zeros((e, 7), dtype=np.int64)), arrays))
        hist_rows, stride = data.draw(st.integers(-1, 5)), data.draw(st.integers(-1, 3))
        low = data.draw(st.sampled_from([0.0, np.nan, np.inf, "0"]))
        width = data.draw(st.sampled_from([0.5, 0.0, -1.0, np.nan, np.inf, 1e-320]))
        clean(lambda: _native.accumulate(
            series, log_ratio, log_ratio, np.zeros((e, fields)), np.zeros(e + 1),
            np.zeros((e, e)), histogram, hist_rows, stride, low, width,
        ))  # fmt: skip

    body()


def accumulator_arrays(data: st.DataObject, e: int, arrays: st.SearchStrategy) -> tuple:
    """A fresh accumulator of e series (stats, joint, comoment), then a drawn histogram,
    histogram rows, stride, low and width, as the block passes take them."""
    fields = 11  # klest.native.FIELDS
    histogram = data.draw(st.one_of(st.just(np.zeros((e, 7), dtype=np.int64)), arrays))
    hist_rows, stride = data.draw(st.integers(-1, 5)), data.draw(st.integers(-1, 3))
    return (np.zeros((e, fields)), np.zeros(e + 1), np.zeros((e, e)), histogram, hist_rows,
            stride, 0.0, 0.5)  # fmt: skip


def one_block_state() -> st.SearchStrategy:
    """The (1, 4) PCG64 state of one block, or that corrupted."""
    state = np.array([1, 2, 3, 5], dtype=np.uint64)
    return corrupted(state).map(
        lambda a: a.reshape(1, -1) if isinstance(a, np.ndarray) and a.size == 4 else a
    )


def block_lengths(m: int, arrays: st.SearchStrategy) -> st.SearchStrategy:
    """The draw counts of one block of m draws, or wrong ones."""
    return st.one_of(
        st.just(np.array([m], np.int64)), st.just(np.array([0], np.int64)),
        st.just(np.array([-5, 3], np.int64)), arrays,
    )  # fmt: skip


def fuzz_native_block_stats() -> None:
    from klest import native as _native

    fields = len(_native.FIELDS)
    arrays = st.one_of(array_likes([np.dtype(np.float64)]), array_likes())
    one_block = one_block_state()

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        e = data.draw(st.integers(1, 4))
        names = data.draw(
            st.one_of(
                st.lists(
                    st.sampled_from(["negate", "half_square", "k3", "expm1"]),
                    min_size=e,
                    max_size=e,
                ),
                st.lists(st.sampled_from(["k9", "negate", ""]), max_size=3),
                array_likes(),
            )
        )
        m = data.draw(st.integers(1, 3000))
        log_ratio = data.draw(st.one_of(st.none(), st.just(np.zeros(m)), arrays))
        states = data.draw(st.one_of(st.none(), one_block, st.just(np.zeros(4)), arrays))
        lengths = data.draw(block_lengths(m, arrays))
        quadratic = data.draw(st.sampled_from([None, (0.0, 1.0, -0.5), (1.0, "b", 2.0), (1.0,)]))
        normal = None if states is None else (states, lengths, 1.0, 0.0, quadratic)
        normal = data.draw(st.sampled_from([normal, None, (states,), "x"]))
        histogram = data.draw(st.one_of(st.just(np.zeros((e, 7), dtype=np.int64)), arrays))
        hist_rows, stride = data.draw(st.integers(-1, 5)), data.draw(st.integers(-1, 3))
        width = data.draw(st.sampled_from([0.5, 0.0, np.nan, 1e-320]))
        clean(lambda: _native.block_stats(
            names, log_ratio, normal, np.zeros((e, fields)), np.zeros(e + 1),
            np.zeros((e, e)), histogram, hist_rows, stride, 0.0, width,
        ))  # fmt: skip

    body()


def fuzz_native_categorical_block_stats() -> None:
    from klest import native as _native

    arrays = st.one_of(array_likes([np.dtype(np.float64)]), array_likes())
    tables = []
    for q in categoricals():
        k = q.num_categories
        pairs = np.stack([np.linspace(-2.0, 2.0, k), np.expm1(np.linspace(-2.0, 2.0, k))], 1)
        tables.append((q._cdf, q._guide, pairs))
    one_block = one_block_state()

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        e = data.draw(st.integers(1, 4))
        names = data.draw(st.one_of(
            st.lists(st.sampled_from(["negate", "half_square", "k3", "expm1"]), min_size=e,
                     max_size=e),
            st.lists(st.sampled_from(["k9", "negate", ""]), max_size=3),
        ))  # fmt: skip
        cdf, guide, pairs = data.draw(st.sampled_from(tables))
        cdf, guide = data.draw(corrupted(cdf)), data.draw(corrupted(guide))
        pairs = data.draw(st.one_of(st.just(pairs), st.just(pairs[:-1]), st.just(pairs.T),
                                    arrays))  # fmt: skip
        states = data.draw(st.one_of(one_block, st.just(np.zeros(4)), arrays))
        m = data.draw(st.integers(1, 3000))
        lengths = data.draw(block_lengths(m, arrays))
        categorical = data.draw(st.sampled_from([
            (states, lengths, cdf, guide, pairs), (states, lengths, cdf, guide), None,
        ]))  # fmt: skip
        accumulator = accumulator_arrays(data, e, arrays)
        clean(lambda: _native.categorical_block_stats(names, categorical, *accumulator))

    body()


def fuzz_native_laplace_block_stats() -> None:
    from klest import native as _native

    arrays = st.one_of(array_likes([np.dtype(np.float64)]), array_likes())
    one_block = one_block_state()
    reals = st.sampled_from(EDGE_FLOATS) | st.floats() | st.just("x")

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        e = data.draw(st.integers(1, 4))
        names = data.draw(st.lists(st.sampled_from(["negate", "half_square", "k3", "expm1",
                                                    "k9"]), min_size=e, max_size=e))  # fmt: skip
        states = data.draw(st.one_of(one_block, st.just(np.zeros(4)), arrays))
        lengths = data.draw(block_lengths(data.draw(st.integers(1, 3000)), arrays))
        loc, scale = data.draw(reals), data.draw(reals | st.just(1.0))
        coefficients = data.draw(st.tuples(*[reals] * 5) | st.tuples(reals) | arrays)
        laplace = data.draw(st.sampled_from([
            (states, lengths, loc, scale, coefficients), (states, lengths, loc), None,
        ]))  # fmt: skip
        accumulator = accumulator_arrays(data, e, arrays)
        clean(lambda: _native.laplace_block_stats(names, laplace, *accumulator))

    body()


def fuzz_native_mixture_block_stats() -> None:
    import klest
    from klest import native as _native
    from klest.distributions.log_ratio import fused_mixture_parameters

    arrays = st.one_of(array_likes([np.dtype(np.float64)]), array_likes())
    one_block = one_block_state()
    gm = klest.GaussianMixture
    two = gm(weights=[0.3, 0.7], locs=[-1.0, 1.0], scales=[0.5, 1.0])
    twelve = gm(weights=np.arange(1, 13) / 78.0, locs=np.linspace(-3, 3, 12),
                scales=np.linspace(0.2, 2.0, 12))  # fmt: skip
    parameters = [fused_mixture_parameters(q, p) for q, p in ((two, twelve), (twelve, two))]

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        e = data.draw(st.integers(1, 4))
        names = data.draw(st.lists(st.sampled_from(["negate", "half_square", "k3", "expm1",
                                                    "k9"]), min_size=e, max_size=e))  # fmt: skip
        states = data.draw(st.one_of(one_block, st.just(np.zeros(4)), arrays))
        lengths = data.draw(block_lengths(data.draw(st.integers(1, 3000)), arrays))
        cuts, locs, scales, q_terms, p_terms = data.draw(st.sampled_from(parameters))
        cuts, locs = data.draw(corrupted(cuts)), data.draw(corrupted(locs))
        scales = data.draw(st.one_of(corrupted(scales), st.just(np.ones(3))))
        q_terms = data.draw(st.one_of(st.just(q_terms), st.just(p_terms.T), arrays))
        mixture = data.draw(st.sampled_from([
            (states, lengths, cuts, locs, scales, q_terms, p_terms),
            (states, lengths, cuts, locs), None,
        ]))  # fmt: skip
        accumulator = accumulator_arrays(data, e, arrays)
        clean(lambda: _native.mixture_block_stats(names, mixture, *accumulator))

    body()


# ---- the tests (run in pytest) ------------------------------------------------------------


def fuzz_native_full_kl() -> None:
    from klest import native as _native

    if _native.full_kl_rows is None:  # KLEST_NATIVE=0: no compiled full_kl to reach
        return
    names = st.sampled_from(["float64", "float32", "bfloat16", "float16", 3, "x"])

    @fuzz
    @given(st.data())
    def body(data: st.DataObject) -> None:
        a = data.draw(array_likes())
        b = data.draw(st.one_of(st.just(a), array_likes()))
        dtype = data.draw(names)
        keep = data.draw(st.none() | array_likes())
        row_keep = data.draw(st.none() | array_likes())
        ok, got = clean(lambda: _native.full_kl_rows(a, b, dtype, keep, row_keep))
        if ok:
            out, status = got
            assert out.shape == status.shape == (np.shape(a)[0],)

    body()


def fuzz_native_mixture_log_ratio() -> None:
    from klest import native as _native
    from klest.distributions.mixture import GaussianMixture, mixture_log_ratio

    q = GaussianMixture(weights=[0.3, 0.7], locs=[-1.0, 1.0], scales=[0.5, 1.0])
    p = GaussianMixture(weights=[1.0], locs=[0.5], scales=[2.0])
    terms = st.one_of(st.sampled_from([q.terms, p.terms]), array_likes())

    @fuzz
    @given(array_likes(), terms, terms, st.one_of(st.none(), array_likes()))
    def body(x: Any, q_terms: Any, p_terms: Any, out: Any) -> None:
        ok, got = clean(lambda: mixture_log_ratio(q, p, x))
        if ok:
            assert got.shape == np.shape(x)
        if out is None and isinstance(x, np.ndarray):
            clean(lambda: _native.mixture_log_ratio(x, q_terms, p_terms, np.empty_like(x)))
        else:
            clean(lambda: _native.mixture_log_ratio(x, q_terms, p_terms, out))

    body()


def fuzz_native_mvn_ratio_from_standardized() -> None:
    from klest import native as _native

    scalars = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.5]))

    @fuzz
    @given(array_likes(), array_likes(), array_likes(), st.one_of(scalars, array_likes()),
           st.one_of(st.none(), array_likes()), st.integers(0, 3))  # fmt: skip
    def body(y: Any, difference: Any, delta: Any, c: Any, out: Any, d: int) -> None:
        if out is None and isinstance(y, np.ndarray) and 1 <= y.ndim and y.shape[0] < 1000:
            out = np.empty(y.shape[:1])  # the right length (None: a TypeError)
        fuzzed = (y, difference, delta, c, out)
        clean(lambda: _native.mvn_ratio_from_standardized(*fuzzed))  # every argument fuzzed
        # one fuzzed argument among well-formed ones of dimension d (d = 0: no column)
        for i, value in enumerate(fuzzed):
            args = [np.zeros((3, d)), np.eye(d), np.zeros(d), 0.0, np.empty(3)]
            args[i] = value
            ok, got = clean(lambda args=args: _native.mvn_ratio_from_standardized(*args))
            if ok:
                assert got is args[4] and got.shape == (args[0].shape[0],)

    body()


BODIES = [
    "fuzz_categorical_inverse_cdf",
    "fuzz_native_inverse_cdf",
    "fuzz_scaled_normal",
    "fuzz_fill_normal",
    "fuzz_fill_family",
    "fuzz_family_draws",
    "fuzz_k3",
    "fuzz_accumulator",
    "fuzz_native_accumulate",
    "fuzz_native_block_stats",
    "fuzz_native_categorical_block_stats",
    "fuzz_native_laplace_block_stats",
    "fuzz_native_mixture_block_stats",
    "fuzz_native_full_kl",
    "fuzz_native_mixture_log_ratio",
    "fuzz_native_mvn_ratio_from_standardized",
]

#: runs the named bodies one after another, a JSON line each on stdout ("start" first, so
#: that a body that kills the interpreter is known)
CHILD = """
import faulthandler, json, resource, sys, traceback, warnings
faulthandler.enable()
limit = 6 << 30  # huge allocations fail (MemoryError) instead of taking the machine
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import test_native_fuzz
for name in sys.argv[2:]:
    print(json.dumps({"body": name, "status": "start"}), flush=True)
    try:
        getattr(test_native_fuzz, name)()
        result = {"body": name, "status": "ok"}
    except BaseException:
        result = {"body": name, "status": "failed", "error": traceback.format_exc()[-6000:]}
    print(json.dumps(result), flush=True)
"""


# session scope: xdist may interleave other modules' tests with this one's on its worker,
# and a module-scoped fixture would then be torn down and built again
@pytest.fixture(scope="session")
def fuzz_results() -> dict[str, str]:
    """Each body's outcome: "ok", or what went wrong. One child interpreter runs the bodies
    in turn (imports cost more than the fuzzing); after a crash, a new one goes on."""
    import json

    here, results, remaining = str(Path(__file__).resolve().parent), {}, list(BODIES)
    while remaining:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, here, *remaining],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )
        started = None
        for line in child.stdout.splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            started = record["body"] if record["status"] == "start" else None
            if record["status"] != "start":
                results[record["body"]] = record.get("error", "ok")
        if child.returncode < 0 and started is not None:
            name = signal.Signals(-child.returncode).name
            trace = [x for x in child.stderr.splitlines() if not x.startswith("Extension modules")]
            results[started] = f"the interpreter was killed by {name}:\n" + "\n".join(trace[-60:])
        elif child.returncode != 0 or started is not None:
            results.setdefault(remaining[0], f"the child failed:\n{child.stderr[-4000:]}")
        remaining = [b for b in remaining if b not in results]
    return results


@pytest.mark.parametrize("body", BODIES)
def test_no_input_crashes_the_compiled_layer(body: str, fuzz_results: dict[str, str]) -> None:
    assert fuzz_results[body] == "ok", f"{body}: {fuzz_results[body]}"
