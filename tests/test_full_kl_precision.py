"""klest.rl.full_kl at the limit (issue 15, item 4): accuracy against mpmath at 40 digits,
the compiled kernel (every SIMD level) against the NumPy / torch formula, and ``mask=``.

Both routes run here in one process: the compiled kernel (``klest.native.full_kl_rows``)
and the NumPy / torch formula of klest/rl/full_rows.py (``_NATIVE_ROWS`` set to None, as
``KLEST_NATIVE=0`` does). ~2 s.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

import klest
from klest import native, rl
from klest.rl import full as full_module
from klest.rl import full_rows
from klest.rl._backend import NUMPY

torch = pytest.importorskip("torch")

COMPILED = native.full_kl_rows is not None
ROUTES = ["compiled", "formula"] if COMPILED else ["formula"]
LEVELS = range(native.best_simd_level() + 1) if COMPILED else [0]


@pytest.fixture(params=ROUTES)
def route(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "formula":
        monkeypatch.setattr(full_module, "_NATIVE_ROWS", None)
    return request.param


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> object:
    before = native.best_simd_level()
    native.set_simd_level(request.param)
    yield request.param
    native.set_simd_level(before)


def exact_kl(a: np.ndarray, b: np.ndarray) -> float:
    """KL(softmax a || softmax b) of one row of the given (rounded) logits, at 40 digits."""
    with mpmath.workdps(40):
        x = [mpmath.mpf(float(v)) for v in a]
        y = [mpmath.mpf(float(v)) for v in b]
        la = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in x))
        lb = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in y))
        terms = (mpmath.exp(u - la) * ((u - la) - (v - lb)) for u, v in zip(x, y, strict=True))
        return float(mpmath.fsum(terms))


def pairs(vocab: int, dtype: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row pairs across the range: perturbations 1e-9 .. 3 of logits of scale 3, with and
    without a shift of the reference's row (which must not matter), in ``dtype`` (fewer at
    V = 1000: mpmath's time)."""
    rng = np.random.default_rng(vocab)
    out = []
    grid = (1e-9, 1e-7, 1e-6, 1e-4, 1e-2, 0.3, 3.0) if vocab <= 50 else (1e-7, 1e-3, 1.0)
    for eps in grid:
        for shift in (0.0, 5.0) if vocab <= 50 else (5.0,):
            a = 3.0 * rng.standard_normal((2, vocab))
            b = a + shift + eps * rng.standard_normal((2, vocab))
            a, b = a.astype(dtype), b.astype(dtype)
            if not np.array_equal(a, b - shift):  # float32 can round the perturbation away
                out.append((a, b))
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("vocab", [50, 1000])
def test_relative_error_against_mpmath(route: str, dtype: str, vocab: int) -> None:
    """<= 1e-14 relative everywhere. The old formula (difference of two rounded
    log-softmaxes) was off by 1.5e-10 relative at V = 50, perturbation 1e-6."""
    worst = 0.0
    for a, b in pairs(vocab, dtype):
        got = rl.full_kl(a, b)
        for i in range(a.shape[0]):
            want = exact_kl(a[i], b[i])
            worst = max(worst, abs(got[i] - want) / want)
    assert worst <= 1e-14, worst


def test_torch_routes_match_mpmath(route: str) -> None:
    (a, b), (c, d) = pairs(50, "float64")[2], pairs(50, "float32")[5]
    for x, y in ((a, b), (c, d)):
        got = rl.full_kl(torch.from_numpy(x), torch.from_numpy(y))
        assert got.dtype == torch.from_numpy(x).dtype  # float32 logits: a float32 KL
        want = np.array([exact_kl(x[i], y[i]) for i in range(x.shape[0])])
        rtol = 1e-14 if x.dtype == np.float64 else 2.0**-24  # float32's rounding
        np.testing.assert_allclose(got.double().numpy(), want, rtol=rtol, atol=0)


