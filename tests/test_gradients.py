"""klest.gradients: exact expected gradients vs independent derivations, Monte Carlo, fixed points.

Independent references used here (none goes through the derivative table of
klest.gradients.coefficients):

* finite differences of the exact surrogate objectives built from the estimator *values*
  (klest.estimators) by enumeration: E_a~π[∇ k(l_a)] = ∇_θ Σ_a sg(π_a) k(l_a(θ)) (loss),
  Σ_a sg(π_a k_a) ∇ log π_a (reward), ∇_θ Σ_a π_a k(l_a) = ∇ E_π[k] (loss_is), and k2's
  surrogate for straight-through;
* finite differences of the closed-form KLs (softmax and Gaussian, via klest.kl);
* torch autograd through the frameworks' code (klest.rl.kl_penalty) on sampled actions,
  compared within z = 5 standard errors (fixed seeds; 40 such comparisons per run give a
  family-wise false-failure rate below 1e-4;
  numpy-only runs skip them);
* direct numerical maximisation of the regularised bandit objectives.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

import klest
from klest import Normal, estimators
from klest.gradients import (
    PLACEMENTS,
    expected_gradient,
    fixed_point,
    gradient_coefficient,
    gradient_covariance_trace,
    kl_pair,
    per_sample_gradients,
    true_gradient,
)
from klest.gradients.coefficients import DIFFERENTIABLE
from klest.gradients.fixed_point import (
    _linearly_stable,
    _log_softmax,
    forward_kl_optimum,
    greedy_policy,
    reverse_kl_optimum,
)
from klest.gradients.gaussian import (
    gaussian_expected_gradient,
    gaussian_gradient_covariance_trace,
    gaussian_true_gradient,
)
from klest.gradients.monte_carlo import (
    ROUTES,
    gaussian_monte_carlo_gradient,
    monte_carlo_gradient,
)
from klest.gradients.tables import (
    coefficient_table,
    fixed_point_table,
    gaussian_gradient_table,
    gradient_table,
)

Z = 5.0
KL_PQ, KL_RP = "KL(pi||ref)", "KL(ref||pi)"


def _fd(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of a scalar function."""
    out = np.empty_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def _surrogate_gradient(z, z_ref, name: str, placement: str) -> np.ndarray:
    """The expected gradient from the estimator's *values* only, by finite differences."""
    est = estimators.get(name)
    lr = log_softmax(z_ref)
    p0 = softmax(z)
    k0 = est(lr - log_softmax(z))

    def objective(theta: np.ndarray) -> float:
        lp = log_softmax(theta)
        l = lr - lp
        if placement == "loss":
            return float(p0 @ est(l))
        if placement == "reward":
            return float((p0 * k0) @ lp)
        if placement == "loss_is":
            return float(softmax(theta) @ est(l))
        return float(p0 @ (0.5 * l * l))  # straight-through: k2's gradient

    return _fd(objective, np.asarray(z, dtype=float))


logit_vectors = st.integers(2, 6).flatmap(
    lambda v: st.tuples(
        st.lists(st.floats(-3, 3), min_size=v, max_size=v),
        st.lists(st.floats(-3, 3), min_size=v, max_size=v),
    )
)


def _far_from_kinks(z, z_ref, name: str) -> bool:
    l = log_softmax(np.asarray(z_ref)) - log_softmax(np.asarray(z))
    kinks = np.asarray(estimators.get(name).kinks)
    return not kinks.size or bool(np.min(np.abs(l[:, None] - kinks[None, :])) > 1e-3)


# --------------------------------------------------------------------------------------
# Softmax: exact expected gradients
# --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(logit_vectors, st.sampled_from(DIFFERENTIABLE), st.sampled_from(PLACEMENTS))
def test_expected_gradient_matches_surrogate_finite_differences(pair, name, placement):
    z, z_ref = (np.array(v) for v in pair)
    assume(_far_from_kinks(z, z_ref, name))
    exact = expected_gradient(z, z_ref, estimator=name, placement=placement)
    reference = _surrogate_gradient(z, z_ref, name, placement)
    scale = max(1.0, float(np.max(np.abs(reference))))
    assert np.allclose(exact, reference, rtol=1e-6, atol=1e-7 * scale)


