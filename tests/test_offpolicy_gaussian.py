"""gaussian_penalty_gradient: quadrature against closed forms and a Monte Carlo autograd route.

The Monte Carlo route is independent of the quadrature: x ~ μ from an explicit Generator,
per-sample torch parameters (loc, log scale), the penalty through ``rl.apply_spec`` (the
code behind ``kl_penalty``) with torch autograd, one backward pass for all samples. The two
agree within Z standard errors per component; every case asserts first that the gradient's
variance is finite (else a standard error means nothing).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from klest import Normal, rl
from klest.distributions import Laplace
from klest.divergence import kl
from klest.gradients import (
    gaussian_expected_gradient,
    gaussian_gradient_covariance_trace,
    gaussian_true_gradient,
    penalty_gradient,
)
from klest.gradients.dual import evaluate_with_derivative
from klest.gradients.offpolicy import behaviour_options, resolve_placement, weighted_spec
from klest.gradients.offpolicy_gaussian import _FILL, _Penalty, gaussian_penalty_gradient

torch = pytest.importorskip("torch")

Z = 5.0
N = 20_000
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# (π, π_ref, μ). A: moderate, μ narrower than π (ρ grows in the tails: TIS and the upper MIS
# bound act there). Its k-th moment E_μ[ρ^k ...] = ∫ π^k/μ^(k-1) ... is finite only for
# σ_π²/σ_μ² < k/(k-1): at 1.21 the fourth is, so the sample standard error is reliable (with
# μ = N(0.1, 0.9), ratio 1.49, the third moment is all but infinite and 300 seeds gave z with
# standard deviation 1.2 and |z| up to 5.6 for TRL's bias-corrected k3).
# B: μ wider than π and π_ref narrower (ρ, π_ref/π, π_ref/μ bounded, so
# every moment is finite); k3's output clamp (10) is active in the tails, ρ crosses 1.5 and 2
# near x = 2 and falls below 0.5 in the tails.
TRIPLES = {
    "A": (Normal(loc=0.2, scale=1.1), Normal(loc=0.0, scale=1.0), Normal(loc=0.1, scale=1.0)),
    "B": (Normal(loc=0.3, scale=1.0), Normal(loc=-0.2, scale=0.6), Normal(loc=-0.3, scale=1.15)),
}
WEIGHTINGS = {
    "own": {},
    "none": {"weighting": "none"},
    "detached": {"weighting": "detached"},
    "differentiable": {"weighting": "differentiable"},
    "tis": {"weighting": "differentiable", "truncate": 1.5},
    "mis": {"weighting": "differentiable", "mask_range": (0.5, 2.0)},
}
# the frameworks' own weights switched on by their options (the default leaves them off)
OWN_WEIGHTS = [
    ("trl", "grpo", {"use_bias_correction_kl": True}),
    ("nemo_rl", "k3", {"use_on_policy_kl_approximation": True}),
    ("nemo_rl@0.6.0", "k3", {"use_on_policy_kl_approximation": True}),
]


def _defaults() -> list[tuple[str, str]]:
    out = []
    for fw in rl.frameworks():
        kind = rl.release(fw).default_kind
        s = rl.spec(fw, kind)
        if s.raw or s.unsupported is not None or s.estimator == "pi_k1_sum":
            continue
        out.append((fw, kind))
    return out


def _cases() -> list[tuple[str, str, str, dict]]:
    cases = []
    for fw, kind in _defaults():
        loss = resolve_placement(rl.spec(fw, kind), None) == "loss"
        for name, variant in WEIGHTINGS.items():
            if name == "own" or loss:
                cases.append((fw, kind, name, variant))
    for fw, kind, opts in OWN_WEIGHTS:
        cases.append((fw, kind, "own+options", opts))
    return cases


CASES = _cases()


def _monte_carlo(pi, ref, mu, fw, kind, n, seed, weighting=None, truncate=None,
                 mask_range=None, **options):  # fmt: skip
    """(per-sample gradients (n, 2), per-sample penalty values (n,)) by torch autograd."""
    spec = weighted_spec(rl.spec(fw, kind), weighting, "token", truncate, mask_range,
                         "before_clamp")  # fmt: skip
    where = resolve_placement(spec, None)
    rng = np.random.default_rng(seed)
    x = mu.loc + mu.scale * rng.standard_normal(n)
    xt = torch.as_tensor(x, dtype=torch.float64)
    loc = torch.full((n,), pi.loc, dtype=torch.float64, requires_grad=True)
    log_scale = torch.full((n,), math.log(pi.scale), dtype=torch.float64, requires_grad=True)
    lp = -0.5 * ((xt - loc) / torch.exp(log_scale)) ** 2 - log_scale - HALF_LOG_2PI

    def log_density(d: Normal) -> torch.Tensor:
        return -0.5 * ((xt - d.loc) / d.scale) ** 2 - math.log(d.scale) - HALF_LOG_2PI

    log_mu = log_density(mu)
    anchored = not spec.anchor.startswith("ref_logprob")
    ref_lp = log_mu if anchored else log_density(ref)
    opts = behaviour_options(spec, log_mu, True, options)
    if where == "loss":
        f = rl.apply_spec(spec, lp, ref_lp, **opts)
        surrogate = f
    else:  # ρ · sg(f(log μ)) · log π: gradient ρ f ∇ log π
        f = rl.apply_spec(spec, log_mu, ref_lp, **opts).detach()
        surrogate = torch.exp(lp - log_mu).detach() * f * lp
    surrogate.sum().backward()
    grads = torch.stack([loc.grad, log_scale.grad], dim=1).numpy()
    return grads, f.detach().numpy()


@pytest.mark.parametrize("triple", sorted(TRIPLES))
@pytest.mark.parametrize(("fw", "kind", "name", "variant"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])  # fmt: skip
def test_quadrature_agrees_with_monte_carlo(triple, fw, kind, name, variant):
    pi, ref, mu = TRIPLES[triple]
    g = gaussian_penalty_gradient(pi, ref, framework=fw, kind=kind, behaviour=mu, **variant)
    assert np.isfinite(g.covariance_trace), "the standard error needs a finite variance"
    seed = 1000 + CASES.index((fw, kind, name, variant)) + (0 if triple == "A" else 500)
    grads, values = _monte_carlo(pi, ref, mu, fw, kind, N, seed, **variant)
    mean, se = grads.mean(axis=0), grads.std(axis=0, ddof=1) / math.sqrt(N)
    for i in range(2):
        if se[i] == 0.0:  # a constant gradient (prime-rl toward μ = π, ...): exact match
            assert mean[i] == pytest.approx(g.expected[i], abs=1e-12)
        else:
            assert abs(mean[i] - g.expected[i]) <= Z * se[i], (i, mean, g.expected, se)
    v_se = values.std(ddof=1) / math.sqrt(N)
    assert abs(values.mean() - float(g.expected_value)) <= Z * v_se + 1e-15
    if triple == "B":  # every moment finite: the sample trace's SE is valid
        dev = np.sum((grads - mean) ** 2, axis=1)
        t_se = dev.std(ddof=1) / math.sqrt(N)
        assert abs(dev.sum() / (N - 1) - float(g.covariance_trace)) <= Z * t_se + 1e-15


def test_the_cases_cover_every_default_and_activate_the_clamps():
    defaults = _defaults()
    assert len(defaults) == len(rl.frameworks())
    for pi, _, mu in TRIPLES.values():  # a finite fourth moment of ρ-weighted gradients
        assert pi.scale**2 / mu.scale**2 < 4.0 / 3.0
    x = np.random.default_rng(1).standard_normal(N) + 0.1  # μ of A
    pi, _, mu = TRIPLES["A"]
    rho = np.exp(pi.log_prob(x) - mu.log_prob(x))
    assert np.mean(rho > 2.0) > 1e-3 and np.mean(rho > 1.5) > 1e-2
    # the clamps the second triple is meant to exercise really act on some samples
    pi, ref, mu = TRIPLES["B"]
    x = mu.loc + mu.scale * np.random.default_rng(0).standard_normal(N)
    l = ref.log_prob(x) - pi.log_prob(x)
    assert np.mean(np.expm1(l) - l > 10.0) > 1e-3  # k3's output clamp
    rho = np.exp(pi.log_prob(x) - mu.log_prob(x))
    assert np.mean(rho > 2.0) > 1e-3 and np.mean(rho < 0.5) > 1e-3
    assert np.mean((rho > 1.5) & (rho < 2.0)) > 1e-3


ON_POLICY = [  # (framework, kind, options, estimator, placement of klest.gradients)
    ("verl", "k2", {}, "k2", "loss"),
    ("trl", "grpo", {}, "k3", "loss"),
    ("torchtune", "k3", {}, "k3", "loss"),
    ("trl", "grpo", {"use_bias_correction_kl": True}, "k3", "loss_is"),
    ("trl", "k3", {}, "k3", "reward"),
    ("openrlhf", "k1", {}, "k1", "reward"),
    ("verl", "k3+", {}, "k3", "straight_through"),
]


@pytest.mark.parametrize(("fw", "kind", "opts", "estimator", "placement"), ON_POLICY)
def test_on_policy_equals_the_gaussian_module(fw, kind, opts, estimator, placement):
    # close policies: verl's and OpenRLHF's clamps act only beyond 9 sigma (mass < 1e-18)
    pi, ref = Normal(loc=0.1, scale=1.05), Normal(loc=0.0, scale=1.0)
    g = gaussian_penalty_gradient(pi, ref, framework=fw, kind=kind, **opts)
    want = gaussian_expected_gradient(pi, ref, estimator=estimator, placement=placement)
    assert np.linalg.norm(g.expected - want) <= 1e-9 * np.linalg.norm(want)
    trace = gaussian_gradient_covariance_trace(pi, ref, estimator=estimator, placement=placement)
    assert float(g.covariance_trace) == pytest.approx(trace, rel=1e-9)


def test_expected_values_are_the_kls_they_estimate():
    pi, ref, mu = TRIPLES["A"]
    on = gaussian_penalty_gradient(pi, ref, framework="torchtune", kind="k3")
    assert float(on.expected_value) == pytest.approx(kl(pi, ref), rel=1e-9)
    assert float(on.kl["KL(mu||pi)"]) == 0.0
    corrected = gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu,
                                          use_bias_correction_kl=True)  # fmt: skip
    assert float(corrected.expected_value) == pytest.approx(kl(pi, ref), rel=1e-9)
    assert float(corrected.kl["KL(mu||pi)"]) == pytest.approx(kl(mu, pi), rel=1e-12)


def test_trl_bias_correction_gives_the_exact_gradient_off_policy():
    pi, ref, mu = TRIPLES["A"]
    g = gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu,
                                  use_bias_correction_kl=True)  # fmt: skip
    assert g.verdict == "KL(pi||ref)"
    assert g.relative_bias <= 1e-9
    np.testing.assert_allclose(g.true["KL(pi||ref)"], gaussian_true_gradient(pi, ref))


def test_nemo_rl_060_detached_weight_gives_the_reverse_kl_gradient():
    pi, ref, mu = TRIPLES["A"]  # clamps act only beyond 12 sigma of μ
    g = gaussian_penalty_gradient(pi, ref, framework="nemo_rl@0.6.0", kind="k3", behaviour=mu,
                                  use_on_policy_kl_approximation=True)  # fmt: skip
    assert g.verdict == "KL(ref||pi)"
    want = gaussian_true_gradient(pi, ref, direction="KL(ref||pi)")
    assert np.linalg.norm(g.expected - want) <= 1e-9 * np.linalg.norm(want)


def test_unweighted_k3_off_policy_is_neither():
    pi, ref, mu = TRIPLES["A"]
    g = gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu,
                                  weighting="none")  # fmt: skip
    assert g.verdict == "neither"
    assert g.relative_bias > 1e-3


def test_metric_and_anchored_specs():
    pi, ref, mu = TRIPLES["A"]
    # prime-rl's penalty pulls toward μ: on-policy (μ = π) its gradient is exactly zero
    on = gaussian_penalty_gradient(pi, ref, framework="prime_rl", kind="kl_tau")
    assert np.all(on.expected == 0.0) and on.verdict == "zero"
    off = gaussian_penalty_gradient(pi, ref, framework="prime_rl", kind="kl_tau", behaviour=mu)
    # E_μ[-2 l s] with l = log μ - log π: KL(μ‖π)'s gradient is -E_μ[s]; not that, but nonzero
    assert off.verdict == "neither" and float(off.kl["KL(pi||ref)"]) == pytest.approx(kl(pi, mu))
    # mismatch_kl is logged only: no gradient, and its mean is E_μ[ρ - log ρ - 1] = KL(μ‖π)
    metric = gaussian_penalty_gradient(pi, ref, framework="prime_rl", kind="mismatch_kl",
                                       behaviour=mu)  # fmt: skip
    assert metric.placement == "metric" and metric.verdict == "zero"
    assert np.all(metric.expected == 0.0) and float(metric.covariance_trace) == 0.0
    assert float(metric.expected_value) == pytest.approx(kl(mu, pi), rel=1e-9)


def test_a_diverging_second_moment_is_inf_and_the_mean_stays_exact():
    # σ_π² ≥ 2 σ_μ²: E_μ[ρ² ...] = ∫ π²/μ ... diverges; E_μ[ρ G] = ∫ π G stays finite. Here ρ
    # overflows float64 near x = 3.8 where π still has mass e^-7: integrated in log space.
    pi, ref, mu = Normal(loc=0.0, scale=1.0), Normal(loc=0.5, scale=1.0), Normal(loc=0.0, scale=0.1)
    g = gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu,
                                  use_bias_correction_kl=True)  # fmt: skip
    assert g.verdict == "KL(pi||ref)"
    assert math.isinf(float(g.covariance_trace))
    moderate = Normal(loc=0.0, scale=1.5), Normal(loc=0.0, scale=1.0), Normal(loc=0.2, scale=1.0)
    g = gaussian_penalty_gradient(moderate[0], moderate[1], framework="trl", kind="grpo",
                                  behaviour=moderate[2], use_bias_correction_kl=True)  # fmt: skip
    assert g.verdict == "KL(pi||ref)" and math.isinf(float(g.covariance_trace))
    # ρ·k3 = π_ref/μ overflows float64 near x = 9.7 where μ·ρ·k3 ≈ π_ref is e^-47: the finite
    # E_μ[ρ k3] = KL(π‖π_ref) cannot be evaluated in float64, so it is NaN, not inf
    pi, ref, mu = (
        Normal(loc=0.0, scale=0.3),
        Normal(loc=0.0, scale=1.0),
        Normal(loc=0.0, scale=0.25),
    )
    g = gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu,
                                  use_bias_correction_kl=True)  # fmt: skip
    assert math.isnan(float(g.expected_value)) and g.verdict == "KL(pi||ref)"


def _one_line_value_error(**kwargs) -> str:
    pi, ref, mu = TRIPLES["A"]
    args = {"policy": pi, "ref": ref, "framework": "trl", "kind": "grpo", "behaviour": mu}
    args.update(kwargs)
    policy, ref_ = args.pop("policy"), args.pop("ref")
    with pytest.raises(ValueError) as info:
        gaussian_penalty_gradient(policy, ref_, **args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_errors():
    other = Laplace(loc=0.0, scale=1.0)
    assert "policy" in _one_line_value_error(policy=other)
    assert "ref" in _one_line_value_error(ref=0.5)
    assert "behaviour" in _one_line_value_error(behaviour=other)
    assert "token" in _one_line_value_error(weighting="differentiable", level="sequence_mean")
    assert "token" in _one_line_value_error(weighting="detached", level="sequence_sum")
    assert "token" in _one_line_value_error(use_bias_correction_kl=True,
                                            importance_sampling_level="sequence")  # fmt: skip
    assert "unknown option" in _one_line_value_error(old_log_prob=1.0)
    assert "behaviour=" in _one_line_value_error(use_bias_correction_kl=True,
                                                 old_logprob=np.zeros(3))  # fmt: skip
    assert "per-token penalty" in _one_line_value_error(framework="trl@0.11.4", kind="full")
    with pytest.raises(NotImplementedError):
        gaussian_penalty_gradient(*TRIPLES["A"][:2], framework="verl@0.7.1", kind="k3+")


def test_the_quadrature_splits_where_the_clamps_switch():
    pi, ref, mu = TRIPLES["B"]
    spec = weighted_spec(rl.spec("verl", "low_var_kl"), "differentiable", "token", 1.5, None,
                         "before_clamp")  # fmt: skip
    opts = behaviour_options(spec, _FILL, True, {})
    model = _Penalty(spec, "loss", pi, ref, mu, opts)
    x = model.breaks()
    l = ref.log_prob(x) - pi.log_prob(x)
    rho = np.exp(pi.log_prob(x) - mu.log_prob(x))
    c = np.clip(l, -20.0, 20.0)  # the input clamp
    pre_clamp = np.minimum(rho, 1.5) * (np.expm1(c) - c)  # what the output clamp (10) acts on
    on_input = np.isclose(np.abs(l), 20.0, rtol=1e-12)
    on_truncation = np.isclose(rho, 1.5, rtol=1e-12)
    on_output = np.isclose(pre_clamp, 10.0, rtol=1e-9)
    assert (on_input | on_truncation | on_output).all()
    assert on_input.sum() == 2 and on_truncation.sum() == 2 and on_output.sum() == 2


def test_softmax_penalty_gradient_rejects_unsupported_kinds_like_the_gaussian_one():
    z, z_ref = np.array([0.5, 0.0, -1.0]), np.array([0.0, 0.3, 0.1])
    with pytest.raises(NotImplementedError):
        penalty_gradient(z, z_ref, framework="verl@0.7.1", kind="k3+")


def test_the_derivative_of_a_weighted_k3_is_exact_at_a_large_log_ratio():
    spec = rl.spec("trl", "grpo")
    lp, old = np.array([-50.0]), np.array([-50.5])
    for l in (5.0, 40.0, 100.0):
        _, d = evaluate_with_derivative(spec, lp, lp + l, {"use_bias_correction_kl": True,
                                                           "old_logprob": old})  # fmt: skip
        w = math.exp(lp[0] - old[0])
        assert d[0, 0] == pytest.approx(-w * l, rel=1e-12)