def special_rows(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 37 entries (not a multiple of any vector width) with -inf entries in either
    argument, both, a reference zero where the policy has mass, a policy entry 800 below
    its maximum (exp underflows) and identical rows."""
    rng = np.random.default_rng(3)
    a = 2.0 * rng.standard_normal((7, 37))
    b = a + 0.5 * rng.standard_normal((7, 37))
    a[1, :5] = -np.inf
    b[2, 30:] = -np.inf
    a[2, 30:] = -np.inf
    b[3, 7] = -np.inf  # KL = +inf
    a[4, 3] = a[4].max() - 800.0
    b[5] = a[5]
    a[6, 36], b[6, 0] = -np.inf, -np.inf
    return a.astype(dtype), b.astype(dtype)


@pytest.mark.skipif(not COMPILED, reason="needs the compiled kernels")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_simd_level_matches_the_formula(level: object, dtype: str) -> None:
    a, b = special_rows(dtype)
    got = rl.full_kl(a, b)
    with np.errstate(all="ignore"):
        want = full_rows.kl_rows(NUMPY, a.astype(np.float64), b.astype(np.float64), True)[0]
    assert got[3] == np.inf == want[3]
    assert got[5] == 0.0 == want[5]
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=4e-15, atol=0)
    cats = klest.kl(klest.Categorical(logits=a.astype(float)), klest.Categorical(logits=b))
    np.testing.assert_allclose(got[finite], cats[finite], rtol=1e-12)


@pytest.mark.skipif(not COMPILED, reason="needs the compiled kernels")
def test_bfloat16_tensors_are_read_as_they_are(level: object) -> None:
    """bf16 logits: the kernel reads their bits; the result equals the float64 formula on
    the same values converted exactly."""
    g = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(5, 203, generator=g)).bfloat16()
    b = (a.float() + 0.05 * torch.randn(5, 203, generator=g)).bfloat16()
    got = rl.full_kl(a, b)
    assert got.dtype == torch.bfloat16
    got64 = full_module._NATIVE_ROWS(
        a.view(torch.int16).numpy().view(np.uint16),
        b.view(torch.int16).numpy().view(np.uint16),
        "bfloat16",
    )[0]
    want = rl.full_kl(a.double().numpy(), b.double().numpy())
    np.testing.assert_allclose(got64, want, rtol=4e-15, atol=0)


def test_an_overflowing_ratio_uses_the_difference_form(route: str) -> None:
    """p = e^-740 (subnormal) against r = 1/2: e^t overflows; the term is r - p - p t."""
    a, b = np.array([[0.0, -740.0]]), np.array([[0.0, 0.0]])
    want = exact_kl(a[0], b[0])
    np.testing.assert_allclose(rl.full_kl(a, b), [want], rtol=1e-15)


@pytest.mark.skipif(not COMPILED, reason="needs the compiled kernels")
def test_the_kernel_checks_its_arguments() -> None:
    rows = native.full_kl_rows
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="dtype must be one of"):
        rows(x, x, "float16")
    with pytest.raises(TypeError, match="b must have dtype float64, got float32"):
        rows(x, x.astype(np.float32), "float64")
    with pytest.raises(ValueError, match=r"b must have shape \(2, 3\)"):
        rows(x, np.zeros((2, 4)), "float64")
    with pytest.raises(ValueError, match="keep must have 1 or 2 rows"):
        rows(x, x, "float64", keep=np.ones((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"row_keep must have shape \(2,\)"):
        rows(x, x, "float64", row_keep=np.ones(3, np.uint8))
    with pytest.raises(ValueError, match="a must be C-contiguous"):
        rows(np.zeros((3, 2)).T, x, "float64")


# ---------------------------------------------------------------------------------------
# mask=
# ---------------------------------------------------------------------------------------


def test_position_mask_gives_zero_whatever_the_logits(route: str) -> None:
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4, 9)), rng.standard_normal((3, 4, 9))
    keep = rng.random((3, 4)) < 0.6
    a[~keep] = np.nan  # padding: NaN, or -inf everywhere, must not matter (nor raise)
    b[~keep] = -np.inf
    got = rl.full_kl(a, b, mask=keep, nonfinite="raise")
    assert np.all(got[~keep] == 0.0)
    np.testing.assert_array_equal(got[keep], rl.full_kl(a[keep], b[keep]))
    shared = rl.full_kl(a[keep], b[keep], mask=np.array([True]))  # broadcasts
    np.testing.assert_array_equal(shared, rl.full_kl(a[keep], b[keep]))


def test_vocabulary_mask_renormalises_both(route: str) -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3, 11)), rng.standard_normal((2, 3, 11))
    keep = rng.random((2, 3, 11)) < 0.7
    keep[0, 0] = False  # no kept entry: a masked position
    a_inf, b_inf = np.where(keep, a, -np.inf), np.where(keep, b, -np.inf)
    got = rl.full_kl(a, b, mask=keep)
    assert got[0, 0] == 0.0
    rest = keep.any(-1)
    np.testing.assert_allclose(got[rest], rl.full_kl(a_inf[rest], b_inf[rest]), rtol=1e-15)
    shared = keep[1, 1]  # shape (V,) with an ndim of 1 is a position mask: use (1, 1, V)
    got = rl.full_kl(a, b, mask=shared[None, None])
    want = rl.full_kl(np.where(shared, a, -np.inf), np.where(shared, b, -np.inf))
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_torch_masks_and_their_gradients(route: str) -> None:
    rng = np.random.default_rng(7)
    a = torch.tensor(rng.standard_normal((4, 13)), requires_grad=True)
    b = torch.tensor(rng.standard_normal((4, 13)), requires_grad=True)
    rows = torch.tensor([True, False, True, True])
    vocab = torch.tensor(rng.random((4, 13)) < 0.8)
    (rl.full_kl(a, b, mask=rows).sum() + rl.full_kl(a, b, mask=vocab).sum()).backward()
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()

    def direct(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        lx = torch.log_softmax(x.masked_fill(~keep, -math.inf), -1)
        ly = torch.log_softmax(y.masked_fill(~keep, -math.inf), -1)
        return (lx.exp() * torch.where(keep, lx - ly, 0.0)).sum(-1)  # no 0 * NaN backward

    full = torch.ones_like(vocab)
    loss = direct(a2, b2, full)[rows].sum() + direct(a2, b2, vocab).sum()
    loss.backward()
    torch.testing.assert_close(a.grad, a2.grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(b.grad, b2.grad, rtol=1e-12, atol=1e-15)
    assert torch.all(a.grad[~vocab & ~rows[:, None]] == 0)


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.ones((2, 3), dtype=np.int64), "mask must be boolean"),
        (np.ones((4,), dtype=bool), r"mask of shape \(4,\) broadcasts neither"),
        (np.ones((2, 2, 4), dtype=bool), r"broadcasts neither to the positions \(2, 3\)"),
    ],
)
def test_invalid_masks(mask: np.ndarray, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        rl.full_kl(np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), mask=mask)


def test_every_row_is_computed_whatever_the_chunks(route: str) -> None:
    """One call over all rows, or chunk by chunk (a conversion or a vocabulary mask): each
    row's value is its own, computed alone."""
    a, b = special_rows("float64")
    alone = np.array([rl.full_kl(a[i], b[i]) for i in range(a.shape[0])])
    for kwargs in ({}, {"chunk_size": 1}, {"chunk_size": 3}):
        np.testing.assert_array_equal(rl.full_kl(a, b, **kwargs), alone)
        half = rl.full_kl(a.astype(np.float16), b.astype(np.float16), **kwargs)
        np.testing.assert_array_equal(half, [rl.full_kl(x, y) for x, y in zip(
            a.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32),
            strict=True)])  # fmt: skip


