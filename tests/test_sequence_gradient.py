"""klest.sequence.sequence_gradient against brute force: every response enumerated, torch
autograd of each configuration's per-response surrogate (written here from the definitions,
independently of the forward/backward passes), to 1e-10 relative; and Monte Carlo."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from klest import sequence
from klest.sequence import TabularAR, sequence_gradient
from klest.sequence.gradient import AGGREGATIONS, PLACEMENTS

torch = pytest.importorskip("torch")


def models() -> dict[str, tuple[TabularAR, TabularAR, TabularAR]]:
    rng = np.random.default_rng(14)
    out = {}
    for name, kw in {
        "order1": {"vocab": 3, "order": 1, "length": 4},
        "eos": {"vocab": 3, "order": 1, "length": 5, "eos": 2},
        "order2_eos": {"vocab": 3, "order": 2, "length": 4, "eos": 0},
    }.items():
        pi = TabularAR.random(rng=rng, **kw)
        out[name] = (pi, pi.perturbed(rng, 0.8), pi.perturbed(rng, 0.4))
    return out


MODELS = models()


def responses(model: TabularAR) -> np.ndarray:
    T, V = model.length, model.vocab
    every = np.array(list(itertools.product(range(V), repeat=T)))
    if model.eos is None:
        return every
    out = set()
    for row in every:
        hits = np.flatnonzero(row == model.eos)
        n = hits[0] + 1 if hits.size else T
        out.add(tuple(row[:n]) + (-1,) * (T - n))
    return np.array(sorted(out))


def brute_force(pi, ref, estimator, placement, aggregation, behaviour=None, weighting="none"):  # type: ignore[no-untyped-def]
    """Σ_x P_sampler(x) ∇_θ S(x) with S the configuration's surrogate, by torch autograd."""
    x = responses(pi)
    ctx = torch.as_tensor(pi.contexts(x))
    valid = torch.as_tensor(x >= 0)
    tok = torch.as_tensor(np.maximum(x, 0))
    theta = torch.tensor(pi.logits, requires_grad=True)
    table = torch.log_softmax(theta.reshape(-1, pi.vocab), dim=-1)
    ref_table = torch.log_softmax(torch.tensor(ref.logits).reshape(-1, pi.vocab), dim=-1)
    sampler = behaviour if behaviour is not None else pi
    mu_table = torch.log_softmax(torch.tensor(sampler.logits).reshape(-1, pi.vocab), dim=-1)
    zero = torch.zeros((), dtype=torch.float64)
    lp = torch.where(valid, table[ctx, tok], zero)
    lr = torch.where(valid, ref_table[ctx, tok], zero)
    lm = torch.where(valid, mu_table[ctx, tok], zero)
    prob = lm.sum(1).exp().detach()
    length = valid.sum(1).to(torch.float64)
    a = {
        "seq_mean_token_sum": torch.ones_like(length),
        "seq_mean_token_mean": 1.0 / length,
        "seq_mean_token_sum_norm": torch.full_like(length, 1.0 / pi.length),
        "token_mean": torch.full_like(length, 1.0 / float((prob * length).sum())),
    }[aggregation][:, None] * valid
    l = lr - lp
    k = {"k1": -l, "k2": 0.5 * l * l, "k3": torch.expm1(l) - l}[estimator]
    k = torch.where(valid, k, zero)
    rho = torch.exp(lp - lm)
    omega = {
        "none": torch.ones_like(lp),
        "token_detached": rho.detach(),
        "token_differentiable": rho,
    }.get(weighting, torch.ones_like(lp))
    if placement == "loss":
        s = (a * omega * k).sum(1)
        if weighting.startswith("sequence"):
            w = rho.prod(1) if weighting == "sequence_differentiable" else rho.prod(1).detach()
            s = w * s
    elif placement == "rao_blackwell":
        kl_rows = (table.exp() * (table - ref_table)).sum(-1)
        kl_t = torch.where(valid, kl_rows[ctx], zero)
        after = kl_t.flip(1).cumsum(1).flip(1) - kl_t
        s = kl_t.sum(1) + (after.detach() * lp).sum(1)
    else:
        total = k.sum(1, keepdim=True).expand_as(k)
        coef = {
            "reward_token": k,
            "reward_to_go": k.flip(1).cumsum(1).flip(1),
            "reward_sum": total,
            "reward_scalar": total,
        }[placement]
        s = ((a * omega * coef).detach() * lp).sum(1)
        if weighting == "sequence_detached":
            s = rho.prod(1).detach() * s
    (prob * s).sum().backward()
    return theta.grad.numpy()


CASES = [
    (name, placement, aggregation)
    for name in MODELS
    for placement in PLACEMENTS
    for aggregation in (AGGREGATIONS if placement != "rao_blackwell" else ("seq_mean_token_sum",))
]