@settings(max_examples=25, deadline=None)
@given(logit_vectors)
def test_true_gradients_are_finite_differences_of_the_kls(pair):
    z, z_ref = (np.array(v) for v in pair)
    for direction in (KL_PQ, KL_RP):
        fd = _fd(lambda t, d=direction: float(kl_pair(t, z_ref)[d]), z)
        assert np.allclose(true_gradient(z, z_ref, direction=direction), fd, atol=1e-8)
    # klest.kl of the Categoricals agrees with kl_pair
    q, p = klest.Categorical(logits=z), klest.Categorical(logits=z_ref)
    assert math.isclose(klest.kl(q, p), float(kl_pair(z, z_ref)[KL_PQ]), abs_tol=1e-12)


# (estimator, placement) -> the KL whose gradient the expected gradient is, exactly
WHICH_KL = {
    ("k1", "loss"): "zero",
    ("k2", "loss"): KL_PQ,
    ("k3", "loss"): KL_RP,
    ("k1", "reward"): KL_PQ,
    ("k1", "loss_is"): KL_PQ,
    ("k3", "loss_is"): KL_PQ,
    ("rev_kl", "loss_is"): KL_RP,
    **{(name, "straight_through"): KL_PQ for name in DIFFERENTIABLE},
}
NEITHER = [("k2", "reward"), ("k2", "loss_is"), ("abs", "loss"), ("abs", "reward"),
           ("rev_kl", "loss"), ("rev_kl", "reward")]  # fmt: skip


@pytest.mark.parametrize(("name", "placement"), sorted(WHICH_KL))
def test_which_configurations_are_true_gradients(name, placement):
    rng = np.random.default_rng(7)
    z, z_ref = rng.normal(size=(20, 6)), rng.normal(size=(20, 6))
    g = expected_gradient(z, z_ref, estimator=name, placement=placement)
    target = WHICH_KL[(name, placement)]
    expected = np.zeros_like(g) if target == "zero" else true_gradient(z, z_ref, direction=target)
    assert np.allclose(g, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("name", "placement"), NEITHER)
def test_other_configurations_are_gradients_of_neither_kl(name, placement):
    rng = np.random.default_rng(8)
    z, z_ref = rng.normal(size=(20, 6)), rng.normal(size=(20, 6))
    g = expected_gradient(z, z_ref, estimator=name, placement=placement)
    for direction in (KL_PQ, KL_RP):
        t = true_gradient(z, z_ref, direction=direction)
        assert np.linalg.norm(g - t) > 1e-2 * np.linalg.norm(t)


def test_k3_as_reward_is_the_difference_of_the_two_kl_gradients():
    rng = np.random.default_rng(9)
    z, z_ref = rng.normal(size=(10, 5)), rng.normal(size=(10, 5))
    g = expected_gradient(z, z_ref, estimator="k3", placement="reward")
    diff = true_gradient(z, z_ref, direction=KL_PQ) - true_gradient(z, z_ref, direction=KL_RP)
    assert np.allclose(g, diff, atol=1e-14)


def test_low_var_kl_loses_the_gradient_where_its_clamp_is_active():
    # l = log ref - log pi ~ 6 for the last action: beyond the k3 <= 10 output clamp
    z, z_ref = np.array([3.0, 0.0, -3.0]), np.array([-2.0, 0.0, 2.0])
    l = log_softmax(z_ref) - log_softmax(z)
    assert l[-1] > estimators.get("low_var_kl").kinks[2]
    g_lvk = expected_gradient(z, z_ref, estimator="low_var_kl", placement="loss")
    g_k3 = expected_gradient(z, z_ref, estimator="k3", placement="loss")
    assert np.allclose(g_k3, true_gradient(z, z_ref, direction=KL_RP))
    assert np.linalg.norm(g_lvk - g_k3) > 0.1 * np.linalg.norm(g_k3)
    assert np.allclose(g_lvk, _surrogate_gradient(z, z_ref, "low_var_kl", "loss"), atol=1e-7)