def test_never_negative_where_rounding_overshoots(route: str) -> None:
    """Identical uniform rows with logits 1 against 1.6e-151: c rounds to -1 and the second
    word of b - a leaves t = 1.6e-151, S and the correction are both ~1e-302, and their
    difference rounded to -2.59e-318 (found by hypothesis in tests/test_rl_topk.py)."""
    a, b = np.ones((1, 7)), np.full((1, 7), 1.61534745e-151)
    assert rl.full_kl(a, b).tolist() == [0.0]
    assert rl.full_kl(torch.tensor(a), torch.tensor(b)).tolist() == [0.0]


def test_emulate_is_the_plain_formula_in_that_dtype() -> None:
    """full_kl(emulate=...) is klest.rl.emulate.emulated_full_kl: numpy in, numpy out;
    True takes the logits' own dtype. bf16 rounds a KL of 2e-5 to 0 or worse, while the
    exact value keeps it."""
    from klest.rl import emulate

    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 512)).astype(np.float32)
    b = a + np.float32(0.005) * rng.standard_normal((3, 512)).astype(np.float32)
    got = rl.full_kl(a, b, emulate="bfloat16", emulate_chunk=128)
    want = emulate.emulated_full_kl(a, b, dtype="bfloat16", chunk=128).numpy()
    assert isinstance(got, np.ndarray) and np.array_equal(got, want)
    assert np.array_equal(rl.full_kl(a, b, emulate=True), emulate.emulated_full_kl(
        a, b, dtype="float32").numpy())  # fmt: skip
    exact = rl.full_kl(a, b)
    assert np.all(np.abs(got - exact) > 0.1 * exact)  # bf16's rounding dominates the value
    t = rl.full_kl(torch.from_numpy(a), torch.from_numpy(b), emulate=torch.float16)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