@pytest.mark.parametrize(("model", "placement", "aggregation"), CASES)
def test_matches_brute_force_enumeration(model: str, placement: str, aggregation: str) -> None:
    pi, ref, _ = MODELS[model]
    estimators = ("k1",) if placement in ("reward_scalar", "rao_blackwell") else ("k1", "k2", "k3")
    for est in estimators:
        g = sequence_gradient(pi, ref, estimator=est, placement=placement, aggregation=aggregation)
        want = brute_force(pi, ref, est, placement, aggregation)
        scale = max(np.linalg.norm(want), np.linalg.norm(g.true["KL(pi||ref)"]))
        assert np.linalg.norm(g.expected - want) <= 1e-10 * scale


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    "weighting",
    ["none", "token_detached", "token_differentiable", "sequence_detached",
     "sequence_differentiable"],
)  # fmt: skip
def test_off_policy_weightings_match_brute_force(model: str, weighting: str) -> None:
    pi, ref, old = MODELS[model]
    placements = ("loss",) if weighting.endswith("differentiable") else ("loss", "reward_to_go")
    for placement in placements:
        for aggregation in ("seq_mean_token_mean", "seq_mean_token_sum", "token_mean"):
            options = {"behaviour": old, "weighting": weighting, "aggregation": aggregation}
            g = sequence_gradient(pi, ref, estimator="k3", placement=placement, **options)
            want = brute_force(pi, ref, "k3", placement, aggregation, old, weighting)
            scale = max(np.linalg.norm(want), np.linalg.norm(g.true["KL(pi||ref)"]))
            assert np.linalg.norm(g.expected - want) <= 1e-10 * scale