def test_extreme_logits_stay_finite_and_exact():
    # pi(a) ~ e^-1000 while ref(a) ~ 1/2: the ratio ref/pi overflows float64 by far
    z, z_ref = np.array([0.0, -1000.0]), np.array([0.0, 0.0])
    g = expected_gradient(z, z_ref, estimator="k3", placement="loss")
    assert np.all(np.isfinite(g))
    assert np.allclose(g, softmax(z) - softmax(z_ref), atol=1e-15)
    g_rev = expected_gradient(z, z_ref, estimator="k2", placement="loss")
    assert np.allclose(g_rev, true_gradient(z, z_ref, direction=KL_PQ), atol=1e-12)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_covariance_trace_matches_direct_enumeration(name, placement):
    rng = np.random.default_rng(3)
    z, z_ref = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    G = per_sample_gradients(z, z_ref, estimator=name, placement=placement)  # (4, a, j)
    pi = softmax(z, axis=-1)
    mean = np.einsum("ba,baj->bj", pi, G)
    assert np.allclose(mean, expected_gradient(z, z_ref, estimator=name, placement=placement))
    direct = np.einsum("ba,ba->b", pi, np.sum((G - mean[:, None, :]) ** 2, axis=-1))
    trace = gradient_covariance_trace(z, z_ref, estimator=name, placement=placement)
    assert np.allclose(trace, direct, rtol=1e-10)


def test_coefficients_and_validation():
    l = np.linspace(-2, 2, 9)
    assert np.allclose(gradient_coefficient(l, estimator="k1", placement="loss"), 1.0)
    assert np.allclose(gradient_coefficient(l, estimator="k3", placement="loss_is"), -l)
    assert np.allclose(gradient_coefficient(l, estimator="rev_kl", placement="reward"),
                       estimators.get("rev_kl")(l))  # fmt: skip
    with pytest.raises(ValueError, match="placement must be one of"):
        gradient_coefficient(l, estimator="k1", placement="in_loss")
    with pytest.raises(ValueError, match="no tabulated derivative"):
        expected_gradient(np.zeros(3), np.zeros(3), estimator="pearson_chi2", placement="loss")
    # value-only placements take any registered estimator
    g = expected_gradient(np.zeros(3), [0.0, 1.0, 2.0], estimator="chi2", placement="reward")
    assert np.all(np.isfinite(g))
    with pytest.raises(ValueError, match="estimator: unknown estimator"):
        expected_gradient(np.zeros(3), np.zeros(3), estimator="k9", placement="loss")
    with pytest.raises(ValueError, match="logits must have shape"):
        expected_gradient(np.zeros(1), np.zeros(1), estimator="k1", placement="loss")
    with pytest.raises(ValueError, match="ref_logits must be finite"):
        expected_gradient(np.zeros(2), [0.0, np.nan], estimator="k1", placement="loss")
    with pytest.raises(ValueError, match="direction must be one of"):
        true_gradient(np.zeros(2), np.zeros(2), direction="forward")


# --------------------------------------------------------------------------------------
# Monte Carlo: torch autograd through the frameworks' penalties
# --------------------------------------------------------------------------------------

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)
MC_CASES = {
    "moderate": (np.array([0.5, -0.2, 0.1, -1.0]), np.array([0.0, 0.4, -0.3, 0.2])),
    "clamped": (np.array([3.0, 0.0, -3.0]), np.array([-2.0, 0.0, 2.0])),
}


@needs_torch
@pytest.mark.parametrize("case", sorted(MC_CASES))
@pytest.mark.parametrize(("name", "placement"), sorted(ROUTES))
def test_torch_monte_carlo_agrees_with_exact(case, name, placement):
    z, z_ref = MC_CASES[case]
    key = (sorted(MC_CASES).index(case), sorted(ROUTES).index((name, placement)))
    rng = np.random.default_rng(np.random.SeedSequence(2024, spawn_key=key))
    mc = monte_carlo_gradient(
        z, z_ref, estimator=name, placement=placement, n=20_000, rng=rng, block=8192
    )
    exact = expected_gradient(z, z_ref, estimator=name, placement=placement)
    assert mc.n == 20_000 and mc.backend == "torch"
    assert np.all(np.abs(mc.z_scores(exact)) <= Z), (mc.mean, exact, mc.se)


