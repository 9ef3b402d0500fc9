"""klest.rl.full_kl and the ``full`` kinds: against direct computation, klest.kl, autograd.

Direct computation: sum_v softmax(a)_v (log_softmax(a)_v - log_softmax(b)_v) with scipy in
float64 (or torch autograd through the same expression for gradients). The chunked
implementation must agree with it, with ``klest.kl`` on Categorical(logits=...), and give
bit-identical results for every chunk size.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import log_softmax, softmax

import klest
from klest import rl

torch = pytest.importorskip("torch")

LOGIT_RANGE = next(p.typical for p in klest.Categorical.params if p.name == "logits")


def direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(softmax(a, -1) * (log_softmax(a, -1) - log_softmax(b, -1)), axis=-1)


def logits(seed: int, shape: tuple[int, ...], scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, shape)


@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 3, 11)])
def test_matches_direct_computation_both_directions(shape: tuple[int, ...]) -> None:
    a, b = logits(0, shape), logits(1, shape)
    got = rl.full_kl(a, b)
    assert isinstance(got, np.ndarray) and got.shape == shape[:-1] and got.dtype == np.float64
    np.testing.assert_allclose(got, direct(a, b), rtol=1e-13, atol=1e-15)
    for direction in ("KL(ref||pi)", "KL(p||q)"):
        np.testing.assert_allclose(
            rl.full_kl(a, b, direction=direction), direct(b, a), rtol=1e-13, atol=1e-15
        )
    np.testing.assert_array_equal(rl.full_kl(a, b, direction="KL(q||p)"), got)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 12).flatmap(
        lambda k: st.tuples(
            *[hnp.arrays(np.float64, (3, k), elements=st.floats(*LOGIT_RANGE)) for _ in range(2)]
        )
    )
)
def test_matches_klest_kl_on_categoricals(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    pi, ref = klest.Categorical(logits=a), klest.Categorical(logits=b)
    np.testing.assert_allclose(rl.full_kl(a, b), klest.kl(pi, ref), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        rl.full_kl(a, b, direction="KL(ref||pi)"), klest.kl(ref, pi), rtol=1e-12, atol=1e-15
    )


def test_near_identical_policies_keep_relative_precision() -> None:
    """KL ~ 1e-14: sum p (log p - log r) would be rounding noise; klest.kl is exact here."""
    a = logits(2, (4, 50))
    b = a + 1e-7 * logits(3, (4, 50), scale=1.0)
    want = klest.kl(klest.Categorical(logits=a), klest.Categorical(logits=b))
    assert (want < 1e-12).all()
    np.testing.assert_allclose(rl.full_kl(a, b), want, rtol=1e-7)


def test_subnormal_policy_probability_against_a_large_reference_one() -> None:
    """pi_v = e^-720 (subnormal, > 0) where pi_ref_v = 1/2: the term pi_v k3(log(r_v/pi_v))
    overflows (e^719 = inf, times 1e-313 = inf) although the KL is log 2 (was +inf)."""
    a = np.array([[0.0, -720.0], [0.0, -740.0], [5.0, -800.0]])
    b = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    want = direct(a, b)
    np.testing.assert_allclose(rl.full_kl(a, b), want, rtol=1e-13)
    at = torch.tensor(a, requires_grad=True)
    out = rl.full_kl(at, torch.tensor(b))
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-13)
    out.sum().backward()
    a2 = torch.tensor(a, requires_grad=True)
    x, y = torch.log_softmax(a2, -1), torch.log_softmax(torch.tensor(b), -1)
    (x.exp() * (x - y)).sum().backward()
    torch.testing.assert_close(at.grad, a2.grad, rtol=1e-12, atol=1e-300)


def test_invariant_to_row_shifts() -> None:
    a, b = logits(4, (3, 9)), logits(5, (3, 9))
    shifted = a + np.array([[100.0], [-50.0], [3.0]])
    np.testing.assert_allclose(rl.full_kl(shifted, b), rl.full_kl(a, b), rtol=1e-12)


def test_masked_vocabulary_entries() -> None:
    """-inf logits: a zero-probability policy entry contributes nothing; a reference zero
    where the policy has mass makes the KL infinite (as klest.kl on the Categoricals)."""
    a, b = logits(6, (2, 6)), logits(7, (2, 6))
    a[0, :2] = -np.inf
    b[1, 3] = -np.inf
    got = rl.full_kl(a, b)
    want = klest.kl(klest.Categorical(logits=a), klest.Categorical(logits=b))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
    assert got[1] == np.inf == want[1]


def test_chunking_gives_identical_results() -> None:
    a, b = logits(8, (5, 3, 17)), logits(9, (5, 3, 17))
    runs = [rl.full_kl(a, b, chunk_size=c) for c in (1, 2, 4, 7, 15, 1000, None)]
    for run in runs[1:]:
        assert np.array_equal(run, runs[0])
    at, bt = torch.tensor(a), torch.tensor(b)
    runs_t = [rl.full_kl(at, bt, chunk_size=c) for c in (1, 3, 16, None)]
    for run in runs_t[1:]:
        assert torch.equal(run, runs_t[0])


def test_qwen_sized_vocabulary() -> None:
    """8 positions x 152,064 vocabulary entries (float32 logits, as a model emits them)."""
    rng = np.random.default_rng(10)
    a = (3.0 * rng.standard_normal((8, 152_064))).astype(np.float32)
    b = (a + 0.2 * rng.standard_normal(a.shape)).astype(np.float32)
    got = rl.full_kl(a, b)
    np.testing.assert_allclose(got, direct(a, b), rtol=1e-10)
    assert np.array_equal(rl.full_kl(a, b, chunk_size=3), got)
    at = torch.from_numpy(a).requires_grad_()
    out = rl.full_kl(at, torch.from_numpy(b))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), got, rtol=1e-6)
    out.sum().backward()
    # softmax gradients sum to zero over the vocabulary (KL is invariant to row shifts)
    assert at.grad.dtype == torch.float32
    np.testing.assert_allclose(at.grad.double().sum(-1).numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("direction", ["KL(pi||ref)", "KL(ref||pi)"])
def test_torch_gradients_match_autograd_of_the_direct_formula(direction: str) -> None:
    a, b = logits(11, (2, 3, 13)), logits(12, (2, 3, 13))
    weights = torch.tensor(logits(13, (2, 3)))
    at, bt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (rl.full_kl(at, bt, direction=direction, chunk_size=4) * weights).sum().backward()
    a2, b2 = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    x, y = (a2, b2) if direction == "KL(pi||ref)" else (b2, a2)
    kl = (torch.softmax(x, -1) * (torch.log_softmax(x, -1) - torch.log_softmax(y, -1))).sum(-1)
    (kl * weights).sum().backward()
    torch.testing.assert_close(at.grad, a2.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bt.grad, b2.grad, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda x, y: rl.full_kl(x, y, direction=direction, chunk_size=2),
        (torch.tensor(a[0], requires_grad=True), torch.tensor(b[0], requires_grad=True)),
    )


def test_torch_dtypes_and_mixed_inputs() -> None:
    a, b = logits(14, (4, 10)), logits(15, (4, 10))
    for dtype in (torch.float32, torch.bfloat16):
        at = torch.tensor(a, dtype=dtype, requires_grad=True)
        out = rl.full_kl(at, torch.tensor(b, dtype=dtype))
        assert out.dtype == dtype
        out.float().sum().backward()
        assert at.grad.dtype == dtype and at.grad.shape == at.shape
    # a torch policy against a numpy reference: torch result, gradient to the policy only
    at = torch.tensor(a, requires_grad=True)
    out = rl.full_kl(at, b)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.detach().numpy(), direct(a, b), rtol=1e-13)


def test_single_entry_vocabulary_and_float_inputs() -> None:
    assert np.array_equal(rl.full_kl(np.zeros((3, 1)), np.ones((3, 1))), np.zeros(3))
    got = rl.full_kl([0.0, 1.0], [1.0, 0.0])
    assert got.shape == () and got == pytest.approx(float(direct([0.0, 1.0], [1.0, 0.0])))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "forward"}, "direction must be one of"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"chunk_size": True}, "chunk_size"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rl.full_kl(np.zeros((2, 3)), np.zeros((2, 3)), **kwargs)


def test_invalid_shapes_and_rows() -> None:
    with pytest.raises(ValueError, match="same shape"):
        rl.full_kl(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="non-empty last"):
        rl.full_kl(np.zeros((2, 0)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"logits at position \(1,\) is -inf .*row of -inf"):
        rl.full_kl(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), np.zeros((2, 2)))


def test_verl_full_kind_is_the_exact_kl_with_gradients() -> None:
    a, b = logits(16, (3, 4, 9)), logits(17, (3, 4, 9))
    lp = np.zeros((3, 4))  # the sampled tokens' log-probs are not needed by `full`
    got = rl.kl_penalty(lp, lp, "full", framework="verl", logits=a, ref_logits=b)
    np.testing.assert_allclose(got, direct(a, b), rtol=1e-13)
    at = torch.tensor(a, requires_grad=True)
    out = rl.kl_penalty(None, None, "full", framework="verl", logits=at, ref_logits=b)
    assert out.requires_grad
    with pytest.raises(ValueError, match="shape"):
        rl.kl_penalty(np.zeros(3), lp, "full", framework="verl", logits=a, ref_logits=b)
    with pytest.raises(ValueError, match="both"):
        rl.kl_penalty(lp, lp, "full", framework="verl", logits=a)


def test_trl_full_kind_matches_its_kl_div_formula_and_is_detached() -> None:
    """TRL's legacy `full`: F.kl_div(ref_logprob, logprob, log_target=True).sum(-1) on the
    whole vocabulary's log-probabilities = sum_v exp(logprob_v) (logprob_v - ref_logprob_v)."""
    lp, ref = log_softmax(logits(18, (5, 8)), -1), log_softmax(logits(19, (5, 8)), -1)
    want = np.sum(np.exp(lp) * (lp - ref), axis=-1)
    np.testing.assert_allclose(
        rl.kl_penalty(lp, ref, "full", framework="trl@0.11.4"), want, rtol=1e-13
    )
    lp_t = torch.tensor(lp, requires_grad=True)
    out = rl.kl_penalty(lp_t, torch.tensor(ref), "full", framework="trl@0.11.4")
    assert not out.requires_grad
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-13)
