"""klest.rl.full_kl on non-finite logits (issue 10, item 3): NaN in gives NaN out at that
position (or a ValueError naming it with ``nonfinite="raise"``), +inf logits make the softmax
undefined (NaN), -inf is a legal zero-probability entry, a reference zero where the policy has
mass gives +inf with the documented gradient, and a bad row never poisons the other rows'
values or gradients (nor a masked reduction that leaves it out).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from klest import rl

torch = pytest.importorskip("torch")

SHAPE = (3, 4, 7)  # positions (3, 4), vocabulary 7
BAD = (1, 2)  # the position made non-finite
NP_DTYPES = [np.float64, np.float32, np.float16]
TORCH_DTYPES = ["float64", "float32", "bfloat16"]
DIRECTIONS = ["KL(pi||ref)", "KL(ref||pi)"]


def clean_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 2.0, SHAPE), rng.normal(0.0, 2.0, SHAPE)


def with_bad(x: np.ndarray, value: float, entries: tuple[int, ...] = (3,)) -> np.ndarray:
    x = x.copy()
    for v in entries:
        x[(*BAD, v)] = value
    return x


def others(x: np.ndarray) -> np.ndarray:
    """Every position but BAD, flattened."""
    keep = np.ones(SHAPE[:-1], bool)
    keep[BAD] = False
    return np.asarray(x)[keep]


def run(backend: str, dtype: str | type, a: np.ndarray, b: np.ndarray, **kw) -> np.ndarray:
    """full_kl on numpy arrays of `dtype` or torch tensors of `dtype`, as a float64 ndarray."""
    if backend == "numpy":
        return rl.full_kl(a.astype(dtype), b.astype(dtype), **kw)
    t = getattr(torch, dtype)
    out = rl.full_kl(torch.tensor(a).to(t), torch.tensor(b).to(t), **kw)
    assert out.dtype == t
    return out.double().numpy()


BACKENDS = [("numpy", d) for d in NP_DTYPES] + [("torch", d) for d in TORCH_DTYPES]


@pytest.mark.parametrize(("backend", "dtype"), BACKENDS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("where", ["logits", "ref_logits"])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "+inf"])
def test_nan_or_posinf_logit_gives_nan_at_that_position_only(
    backend: str, dtype: str | type, direction: str, where: str, bad: float
) -> None:
    """Before the fix a NaN or +inf in the policy logits gave exactly 1.0 (the sum of the
    reference probabilities picked by `p > 0` being False for NaN)."""
    a, b = clean_pair()
    clean = run(backend, dtype, a, b, direction=direction)
    a2, b2 = (with_bad(a, bad), b) if where == "logits" else (a, with_bad(b, bad))
    got = run(backend, dtype, a2, b2, direction=direction)
    assert np.isnan(got[BAD]), got[BAD]
    assert np.array_equal(others(got), others(clean))  # the other positions, bit for bit
    assert np.isfinite(others(got)).all()


@pytest.mark.parametrize(("backend", "dtype"), BACKENDS)
def test_two_posinf_logits_or_a_whole_nan_row_give_nan(backend: str, dtype: str | type) -> None:
    a, b = clean_pair(1)
    for a2 in (with_bad(a, np.inf, (0, 5)), with_bad(a, np.nan, tuple(range(SHAPE[-1])))):
        got = run(backend, dtype, a2, b)
        assert np.isnan(got[BAD]) and np.isfinite(others(got)).all()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("chunk_size", [None, 5])  # 5: BAD (flat row 6) is row 1 of chunk 2
def test_nonfinite_raise_names_the_argument_and_position(
    backend: str, direction: str, chunk_size: int | None
) -> None:
    a, b = clean_pair(2)
    conv = (lambda x: x) if backend == "numpy" else torch.tensor
    kw = {"nonfinite": "raise", "direction": direction, "chunk_size": chunk_size}
    with pytest.raises(ValueError, match=r"logits\[1, 2, 3\] is nan .*position \(1, 2\)"):
        rl.full_kl(conv(with_bad(a, np.nan)), conv(b), **kw)
    with pytest.raises(ValueError, match=r"ref_logits\[1, 2, 3\] is \+inf .*position \(1, 2\)"):
        rl.full_kl(conv(a), conv(with_bad(b, np.inf)), **kw)
    with pytest.raises(ValueError, match=r"^full_kl: logits\[1, 2, 3\] is nan"):  # not ref_
        rl.full_kl(conv(with_bad(a, np.nan)), conv(b), **kw)
    # -inf is a legal (zero-probability) logit: no error, the same numbers as the default
    a3 = with_bad(a, -np.inf)
    got = rl.full_kl(conv(a3), conv(b), nonfinite="raise", direction=direction)
    assert np.array_equal(
        np.asarray(got), np.asarray(rl.full_kl(conv(a3), conv(b), direction=direction))
    )


def test_nonfinite_raise_on_a_1d_row_and_invalid_switch() -> None:
    with pytest.raises(ValueError, match=r"logits\[1\] is nan \(position \(\)"):
        rl.full_kl(np.array([0.0, np.nan]), np.zeros(2), nonfinite="raise")
    with pytest.raises(ValueError, match="nonfinite must be one of 'propagate', 'raise'"):
        rl.full_kl(np.zeros(2), np.zeros(2), nonfinite="ignore")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_all_minus_inf_row_error_names_the_argument_and_position(
    backend: str, chunk_size: int | None
) -> None:
    a, b = clean_pair(3)
    conv = (lambda x: x) if backend == "numpy" else torch.tensor
    no_entry = with_bad(b, -np.inf, tuple(range(SHAPE[-1])))
    with pytest.raises(ValueError, match=r"ref_logits at position \(1, 2\) is -inf in every"):
        rl.full_kl(conv(a), conv(no_entry), chunk_size=chunk_size)
    with pytest.raises(ValueError, match=r"^full_kl: logits at position \(1, 2\) is -inf"):
        rl.full_kl(conv(no_entry), conv(a), direction="KL(ref||pi)", chunk_size=chunk_size)


def direct_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (torch.softmax(a, -1) * (torch.log_softmax(a, -1) - torch.log_softmax(b, -1))).sum(-1)


def grads(a: np.ndarray, b: np.ndarray, weights: np.ndarray, dtype: str = "float64", **kw):
    t = getattr(torch, dtype)
    at = torch.tensor(a).to(t).requires_grad_()
    bt = torch.tensor(b).to(t).requires_grad_()
    out = rl.full_kl(at, bt, **kw)
    (out.double() * torch.tensor(weights)).sum().backward()
    return out.detach().double().numpy(), at.grad.double().numpy(), bt.grad.double().numpy()


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("where", ["logits", "ref_logits"])
def test_a_nan_row_does_not_poison_the_other_rows_gradients(dtype: str, where: str) -> None:
    """Row BAD has a NaN (its value and gradients are NaN); every other row's gradient is
    finite and bit-identical to the one computed without the NaN row."""
    a, b = clean_pair(4)
    w = np.random.default_rng(5).normal(size=SHAPE[:-1])
    a2, b2 = (with_bad(a, np.nan), b) if where == "logits" else (a, with_bad(b, np.nan))
    _, ga_clean, gb_clean = grads(a, b, w, dtype)
    val, ga, gb = grads(a2, b2, w, dtype)
    assert np.isnan(val[BAD])
    for g, g_clean in ((ga, ga_clean), (gb, gb_clean)):
        assert np.isnan(g[BAD]).all()
        assert np.isfinite(others(g)).all()
        assert np.array_equal(others(g), others(g_clean))


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, "ref-inf"])
def test_masked_reduction_leaves_bad_rows_out_of_value_and_gradient(dtype: str, bad) -> None:
    """A padding position with NaN/+inf logits (or an infinite KL) masked out of the loss with
    torch.where or boolean indexing: the loss and every gradient are finite, the masked row's
    gradient is exactly 0 (its incoming gradient is 0), the others match autograd of the
    direct formula. (Multiplying by a 0/1 mask is not masking: inf * 0 = NaN in the value.)"""
    a, b = clean_pair(6)
    if bad == "ref-inf":
        a2, b2 = a, with_bad(b, -np.inf)
    else:
        a2, b2 = with_bad(a, bad), b
    mask = np.ones(SHAPE[:-1], bool)
    mask[BAD] = False
    t = getattr(torch, dtype)
    m = torch.tensor(mask)
    for reduce in (lambda kl: torch.where(m, kl, 0.0).sum(), lambda kl: kl[m].sum()):
        at = torch.tensor(a2).to(t).requires_grad_()
        bt = torch.tensor(b2).to(t).requires_grad_()
        loss = reduce(rl.full_kl(at, bt))
        assert torch.isfinite(loss)
        loss.backward()
        for g in (at.grad, bt.grad):
            assert torch.isfinite(g).all()
            assert (g[BAD] == 0).all()
        a64 = torch.tensor(a).requires_grad_()
        b64 = torch.tensor(b).requires_grad_()
        torch.where(m, direct_torch(a64, b64), 0.0).sum().backward()
        tol = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 2e-2}[dtype]
        np.testing.assert_allclose(others(at.grad.double()), others(a64.grad), rtol=tol, atol=tol)
        np.testing.assert_allclose(others(bt.grad.double()), others(b64.grad), rtol=tol, atol=tol)


@pytest.mark.parametrize(("backend", "dtype"), BACKENDS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_zero_where_the_first_distribution_has_mass_gives_inf(
    backend: str, dtype: str | type, direction: str
) -> None:
    """KL(P||Q) with Q_v = 0 < P_v is +inf: a -inf reference logit for KL(pi||ref), a -inf
    policy logit for KL(ref||pi). Other positions unaffected."""
    a, b = clean_pair(7)
    a2, b2 = (a, with_bad(b, -np.inf)) if direction == "KL(pi||ref)" else (with_bad(a, -np.inf), b)
    got = run(backend, dtype, a2, b2, direction=direction)
    assert got[BAD] == np.inf
    assert np.array_equal(others(got), others(run(backend, dtype, a, b, direction=direction)))


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gradient_of_an_infinite_kl_row_is_documented(dtype: str, direction: str) -> None:
    """The documented gradient of a row where KL(P||Q) = +inf: NaN with respect to P's
    logits (the KL is +inf for every finite value of them: no derivative), softmax(Q) -
    softmax(P) with respect to Q's logits (finite: the limit of the gradient as Q's logit
    goes to -inf). Other rows as without the bad row."""
    a, b = clean_pair(8)
    w = np.random.default_rng(9).normal(size=SHAPE[:-1])
    swapped = direction == "KL(ref||pi)"
    a2, b2 = (with_bad(a, -np.inf), b) if swapped else (a, with_bad(b, -np.inf))
    val, ga, gb = grads(a2, b2, w, dtype, direction=direction)
    _, ga_clean, gb_clean = grads(a, b, w, dtype, direction=direction)
    assert val[BAD] == np.inf
    g_first, g_second = (gb, ga) if swapped else (ga, gb)
    first, second = (b2, a2) if swapped else (a2, b2)
    assert np.isnan(g_first[BAD]).all()
    t = getattr(torch, dtype)
    p = softmax(torch.tensor(first[BAD]).to(t).double().numpy(), -1)
    r = softmax(torch.tensor(second[BAD]).to(t).double().numpy(), -1)
    want = (r - p) * w[BAD]
    assert np.isfinite(g_second[BAD]).all()
    tol = {"float64": 1e-14, "float32": 1e-6, "bfloat16": 1e-2}[dtype]
    np.testing.assert_allclose(g_second[BAD], want.astype(np.float64), rtol=tol, atol=tol)
    for g, g_clean in ((ga, ga_clean), (gb, gb_clean)):
        assert np.array_equal(others(g), others(g_clean))


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_minus_inf_policy_logit_is_a_zero_probability_entry(dtype: str) -> None:
    """-inf in the policy logits where the reference is finite: pi_v = 0, the KL and its
    gradients are finite and equal those with that logit at -1e4 (pi_v = 0 in float64 too),
    computed by autograd of the direct formula; the -inf entry's policy gradient is 0."""
    a, b = clean_pair(10)
    a_inf = with_bad(a, -np.inf, (0, 3))
    a_big = with_bad(a, -1e4, (0, 3))
    t = getattr(torch, dtype)
    w = np.random.default_rng(11).normal(size=SHAPE[:-1])
    val, ga, gb = grads(a_inf, b, w, dtype)
    at = torch.tensor(a_big).to(t).double().requires_grad_()
    bt = torch.tensor(b).to(t).double().requires_grad_()
    want = direct_torch(at, bt)
    (want * torch.tensor(w)).sum().backward()
    tol = {"float64": 1e-13, "float32": 1e-6, "bfloat16": 1e-2}[dtype]
    assert np.isfinite(val).all() and np.isfinite(ga).all() and np.isfinite(gb).all()
    np.testing.assert_allclose(val, want.detach().to(t).double().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(ga, at.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=tol, atol=tol)
    assert (ga[(*BAD, 0)] == 0) and (ga[(*BAD, 3)] == 0)
    np.testing.assert_allclose(
        rl.full_kl(a_inf, b),
        direct_torch(torch.tensor(a_big), torch.tensor(b)).numpy(),
        rtol=1e-13,
    )


def test_full_kinds_of_kl_penalty_propagate_nan() -> None:
    """verl's and TRL's `full` kinds go through full_kl: NaN policy logits gave 1.0 there too."""
    from klest.rl.full import penalty_full

    a, b = clean_pair(12)
    a2 = with_bad(a, np.nan)
    for framework in ("verl", "trl@0.11.4"):
        got = rl.kl_penalty(a2, b, "full", framework=framework)
        assert np.isnan(got[BAD]) and np.isfinite(others(got)).all()
    got = rl.kl_penalty(None, None, "full", framework="verl", logits=a2, ref_logits=b)
    assert np.isnan(got[BAD])
    with pytest.raises(ValueError, match=r"logits\[1, 2, 3\] is nan"):
        penalty_full(None, None, logits=a2, ref_logits=b, nonfinite="raise")


@pytest.mark.parametrize("framework", ["verl", "trl@0.11.4"])
def test_kl_penalty_full_passes_the_nonfinite_switch(framework) -> None:
    logits = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    ref = np.zeros((2, 3))
    lp = np.zeros(2)
    with pytest.raises(ValueError, match=r"logits\[0, 1\] is nan"):
        rl.kl_penalty(lp, lp, "full", framework=framework, logits=logits, ref_logits=ref,
                   nonfinite="raise")  # fmt: skip
