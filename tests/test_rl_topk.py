"""klest.rl.topk: verl's / NeMo-RL's top-k distillation KL and the tail-bucket form.

Checked against direct formulas (scipy's ``rel_entr`` on the gathered entries; torch autograd
of the same expressions for gradients), against ``rl.full_kl`` through the exact bias formula
(``topk_kl_bias``: bias == full_kl - topk_kl to a few ulp, lower <= bias <= upper) on random
and adversarial rows, for both directions and both selecting policies.

Tolerances, all rounding (float64 unit roundoff u = 2**-53): a sum of n terms computed two
ways differs by at most ~ n·u·sum|terms|; the tests use 64 u times the scale of the sums
involved (full KL + |value| + the bias pieces), which holds with a wide margin for the
vocabulary sizes here (V <= 64, so n·u <= 64 u).
"""

from __future__ import annotations

import tracemalloc

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import rel_entr, softmax

from klest import rl
from klest.rl.topk import FORMS, topk_kl, topk_kl_bias

torch = pytest.importorskip("torch")

ULP = np.finfo(np.float64).eps / 2
TOL = 64 * ULP
TINY = np.finfo(np.float64).smallest_subnormal
FORWARD, REVERSE = "KL(ref||pi)", "KL(pi||ref)"
SETTINGS = [(d, of) for d in (FORWARD, REVERSE) for of in ("ref", "pi")]