@pytest.mark.parametrize("model", list(MODELS))
def test_true_gradients_match_autograd_of_the_enumerated_kls(model: str) -> None:
    pi, ref, _ = MODELS[model]
    x = responses(pi)
    ctx = torch.as_tensor(pi.contexts(x))
    valid = torch.as_tensor(x >= 0)
    tok = torch.as_tensor(np.maximum(x, 0))
    theta = torch.tensor(pi.logits, requires_grad=True)
    table = torch.log_softmax(theta.reshape(-1, pi.vocab), dim=-1)
    ref_table = torch.log_softmax(torch.tensor(ref.logits).reshape(-1, pi.vocab), dim=-1)
    zero = torch.zeros((), dtype=torch.float64)
    log_p = torch.where(valid, table[ctx, tok], zero).sum(1)
    log_r = torch.where(valid, ref_table[ctx, tok], zero).sum(1)
    forward = (log_p.exp() * (log_p - log_r)).sum()
    reverse = (log_r.exp() * (log_r - log_p)).sum()
    assert float(forward.detach()) == pytest.approx(sequence.sequence_kl(pi, ref), rel=1e-12)
    (g_forward,) = torch.autograd.grad(forward, theta, retain_graph=True)
    (g_reverse,) = torch.autograd.grad(reverse, theta)
    true = sequence.sequence_gradient(pi, ref).true
    np.testing.assert_allclose(true["KL(pi||ref)"], g_forward.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(true["KL(ref||pi)"], g_reverse.numpy(), rtol=1e-10, atol=1e-14)


def test_known_verdicts() -> None:
    """k1 reward-to-go (REINFORCE) and the RB gradient are ∇KL(π‖ref); k2 (or any estimator
    with the k1 per-token gradient) in the loss is only its token-level part (Tang & Munos's
    pitfall 2); k1 in the loss has zero expectation."""
    pi, ref, _ = MODELS["eos"]
    assert sequence_gradient(pi, ref, estimator="k1", placement="reward_to_go").verdict == (
        "KL(pi||ref)"
    )
    assert sequence_gradient(pi, ref, placement="rao_blackwell").verdict == "KL(pi||ref)"
    assert sequence_gradient(pi, ref, estimator="k2", placement="loss").verdict == "partial"
    assert sequence_gradient(pi, ref, estimator="k1", placement="loss").verdict == "zero"
    assert sequence_gradient(pi, ref, estimator="k3", placement="loss").verdict == "neither"
    # the prefix sum Σ_{s<t} k_s has zero expectation against ∇log π_t: the same mean as the
    # reward-to-go, a larger variance
    full = sequence_gradient(pi, ref, estimator="k1", placement="reward_sum")
    to_go = sequence_gradient(pi, ref, estimator="k1", placement="reward_to_go")
    assert full.verdict == "KL(pi||ref)" and full.cov_trace > to_go.cov_trace


MC_CASES = [
    (placement, aggregation, est, weighting)
    for placement in PLACEMENTS
    for aggregation in ("seq_mean_token_mean", "token_mean")
    for est in (("k1",) if placement in ("reward_scalar", "rao_blackwell") else ("k3",))
    for weighting in (
        ("none",)
        if placement == "rao_blackwell"
        else ("none", "token_detached", "sequence_detached")
        + (("token_differentiable", "sequence_differentiable") if placement == "loss" else ())
    )
    if placement != "rao_blackwell" or aggregation == "seq_mean_token_mean"
]


@pytest.mark.parametrize(("placement", "aggregation", "estimator", "weighting"), MC_CASES)
def test_monte_carlo_agrees_within_five_standard_errors(
    placement: str, aggregation: str, estimator: str, weighting: str
) -> None:
    """The library's Monte Carlo route (torch autograd over sampled responses) against the
    exact DP expectations, z = 5 per table entry (~40 cases x 12 entries: a family-wide
    false-failure rate below 1e-3)."""
    pi, ref, old = MODELS["eos"]
    behaviour = None if weighting == "none" else old
    options = {"estimator": estimator, "placement": placement, "aggregation": aggregation,
               "behaviour": behaviour, "weighting": weighting}  # fmt: skip
    exact = sequence_gradient(pi, ref, **options)
    mc = sequence.monte_carlo_sequence_gradient(pi, ref, n=6000, seed=3, **options)
    assert np.all(mc.se[np.abs(exact.expected) > 0] > 0)
    assert np.abs(mc.z_scores(exact.expected)).max() <= 5.0


def test_bad_arguments_raise_one_line_errors() -> None:
    pi, ref, old = MODELS["eos"]
    for kwargs, match in (
        ({"placement": "reward"}, "placement must be"),
        ({"aggregation": "mean"}, "aggregation must be"),
        ({"estimator": "low_var_kl"}, "estimator must be one of"),
        ({"placement": "reward_scalar", "estimator": "k3"}, "RLOO"),
        ({"weighting": "token_detached"}, "needs behaviour"),
        ({"behaviour": old, "weighting": "token_differentiable", "placement": "reward_sum"},
         "in the loss"),
        ({"behaviour": old, "placement": "rao_blackwell"}, "on-policy"),
        ({"aggregation": "seq_mean_token_sum_norm", "norm_constant": 0.0}, "norm_constant"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=match) as info:
            sequence_gradient(pi, ref, **kwargs)
        assert "\n" not in str(info.value)
    other = TabularAR.random(vocab=3, order=1, length=5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not match"):
        sequence_gradient(pi, other)  # eos differs


def test_the_covariance_is_that_of_the_estimator_a_batch_of_one_uses() -> None:
    """cov_trace comes from per-response gradients (responses drawn from the behaviour policy
    with the weighting's ratios): their mean is the DP expectation for every configuration,
    and a sequence-level ratio, which leaves the mean on-policy, changes the variance."""
    from klest.sequence import gradient as module

    pi, ref, old = MODELS["eos"]
    for placement in PLACEMENTS:
        for weighting in module.WEIGHTINGS:
            if (placement == "rao_blackwell" and weighting != "none") or (
                weighting.endswith("differentiable") and placement != "loss"
            ):
                continue
            est = "k1" if placement in ("reward_scalar", "rao_blackwell") else "k3"
            behaviour = None if weighting == "none" else old
            g = sequence_gradient(pi, ref, estimator=est, placement=placement,
                                  behaviour=behaviour, weighting=weighting)  # fmt: skip
            prob, grads = module._per_response(pi, ref, behaviour or pi, est, placement,
                                               "seq_mean_token_sum", None, weighting)  # fmt: skip
            mean = (prob @ grads).reshape(g.expected.shape)
            assert np.linalg.norm(mean - g.expected) <= 1e-12 * np.linalg.norm(
                g.true["KL(pi||ref)"]
            )
    on = sequence_gradient(pi, ref, estimator="k3")
    weighted = sequence_gradient(pi, ref, estimator="k3", behaviour=old,
                                 weighting="sequence_detached")  # fmt: skip
    np.testing.assert_allclose(weighted.expected, on.expected, rtol=1e-12, atol=1e-15)
    assert abs(weighted.cov_trace - on.cov_trace) > 1e-3 * on.cov_trace


def test_constant_aggregation_factors_do_not_change_the_verdict_and_one_over_length_does() -> None:
    """token_mean (1/E[T_x]) and Dr. GRPO's 1/L rescale the objective: the verdicts are those
    of the plain sum. seq_mean_token_mean weights each response by 1/T_x: with an eos the
    lengths vary and the objective changes (Dr. GRPO's length bias); without one it is 1/T."""
    pi, ref, _ = MODELS["eos"]
    plain, _, _ = MODELS["order1"]
    for model, varies in ((pi, True), (plain, False)):
        r = ref if model is pi else MODELS["order1"][1]
        for aggregation in AGGREGATIONS:
            g = sequence_gradient(model, r, estimator="k1", placement="reward_to_go",
                                  aggregation=aggregation)  # fmt: skip
            biased = varies and aggregation == "seq_mean_token_mean"
            assert g.verdict == ("neither" if biased else "KL(pi||ref)")
            assert (g.cosine < 1 - 1e-6) if biased else g.cosine == pytest.approx(1, abs=1e-12)


def test_a_zero_expected_gradient_has_no_cosine() -> None:
    """k1 in the loss has expectation 0: its cosine would be computed on rounding noise."""
    rng = np.random.default_rng(0)
    pi = TabularAR.random(vocab=3, order=1, length=10, rng=rng, eos=2)
    g = sequence_gradient(pi, pi.perturbed(rng, 0.5), estimator="k1", placement="loss")
    assert g.verdict == "zero" and np.isnan(g.cosine)