GAUSS_MC = [("k2", "loss"), ("k3", "loss"), ("k3", "loss_is"), ("k2", "reward")]


@needs_torch
@pytest.mark.parametrize(("name", "placement"), GAUSS_MC)
def test_gaussian_torch_monte_carlo_agrees_with_quadrature(name, placement):
    policy, ref = Normal(loc=0.3, scale=1.1), Normal(loc=0.0, scale=0.9)
    key = (GAUSS_MC.index((name, placement)),)
    rng = np.random.default_rng(np.random.SeedSequence(77, spawn_key=key))
    mc = gaussian_monte_carlo_gradient(
        policy, ref, estimator=name, placement=placement, n=40_000, rng=rng
    )
    exact = gaussian_expected_gradient(policy, ref, estimator=name, placement=placement)
    assert np.all(np.abs(mc.z_scores(exact)) <= Z), (mc.mean, exact, mc.se)


@needs_torch
def test_monte_carlo_validation():
    z = np.zeros(3)
    with pytest.raises(ValueError, match="no framework implements"):
        monte_carlo_gradient(z, z, estimator="rev_kl", placement="loss", n=10,
                             rng=np.random.default_rng(0))  # fmt: skip
    with pytest.raises(ValueError, match="n must be an integer"):
        monte_carlo_gradient(z, z, estimator="k1", placement="loss", n=1,
                             rng=np.random.default_rng(0))  # fmt: skip
    with pytest.raises(ValueError, match="backend must be"):
        monte_carlo_gradient(z, z, estimator="k1", placement="loss", n=10,
                             rng=np.random.default_rng(0), backend="jax")  # fmt: skip


# --------------------------------------------------------------------------------------
# Bandit fixed points
# --------------------------------------------------------------------------------------

R = np.array([1.0, 0.0, -0.5, 0.3])
Z_REF = np.array([0.0, 0.5, 0.0, -0.5])


def _maximise(objective, v: int) -> np.ndarray:
    res = minimize(lambda t: -objective(softmax(np.append(t, 0.0))), np.zeros(v - 1),
                   method="BFGS", options={"gtol": 1e-11})  # fmt: skip
    return softmax(np.append(res.x, 0.0))