def stable_topk(sel: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k largest entries per row, ties to the lower index (a stable sort)."""
    idx = np.argsort(-sel, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(sel.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=-1)
    return mask


def direct(pi: np.ndarray, ref: np.ndarray, k: int, form: str, direction: str, of: str):
    """The forms written out: P, Q full softmaxes, S the top k of ``of``'s logits."""
    a, b = (ref, pi) if direction == FORWARD else (pi, ref)
    s = stable_topk(ref if of == "ref" else pi, k)
    p, q = softmax(a, -1), softmax(b, -1)
    if form == "nemo_rl":
        pt = softmax(np.where(s, a, -np.inf), -1)
        qt = softmax(np.where(s, b, -np.inf), -1)
        return rel_entr(pt, qt).sum(-1)
    u = np.where(s, rel_entr(p, q), 0.0).sum(-1)
    if form == "verl":
        return np.maximum(u, 0.0)
    eps, delta = np.where(s, 0.0, p).sum(-1), np.where(s, 0.0, q).sum(-1)
    return u + rel_entr(eps, delta)


def rows(seed: int, n: int, vocab: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (n, vocab))


def adversarial(vocab: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Rows (pi, ref): peaked, flat (ties everywhere), disjoint top sets, ties at the k-th
    value, opposite peaks, -inf entries, near-identical, point masses."""
    r = np.random.default_rng(7)
    pi, ref = [], []

    def add(x, y):
        pi.append(np.asarray(x, float)), ref.append(np.asarray(y, float))

    base = r.normal(0, 1, vocab)
    add(base, base + r.normal(0, 1e-6, vocab))  # near-identical
    add(np.r_[20.0, r.normal(0, 1, vocab - 1)], np.r_[15.0, r.normal(0, 1, vocab - 1)])  # peaked
    add(np.zeros(vocab), np.zeros(vocab))  # flat: all tied
    add(np.zeros(vocab), r.normal(0, 3, vocab))  # flat policy
    d = np.r_[np.full(vocab // 2, 5.0), np.zeros(vocab - vocab // 2)]
    add(d, d[::-1])  # disjoint top halves
    add(np.r_[1.0, 1.0, 1.0, 1.0, r.normal(-2, 1, vocab - 4)], r.normal(0, 1, vocab))  # ties
    add(r.normal(0, 1, vocab), np.r_[1.0, 1.0, 1.0, 1.0, r.normal(-2, 1, vocab - 4)])
    add(np.r_[-30.0, np.zeros(vocab - 1)], np.r_[30.0, np.zeros(vocab - 1)])  # opposite peaks
    x = r.normal(0, 2, vocab)
    x[[1, 4]] = -np.inf
    add(x, r.normal(0, 2, vocab))  # pi has zeros
    y = r.normal(0, 2, vocab)
    y[[0, 5]] = -np.inf
    add(r.normal(0, 2, vocab), y)  # ref has zeros
    add(np.r_[0.0, np.full(vocab - 1, -np.inf)], np.r_[0.0, np.full(vocab - 1, -np.inf)])
    add(np.r_[-800.0, np.zeros(vocab - 1)], np.r_[0.0, np.full(vocab - 1, -700.0)])  # tiny
    return np.array(pi), np.array(ref)


def check_bias(pi: np.ndarray, ref: np.ndarray, k: int, form: str, direction: str, of: str):
    res = topk_kl_bias(pi, ref, k, form=form, direction=direction, topk_of=of)
    full = rl.full_kl(pi, ref, direction=direction)
    np.testing.assert_array_equal(res.full, full)
    np.testing.assert_array_equal(
        res.value, topk_kl(pi, ref, k, form=form, direction=direction, topk_of=of)
    )
    finite = np.isfinite(res.full) & np.isfinite(res.value)
    # the row constant c = lse a - lse b of the log-ratios is a float, off by ~ulp(big) (the
    # largest finite |logit|): to first order that moves a partial sum over the top k by
    # (Q(S) - P(S)) ulp(big) = (δ - ε) ulp(big), and a whole sum only at second order
    big = np.max(np.abs(np.where(np.isfinite(pi), pi, 0.0)), axis=-1)
    big = np.maximum(big, np.max(np.abs(np.where(np.isfinite(ref), ref, 0.0)), axis=-1))
    scale = np.abs(res.full) + np.abs(res.value) + np.abs(res.upper) + np.abs(res.lower)
    shift = big * np.abs(res.tail_mass_pi - res.tail_mass_ref)
    tol = TOL * np.where(finite, scale + shift, 0.0)
    tol = tol + (TOL * big) ** 2 + 64 * TINY  # below the normal range: 2**-1074 a step
    with np.errstate(invalid="ignore"):
        diff = np.where(finite, res.bias - (res.full - res.value), 0.0)
    assert (np.abs(diff) <= tol).all(), (form, direction, of, k, diff, tol)
    ok = ~np.isnan(res.bias)
    assert (res.lower[ok] <= res.bias[ok] + tol[ok]).all(), (form, direction, of, k)
    assert (res.bias[ok] <= res.upper[ok] + tol[ok]).all(), (form, direction, of, k)
    # where the form's value is +inf, so is full_kl (the bias is NaN); NaN only then or
    # where the value is NaN (nemo_rl renormalising zero mass)
    assert np.array_equal(np.isnan(res.bias), np.isinf(res.value) | np.isnan(res.value))
    assert form == "nemo_rl" or not np.isnan(res.value).any()
    assert (res.full[np.isinf(res.value)] == np.inf).all()
    return res


def test_hand_derived_values() -> None:
    """pi = (.5, .3, .2), ref = (.7, .2, .1): worked by hand (natural logs)."""
    pi, ref = np.log([[0.5, 0.3, 0.2]]), np.log([[0.7, 0.2, 0.1]])
    # KL(ref||pi), top 2 of ref = {0, 1}: .7 ln 1.4 + .2 ln(2/3) = 0.235531 - 0.081093
    assert topk_kl(pi, ref, 2, form="verl", direction=FORWARD)[0] == pytest.approx(0.154438, 1e-5)
    # renormalised: (7/9, 2/9) vs (5/8, 3/8): 7/9 ln(56/45) + 2/9 ln(16/27)
    want = 7 / 9 * np.log(56 / 45) + 2 / 9 * np.log(16 / 27)
    assert topk_kl(pi, ref, 2, form="nemo_rl", direction=FORWARD)[0] == pytest.approx(want, 1e-14)
    # bucket, k = 1: (.7, .3) vs (.5, .5)
    want = 0.7 * np.log(1.4) + 0.3 * np.log(0.6)
    got = topk_kl(pi, ref, 1, form="tail_bucket", direction=FORWARD)[0]
    assert got == pytest.approx(want, 1e-14)
    # KL(pi||ref) on ref's top 1 = {0}: .5 ln(5/7) < 0, so verl's clamp gives 0
    assert topk_kl(pi, ref, 1, form="verl", direction=REVERSE)[0] == 0.0
    # nemo_rl with k = 1: both renormalise to a point mass: 0
    assert topk_kl(pi, ref, 1, form="nemo_rl", direction=REVERSE)[0] == 0.0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("direction", "of"), SETTINGS)
def test_matches_direct_formula(form: str, direction: str, of: str) -> None:
    pi, ref = rows(0, 6, 40, 2.0), rows(1, 6, 40, 2.0)
    for k in (1, 3, 17, 40):
        got = topk_kl(pi, ref, k, form=form, direction=direction, topk_of=of)
        want = direct(pi, ref, k, form, direction, of)
        assert got.shape == (6,) and got.dtype == np.float64
        # direct sums p(log p - log q) with terms up to ~10 in size: 64 u of the term scale
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL * 40 * 10)


@pytest.mark.parametrize("form", FORMS)
def test_bias_formula_and_bounds_on_adversarial_rows(form: str) -> None:
    pi, ref = adversarial()
    for direction, of in SETTINGS:
        for k in (1, 2, 4, 6, 11, 12):
            res = check_bias(pi, ref, k, form, direction, of)
            with np.errstate(all="ignore"):  # the tie rule: the lowest indices win
                want = direct(pi, ref, k, form, direction, of)
            both = np.isfinite(want) & np.isfinite(res.value)
            # (the direct formula's linear softmax underflows to a false +inf on the last row)
            assert (np.isfinite(res.value) | ~np.isfinite(want)).all(), (k, direction, of)
            np.testing.assert_allclose(res.value[both], want[both], rtol=TOL * 1e3, atol=TOL)
            if k == 12:  # the whole vocabulary: every form is full_kl
                finite = np.isfinite(res.full)
                np.testing.assert_allclose(res.value[finite], res.full[finite], rtol=TOL, atol=0)
                assert (res.bias[finite] == 0).all()
    if form == "tail_bucket":  # a lower bound of full_kl (data-processing inequality)
        res = topk_kl_bias(pi, ref, 3, form=form, direction=FORWARD)
        finite = np.isfinite(res.value)
        assert (res.value <= res.full).all() and (res.lower[finite] == 0).all()


def test_near_identical_rows_against_mpmath() -> None:
    """b = a + 1e-6 N(0, 1) (+ 7 on one row), V = 50 (KL ~ 1e-13): each form within 1e-14
    relative of the same formula at 40 digits (the difference of rounded log-softmaxes, or
    a - b without its rounding error, would be off by ~1e-10)."""
    mpmath.mp.dps = 40
    a = rows(20, 2, 50, 2.0)
    b = a + 1e-6 * rows(21, 2, 50, 1.0)
    b[1] += 7.0  # shifted: b - a rounds at ulp(7), not at the ulp of the 1e-6 differences
    k = 10
    for direction, of in SETTINGS:
        x, y = (b, a) if direction == FORWARD else (a, b)  # x: P's logits, y: Q's
        sel = stable_topk(b if of == "ref" else a, k)
        for i in range(2):
            lp = [mpmath.mpf(v) for v in x[i]]
            lq = [mpmath.mpf(v) for v in y[i]]
            za, zb = mpmath.log(sum(map(mpmath.exp, lp))), mpmath.log(sum(map(mpmath.exp, lq)))
            lp, lq = [v - za for v in lp], [v - zb for v in lq]
            s_idx = np.flatnonzero(sel[i])
            t_idx = np.flatnonzero(~sel[i])
            u = mpmath.fsum(mpmath.exp(lp[j]) * (lp[j] - lq[j]) for j in s_idx)
            eps = mpmath.fsum(mpmath.exp(lp[j]) for j in t_idx)
            dlt = mpmath.fsum(mpmath.exp(lq[j]) for j in t_idx)
            ps, qs = 1 - eps, 1 - dlt
            want = {
                "verl": max(u, 0),
                "tail_bucket": u + eps * mpmath.log(eps / dlt),
                "nemo_rl": (u - ps * mpmath.log(ps / qs)) / ps,
            }
            for form, w in want.items():
                got = topk_kl(
                    a[i : i + 1], b[i : i + 1], k, form=form, direction=direction, topk_of=of
                )[0]
                assert abs(got - w) <= 1e-14 * abs(w), (form, direction, of, i, got, w)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 24).flatmap(
        lambda v: st.tuples(
            hnp.arrays(np.float64, (3, v), elements=st.floats(-30, 30)),
            hnp.arrays(np.float64, (3, v), elements=st.floats(-30, 30)),
            st.integers(1, v),
        )
    ),
    st.sampled_from(FORMS),
    st.sampled_from(SETTINGS),
)
def test_bias_formula_and_bounds_hypothesis(case, form: str, setting) -> None:
    pi, ref, k = case
    check_bias(pi, ref, k, form, *setting)


def test_bias_numbers_and_tail_masses_on_a_known_case() -> None:
    """pi = (.5, .3, .2), ref = (.7, .2, .1), KL(ref||pi), k = 1 (S = {0}): tail masses
    ref .3, pi .5; bucket bias = full - bucket, full = sum ref ln(ref/pi)."""
    pi, ref = np.log([[0.5, 0.3, 0.2]]), np.log([[0.7, 0.2, 0.1]])
    res = topk_kl_bias(pi, ref, 1, form="tail_bucket", direction=FORWARD)
    full = 0.7 * np.log(1.4) + 0.2 * np.log(2 / 3) + 0.1 * np.log(0.5)
    bucket = 0.7 * np.log(1.4) + 0.3 * np.log(0.6)
    np.testing.assert_allclose(res.bias, full - bucket, rtol=1e-13)
    np.testing.assert_allclose([res.tail_mass_ref[0], res.tail_mass_pi[0]], [0.3, 0.5], 1e-15)
    # upper = ε (M - L): M = max(ln(.2/.3), ln(.1/.2)) = ln(2/3), L = ln(.3/.5)
    np.testing.assert_allclose(res.upper, 0.3 * (np.log(2 / 3) - np.log(0.6)), rtol=1e-13)


@pytest.mark.parametrize("form", FORMS)
def test_chunked_equals_unchunked_numpy_and_torch(form: str) -> None:
    pi, ref = rows(2, 7 * 3, 30, 3.0).reshape(7, 3, 30), rows(3, 21, 30, 3.0).reshape(7, 3, 30)
    pi[2, 1, :4] = -np.inf
    for direction, of in SETTINGS:
        kw = dict(form=form, direction=direction, topk_of=of)
        whole = topk_kl(pi, ref, 5, chunk_size=21, **kw)
        assert whole.shape == (7, 3)
        t_whole = topk_kl(torch.tensor(pi), torch.tensor(ref), 5, chunk_size=21, **kw)
        for c in (1, 4, None):
            np.testing.assert_array_equal(topk_kl(pi, ref, 5, chunk_size=c, **kw), whole)
            t = topk_kl(torch.tensor(pi), torch.tensor(ref), 5, chunk_size=c, **kw)
            assert torch.equal(t, t_whole)
        bias = topk_kl_bias(pi, ref, 5, chunk_size=2, **kw)
        np.testing.assert_array_equal(bias.bias, topk_kl_bias(pi, ref, 5, **kw).bias)
        # torch and numpy: the same entries and sums, rounding apart (exp/log/expm1 differ)
        np.testing.assert_allclose(t_whole.numpy(), whole, rtol=TOL, atol=TOL)


def direct_torch(a, b, k: int, form: str, sel: np.ndarray):
    """The forms in torch (float64) on gathered entries, for autograd's gradients."""
    idx = torch.as_tensor(np.argsort(-sel, axis=-1, kind="stable")[:, :k])
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    if form == "nemo_rl":
        lp, lq = torch.log_softmax(a.gather(-1, idx), -1), torch.log_softmax(b.gather(-1, idx), -1)
        return (lp.exp() * (lp - lq)).sum(-1)
    u = (la.exp() * (la - lb)).gather(-1, idx).sum(-1)
    if form == "verl":
        return u.clamp_min(0.0)
    eps = la.exp().sum(-1) - la.exp().gather(-1, idx).sum(-1)
    delta = lb.exp().sum(-1) - lb.exp().gather(-1, idx).sum(-1)
    return u + eps * (eps.log() - delta.log())


@pytest.mark.parametrize("form", FORMS)
def test_gradients_match_autograd_of_the_direct_formula(form: str) -> None:
    pi, ref = rows(4, 5, 25, 1.5), rows(5, 5, 25, 1.5)
    w = torch.as_tensor(np.random.default_rng(6).normal(size=5))
    for direction, of in SETTINGS:
        got, want = [], []
        for fn in ("klest", "direct"):
            tp = torch.tensor(pi, requires_grad=True)
            tr = torch.tensor(ref, requires_grad=True)
            if fn == "klest":
                v = topk_kl(tp, tr, 6, form=form, direction=direction, topk_of=of, chunk_size=2)
            else:
                a, b = (tr, tp) if direction == FORWARD else (tp, tr)
                v = direct_torch(a, b, 6, form, ref if of == "ref" else pi)
            (v * w).sum().backward()
            (got if fn == "klest" else want).append((v.detach(), tp.grad, tr.grad))
        for x, y in zip(got[0], want[0], strict=True):
            # gradients of size <= ~2 summed over V = 25 entries: 64 u of 25 * 2
            torch.testing.assert_close(x, y, rtol=0, atol=TOL * 50)


def test_gradients_of_nonfinite_and_masked_rows() -> None:
    pi, ref = rows(8, 4, 10, 1.0), rows(9, 4, 10, 1.0)
    pi[1, 3] = np.nan  # NaN row: value NaN, gradient NaN
    ref[2, 0] = -np.inf  # a zero of ref: KL(pi||ref) on ref's top-k is finite ...
    pi[3, 2] = np.nan  # ... and this NaN row is masked out of the loss: gradient 0
    tp, tr = torch.tensor(pi, requires_grad=True), torch.tensor(ref, requires_grad=True)
    v = topk_kl(tp, tr, 3, form="tail_bucket", direction=REVERSE)
    assert torch.isnan(v[1]) and torch.isnan(v[3]) and torch.isfinite(v[[0, 2]]).all()
    # the bucket holds pi's mass on entry 0 where ref's bucket is positive: finite
    v[torch.tensor([0, 1, 2])].sum().backward()
    assert torch.isnan(tp.grad[1]).all() and torch.isnan(tr.grad[1]).all()
    assert (tp.grad[3] == 0).all() and (tr.grad[3] == 0).all()
    assert torch.isfinite(tp.grad[[0, 2]]).all() and torch.isfinite(tr.grad[[0, 2]]).all()


def test_float32_and_bfloat16_inputs_keep_their_dtype() -> None:
    pi, ref = rows(10, 3, 16, 2.0), rows(11, 3, 16, 2.0)
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.tensor(pi).to(dtype), torch.tensor(ref).to(dtype)
        got = topk_kl(a, b, 4, form="nemo_rl", direction=FORWARD)
        assert got.dtype == dtype
        want = topk_kl(a.double().numpy(), b.double().numpy(), 4, form="nemo_rl", direction=FORWARD)
        np.testing.assert_array_equal(got.double().numpy(), torch.tensor(want).to(dtype).double())


def test_nonfinite_values() -> None:
    pi, ref = rows(12, 4, 8, 1.0), rows(13, 4, 8, 1.0)
    pi[0, 5] = np.nan
    ref[1, 2] = np.inf
    pi[2, :3] = -np.inf  # legal zeros
    for form in FORMS:
        v = topk_kl(pi, ref, 3, form=form, direction=REVERSE)  # zeros of P = pi: finite
        assert np.isnan(v[:2]).all() and np.isfinite(v[2:]).all()
        np.testing.assert_array_equal(
            v[2:], topk_kl(pi[2:], ref[2:], 3, form=form, direction=REVERSE)
        )
    # ref's top entry is a zero of pi: KL(ref||pi) = +inf in every form, bias NaN
    a, b = np.array([[-np.inf, 0.0, 0.0]]), np.array([[2.0, 0.0, 0.0]])
    for form in ("verl", "tail_bucket"):
        res = topk_kl_bias(a, b, 1, form=form, direction=FORWARD)
        assert res.value[0] == np.inf and res.full[0] == np.inf and np.isnan(res.bias[0])
    # ... and nemo_rl renormalises pi's zero mass on that one entry: NaN, not a number
    res = topk_kl_bias(a, b, 1, form="nemo_rl", direction=FORWARD)
    assert np.isnan(res.value[0]) and res.full[0] == np.inf and np.isnan(res.bias[0])
    # renormalising zero mass: pi has none on ref's top 2
    assert np.isnan(
        topk_kl(np.array([[-np.inf, -np.inf, 0.0]]), b, 2, form="nemo_rl", direction=REVERSE)
    )[0]


def test_bad_arguments_name_themselves() -> None:
    a = np.zeros((2, 5))
    cases = [
        (dict(k=0), "k must be an integer in \\[1, 5\\]"),
        (dict(k=6), "k must be an integer in \\[1, 5\\]"),
        (dict(k=2.0), "k must be"),
        (dict(k=True), "k must be"),
        (dict(form="trl"), "form must be one of"),
        (dict(direction="forward"), "direction must be one of"),
        (dict(topk_of="teacher"), "topk_of must be one of"),
        (dict(chunk_size=0), "chunk_size must be"),
    ]
    for change, message in cases:
        kw = dict(k=2, form="verl", direction=FORWARD) | change
        with pytest.raises(ValueError, match=message):
            topk_kl(a, a, **kw)
    with pytest.raises(ValueError, match="same shape"):
        topk_kl(a, np.zeros((2, 4)), 2, form="verl", direction=FORWARD)
    b = a.copy()
    b[1] = -np.inf
    with pytest.raises(ValueError, match=r"ref_logits at position \(1,\) is -inf in every"):
        topk_kl(a, b, 2, form="verl", direction=FORWARD)
    with pytest.raises(ValueError, match=r"ref_logits at position \(1,\)"):
        topk_kl(torch.tensor(a), torch.tensor(b), 2, form="verl", direction=REVERSE)


def test_memory_does_not_grow_with_the_number_of_positions() -> None:
    """numpy: the peak allocation at 96 positions is that at 8 plus the output; torch: the
    autograd graph keeps the inputs and the output only (nothing of size positions x V)."""
    vocab = 512

    def peak(n: int) -> int:
        pi, ref = rows(14, n, vocab, 1.0), rows(15, n, vocab, 1.0)
        tracemalloc.start()
        topk_kl(pi, ref, 64, form="tail_bucket", direction=FORWARD, chunk_size=8)
        topk_kl_bias(pi, ref, 64, form="nemo_rl", direction=FORWARD, chunk_size=8)
        out = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out

    small, large = peak(8), peak(96)
    assert large <= small + 7 * 8 * 96 + 4096, (small, large)  # 7 outputs of 96 float64
    saved: list[int] = []
    tp = torch.tensor(rows(16, 64, vocab, 1.0), requires_grad=True)
    tr = torch.tensor(rows(17, 64, vocab, 1.0), requires_grad=True)

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        v = topk_kl(tp, tr, 64, form="nemo_rl", direction=FORWARD, chunk_size=4)
    assert sum(saved) <= 2 * tp.numel() * 8 + 64 * 8
    v.sum().backward()
    assert torch.isfinite(tp.grad).all()