@pytest.mark.parametrize("beta", [0.3, 1.0, 3.0])
def test_closed_form_optima_maximise_their_objectives(beta):
    ref = softmax(Z_REF)

    def rev(p):
        return p @ R - beta * np.sum(p * np.log(p / ref))

    def fwd(p):
        return p @ R - beta * np.sum(ref * np.log(ref / p))

    assert np.allclose(reverse_kl_optimum(R, Z_REF, beta), _maximise(rev, 4), atol=1e-6)
    assert np.allclose(forward_kl_optimum(R, Z_REF, beta), _maximise(fwd, 4), atol=1e-6)
    assert np.allclose(greedy_policy(R), [1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("name", "placement", "objective"),
    [
        ("k2", "loss", KL_PQ),
        ("k1", "reward", KL_PQ),
        ("k3", "loss_is", KL_PQ),
        ("k3", "straight_through", KL_PQ),
        ("k3", "loss", KL_RP),
        ("rev_kl", "loss_is", KL_RP),
    ],
)
def test_fixed_points_match_closed_form_optima(name, placement, objective):
    fp = fixed_point(R, Z_REF, 0.5, estimator=name, placement=placement)
    assert fp.converged and fp.status == "interior"
    assert fp.objective == objective
    assert fp.distances[objective] < 1e-9
    assert np.allclose(fp.probs, fp.candidates[objective], atol=1e-9)
    # an attractor of the flow: the finite-difference Jacobian is negative on sum-zero moves
    log_ref = log_softmax(Z_REF)

    def flow(z):
        lp = log_softmax(z)
        u = R - 0.5 * gradient_coefficient(log_ref - lp, estimator=name, placement=placement)
        return np.exp(lp) * (u - np.exp(lp) @ u)

    J = np.array([(flow(fp.logits + 1e-6 * e) - flow(fp.logits - 1e-6 * e)) / 2e-6
                  for e in np.eye(4)]).T  # fmt: skip
    Q = np.linalg.svd(np.eye(4) - 0.25)[0][:, :3]  # orthonormal basis of the sum-zero space
    assert np.max(np.linalg.eigvals(Q.T @ J @ Q).real) < 0


def test_stability_criterion_matches_eigenvalues():
    rng = np.random.default_rng(5)
    for _ in range(200):
        v = int(rng.integers(2, 6))
        l, log_pi = rng.normal(size=v), log_softmax(rng.normal(size=v))
        # c(l) = l^2 / 2 (k2 as a reward): c'(l) = l has either sign
        stable = _linearly_stable(lambda x: 0.5 * x * x, l, log_pi)
        Q = np.linalg.svd(np.eye(v) - 1.0 / v)[0][:, : v - 1]
        eig = np.linalg.eigvalsh(Q.T @ np.diag(l / np.exp(log_pi)) @ Q)
        assert stable == bool(eig.max() < 0)


def test_k1_in_the_loss_does_not_regularise():
    fp = fixed_point(R, Z_REF, 0.5, estimator="k1", placement="loss")
    assert not fp.converged and fp.status == "boundary"
    assert fp.objective == "unregularised"
    assert fp.probs[0] > 1 - 1e-6


def test_k3_as_reward_collapses_to_the_greedy_policy():
    # c(l) = k3(l) ~ l^2/2 has no restoring term at first order: the rarest action's penalty
    # grows as it becomes rarer, and the flow leaves the simplex's interior
    fp = fixed_point(R, Z_REF, 0.5, estimator="k3", placement="reward")
    assert fp.status == "boundary" and fp.objective == "unregularised"


def test_fixed_point_log_softmax_is_scipys_bit_for_bit():
    """The flow's own log-softmax (no array-API dispatch) gives scipy's bits, -inf included."""
    rng = np.random.default_rng(3)
    for _ in range(2000):
        z = rng.standard_normal(int(rng.integers(2, 9))) * rng.choice([1e-3, 1.0, 30.0, 800.0])
        if rng.random() < 0.2:
            z[0] = -np.inf
        np.testing.assert_array_equal(_log_softmax(z), log_softmax(z))


def test_fixed_point_validation():
    with pytest.raises(ValueError, match="does not support estimator 'abs'"):
        fixed_point(R, Z_REF, 1.0, estimator="abs", placement="loss")
    with pytest.raises(ValueError, match="beta must be a positive"):
        fixed_point(R, Z_REF, 0.0, estimator="k2", placement="loss")
    with pytest.raises(ValueError, match="ref_logits must be finite"):
        fixed_point(R, Z_REF[:3], 1.0, estimator="k2", placement="loss")


# --------------------------------------------------------------------------------------
# Gaussian policy
# --------------------------------------------------------------------------------------

GAUSS = [(Normal(loc=0.3, scale=1.2), Normal(loc=0.0, scale=1.0)),
         (Normal(loc=-0.5, scale=0.7), Normal(loc=0.4, scale=1.3))]  # fmt: skip


def _gaussian_fd(policy: Normal, f) -> np.ndarray:
    theta = np.array([policy.loc, math.log(policy.scale)])
    return _fd(lambda t: f(Normal(loc=t[0], scale=math.exp(t[1]))), theta, h=1e-5)


@pytest.mark.parametrize(("policy", "ref"), GAUSS)
def test_gaussian_true_gradients_are_finite_differences_of_closed_form_kl(policy, ref):
    fd_pq = _gaussian_fd(policy, lambda q: klest.kl(q, ref))
    fd_rp = _gaussian_fd(policy, lambda q: klest.kl(ref, q))
    assert np.allclose(gaussian_true_gradient(policy, ref, direction=KL_PQ), fd_pq, atol=1e-8)
    assert np.allclose(gaussian_true_gradient(policy, ref, direction=KL_RP), fd_rp, atol=1e-8)


@pytest.mark.parametrize(("policy", "ref"), GAUSS)
@pytest.mark.parametrize(
    ("name", "placement", "target"),
    [("k2", "loss", KL_PQ), ("k3", "loss", KL_RP), ("k1", "reward", KL_PQ),
     ("k3", "loss_is", KL_PQ), ("rev_kl", "loss_is", KL_RP), ("abs", "straight_through", KL_PQ)],
)  # fmt: skip
def test_gaussian_expected_gradients_are_true_kl_gradients(policy, ref, name, placement, target):
    g = gaussian_expected_gradient(policy, ref, estimator=name, placement=placement)
    assert np.allclose(g, gaussian_true_gradient(policy, ref, direction=target), rtol=1e-9)


@pytest.mark.parametrize(("policy", "ref"), GAUSS)
@pytest.mark.parametrize("name", ["k1", "k2", "k3", "rev_kl", "abs"])
def test_gaussian_loss_is_is_the_gradient_of_the_estimator_mean(policy, ref, name):
    # E[ρ k] with ρ = π/sg(π) has gradient ∇_θ E_π[k(l)]: finite differences of exact moments
    fd = _gaussian_fd(policy, lambda q: klest.exact_moments(q, ref, name).mean)
    g = gaussian_expected_gradient(policy, ref, estimator=name, placement="loss_is")
    assert np.allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_gaussian_k1_loss_is_zero_and_its_noise_is_the_fisher_trace():
    policy, ref = Normal(loc=0.4, scale=0.8), Normal(loc=0.0, scale=1.0)
    g = gaussian_expected_gradient(policy, ref, estimator="k1", placement="loss")
    assert np.allclose(g, 0.0, atol=1e-12)
    trace = gaussian_gradient_covariance_trace(policy, ref, estimator="k1", placement="loss")
    assert math.isclose(trace, 1 / 0.8**2 + 2.0, rel_tol=1e-9)
    # k3's gradient variance diverges once ref_scale^2 >= 2 scale^2
    wide = Normal(loc=0.0, scale=1.5)
    assert math.isinf(gaussian_gradient_covariance_trace(
        Normal(loc=0.0, scale=1.0), wide, estimator="k3", placement="loss"))  # fmt: skip


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def test_gradient_table_verdicts_and_decomposition():
    rng = np.random.default_rng(11)
    df = gradient_table(rng.normal(size=(12, 6)), rng.normal(size=(12, 6))).set_index(
        ["estimator", "placement"]
    )
    for key, target in WHICH_KL.items():
        assert df.loc[key, "gradient_of"] == target
    for key in NEITHER:
        assert df.loc[key, "gradient_of"] == "neither"
    row = df.loc[("k3", "reward")]
    assert math.isclose(row[f"coef_{KL_PQ}"], 1.0, abs_tol=1e-10)
    assert math.isclose(row[f"coef_{KL_RP}"], -1.0, abs_tol=1e-10)
    assert row["decomposition_residual"] < 1e-12
    assert df.loc[("k2", "reward"), "decomposition_residual"] > 1e-3


def test_gaussian_table_and_coefficient_table():
    df = gaussian_gradient_table(*GAUSS[0]).set_index(["estimator", "placement"])
    assert df.loc[("k3", "loss"), "gradient_of"] == KL_RP
    assert df.loc[("k1", "loss"), "gradient_of"] == "zero"
    # the clamps of low_var_kl change the Gaussian gradient only in the far tails
    assert df.loc[("low_var_kl", "loss"), "gradient_of"] == "neither"
    coef = coefficient_table(np.linspace(-2, 2, 5))
    k3_is = coef[(coef.estimator == "k3") & (coef.placement == "loss_is")]
    assert np.allclose(k3_is["centered"], -k3_is["log_ratio"])


def test_fixed_point_table_marks_unsupported_pairs():
    df = fixed_point_table(R, Z_REF, [0.5], estimators=["k3", "abs"], placements=["loss"])
    assert df.set_index("estimator").loc["abs", "status"] == "unsupported"
    assert df.set_index("estimator").loc["k3", "objective"] == KL_RP
