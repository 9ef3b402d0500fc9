"""Off-policy expected gradients (klest.gradients.penalty_gradient) against independent routes.

- Every token-level spec of every mirrored release, with its weight off and on, and every
  weighting variant: the enumeration (forward-mode derivatives, numpy) equals torch autograd
  of Σ_a μ_a f(a) through ``rl.apply_spec`` (all V actions at once) to 1e-10 relative.
- Sequence-level weights: the same against torch autograd over every sequence.
- Monte Carlo (actions drawn from μ, autograd per sample) within 5 standard errors for every
  framework default and weighting on two policy triples (z = 5 per component: over the ~2,000
  components checked here the family-wide false-failure rate is below 1e-3).
- Known results: the RPG paper's table of weights, NeMo-RL #2506 (v0.7.0), TRL #6586's
  spurious sequence-level term, and what the logged KL means under μ.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np
import pytest
from scipy.special import log_softmax
from ulp_error import DPS, ulp_errors_from

from klest import rl
from klest.gradients import offpolicy_monte_carlo_gradient, penalty_gradient
from klest.gradients.dual import evaluate_with_derivative
from klest.gradients.offpolicy import MAX_SEQUENCES, weighted_spec

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(20261201)
#: (logits, ref_logits, behaviour_logits), two positions of V = 4 each
MODERATE = (
    RNG.normal(0.0, 1.0, (2, 4)),
    RNG.normal(0.0, 1.5, (2, 4)),
    RNG.normal(0.0, 1.0, (2, 4)),
)
#: log-ratios up to ~±30: verl's ±20 input clamp and every ±10 output clamp are active
CLAMPED = (
    np.array([[0.0, 1.0, -1.0, 0.5], [2.0, -3.0, 0.0, 1.0]]),
    np.array([[-28.0, 1.5, -1.0, 3.0], [2.5, -3.0, -24.0, 1.0]]),
    np.array([[-0.5, 1.0, -0.5, 0.0], [1.5, -2.0, 0.5, 1.0]]),
)
TRIPLES = {"moderate": MODERATE, "clamped": CLAMPED}


def token_specs() -> list[tuple[str, str]]:
    out = []
    for fw in rl.frameworks():
        for v in rl.versions(fw):
            name = f"{fw}@{v}"
            for kind in rl.kinds(name):
                s = rl.spec(name, kind)
                if s.kind != kind or s.raw or s.unsupported or s.estimator == "pi_k1_sum":
                    continue  # aliases share their spec; full-vocabulary kinds are elsewhere
                out.append((name, kind))
    return out


def switches_on(spec) -> dict:  # type: ignore[no-untyped-def]
    w = spec.weight
    return {} if w is None else {n: True for n in (w.switch, w.option_switch) if n}


def torch_enumeration(spec, placement, z, z_ref, z_mu, opts, given):  # type: ignore[no-untyped-def]
    """∇_z of Σ_a μ_a f(a) (loss) or Σ_a μ_a ρ_a sg(f(a)) (reward), f over all V actions."""
    zt = torch.tensor(z, requires_grad=True)
    lp = torch.log_softmax(zt, dim=-1)
    lmu = torch.log_softmax(torch.tensor(z_mu), dim=-1) if given else lp.detach()
    lref = torch.log_softmax(torch.tensor(z_ref), dim=-1)
    if not spec.anchor.startswith("ref_logprob"):
        lref = lmu
    o = dict(opts)
    w = spec.weight
    if given and w is not None and all(o.get(n, False) for n in (w.switch, w.option_switch) if n):
        o[w.option] = lmu
    mu = lmu.exp()
    if placement == "loss":
        total = (mu * rl.apply_spec(spec, lp, lref, **o)).sum()
    else:
        f = rl.apply_spec(spec, lmu, lref, **o).detach()
        total = (mu * torch.exp(lp - lmu) * f).sum()
    total.backward()
    return zt.grad.numpy()


def assert_close(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> None:
    """|got - want| <= 1e-10 max(|want|, |∇KL|) in norm (an exact 0 is compared absolutely)."""
    denom = max(float(np.linalg.norm(want)), float(np.linalg.norm(scale)))
    assert float(np.linalg.norm(got - want)) <= 1e-10 * denom


@pytest.mark.parametrize("triple", TRIPLES)
@pytest.mark.parametrize(("framework", "kind"), token_specs())
def test_every_spec_matches_torch_enumeration(framework: str, kind: str, triple: str) -> None:
    z, z_ref, z_mu = TRIPLES[triple]
    spec = rl.spec(framework, kind)
    for opts in ({}, switches_on(spec)) if spec.weight is not None else ({},):
        g = penalty_gradient(z, z_ref, framework=framework, kind=kind, behaviour_logits=z_mu,
                             **opts)  # fmt: skip
        if g.placement == "metric":
            assert np.array_equal(g.expected, np.zeros_like(z)) and g.verdict == "zero"
            continue
        want = torch_enumeration(spec, g.placement, z, z_ref, z_mu, opts, given=True)
        assert_close(g.expected, want, g.true["KL(pi||ref)"])
        on_policy = penalty_gradient(z, z_ref, framework=framework, kind=kind, **opts)
        want = torch_enumeration(spec, on_policy.placement, z, z_ref, z, opts, given=False)
        assert_close(on_policy.expected, want, on_policy.true["KL(pi||ref)"])


VARIANTS = [
    {"weighting": "none"},
    {"weighting": "detached"},
    {"weighting": "differentiable"},
    {"weighting": "differentiable", "weight_order": "after_clamp"},
    {"weighting": "differentiable", "truncate": 1.5},
    {"weighting": "detached", "truncate": 1.5},
    {"weighting": "differentiable", "mask_range": (0.5, 2.0)},
    {"weighting": "detached", "mask_range": (0.5, 2.0)},
]


def loss_defaults() -> list[str]:
    out = []
    for fw in rl.frameworks():
        s = rl.spec(fw, rl.release(fw).default_kind)
        if not s.detached and s.placement.startswith("loss") and s.estimator != "pi_k1_sum":
            out.append(fw)
    return out


@pytest.mark.parametrize("triple", TRIPLES)
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("framework", loss_defaults())
def test_weighting_variants_match_torch_enumeration(framework, variant, triple) -> None:  # type: ignore[no-untyped-def]
    z, z_ref, z_mu = TRIPLES[triple]
    opts = VARIANTS[variant]
    kind = rl.release(framework).default_kind
    g = penalty_gradient(z, z_ref, framework=framework, kind=kind, behaviour_logits=z_mu, **opts)
    spec = weighted_spec(rl.spec(framework, kind), opts["weighting"], "token",
                         opts.get("truncate"), opts.get("mask_range"),
                         opts.get("weight_order", "before_clamp"))  # fmt: skip
    extra = {} if spec.weight is None else {spec.weight.option: None}
    want = torch_enumeration(spec, "loss", z, z_ref, z_mu, extra, given=True)
    if spec.weight is not None:  # the variant's weight takes μ through its own option
        zt = torch.tensor(z, requires_grad=True)
        lp = torch.log_softmax(zt, dim=-1)
        lmu = torch.log_softmax(torch.tensor(z_mu), dim=-1)
        lref = torch.log_softmax(torch.tensor(z_ref), dim=-1)
        if not spec.anchor.startswith("ref_logprob"):
            lref = lmu
        f = rl.apply_spec(spec, lp, lref, **{spec.weight.option: lmu})
        (lmu.exp() * f).sum().backward()
        want = zt.grad.numpy()
    assert_close(g.expected, want, g.true["KL(pi||ref)"])


def sequence_enumeration(spec, z, z_ref, z_mu, opts):  # type: ignore[no-untyped-def]
    """∇_z Σ_seq μ(seq) Σ_t f_t(seq) by autograd, every sequence of one (T, V) block."""
    t_len, v = z.shape
    seqs = torch.tensor(list(itertools.product(range(v), repeat=t_len)))
    zt = torch.tensor(z, requires_grad=True)
    lp_all = torch.log_softmax(zt, dim=-1)
    lmu_all = torch.log_softmax(torch.tensor(z_mu), dim=-1)
    lref_all = torch.log_softmax(torch.tensor(z_ref), dim=-1)
    pos = torch.arange(t_len)
    lp, lmu, lref = (x[pos, seqs] for x in (lp_all, lmu_all, lref_all))
    f = rl.apply_spec(spec, lp, lref, **{**opts, spec.weight.option: lmu})
    (lmu.sum(-1).exp() * f.sum(-1)).sum().backward()
    return zt.grad.numpy()


SEQUENCE_CASES = [
    ("trl", {"use_bias_correction_kl": True, "importance_sampling_level": "sequence"}),
    ("trl", {"weighting": "differentiable", "level": "sequence_mean"}),
    ("trl", {"weighting": "differentiable", "level": "sequence_sum", "truncate": 2.0}),
    ("verl", {"weighting": "detached", "level": "sequence_sum", "mask_range": (0.3, 3.0)}),
    ("nemo_rl", {"weighting": "differentiable", "level": "sequence_mean"}),
]


@pytest.mark.parametrize(("framework", "opts"), SEQUENCE_CASES)
def test_sequence_level_weights_match_torch_enumeration(framework: str, opts: dict) -> None:
    z, z_ref, z_mu = (x[:, :3] for x in MODERATE)
    z, z_ref, z_mu = (np.vstack([x, x[::-1] * 0.7]) for x in (z, z_ref, z_mu))  # T = 4, V = 3
    kind = rl.release(framework).default_kind
    g = penalty_gradient(z, z_ref, framework=framework, kind=kind, behaviour_logits=z_mu, **opts)
    variant = {k: opts[k] for k in ("weighting", "level", "truncate", "mask_range") if k in opts}
    own = {k: v for k, v in opts.items() if k not in variant}
    spec = rl.spec(framework, kind)
    if variant:
        spec = weighted_spec(
            spec,
            variant["weighting"],
            variant["level"],
            variant.get("truncate"),
            variant.get("mask_range"),
            "before_clamp",
        )
    want = sequence_enumeration(spec, z, z_ref, z_mu, own)
    assert_close(g.expected, want, g.true["KL(pi||ref)"])
    two = {"logits": np.stack([z, z]), "ref_logits": np.stack([z_ref, z_ref])}
    batch = penalty_gradient(**two, framework=framework, kind=kind,
                             behaviour_logits=np.stack([z_mu, z_mu]), **opts)  # fmt: skip
    assert np.array_equal(batch.expected[1], g.expected)


def mc_cases() -> list[tuple[str, dict]]:
    cases = []
    for fw in rl.frameworks():
        kind = rl.release(fw).default_kind
        s = rl.spec(fw, kind)
        if s.raw or s.estimator == "pi_k1_sum" or s.placement.startswith("metric"):
            continue
        cases.append((fw, {}))
        if s.weight is not None and (s.weight.switch or s.weight.option_switch):
            cases.append((fw, switches_on(s)))
        if fw in loss_defaults():
            cases += [(fw, VARIANTS[i]) for i in (0, 1, 2, 4, 6)]
    return cases


@pytest.mark.parametrize("triple", TRIPLES)
@pytest.mark.parametrize(("framework", "opts"), mc_cases())
def test_monte_carlo_agrees_within_five_standard_errors(framework, opts, triple) -> None:  # type: ignore[no-untyped-def]
    z, z_ref, z_mu = TRIPLES[triple]
    kind = rl.release(framework).default_kind
    exact = penalty_gradient(z, z_ref, framework=framework, kind=kind, behaviour_logits=z_mu,
                             **opts)  # fmt: skip
    mc = offpolicy_monte_carlo_gradient(z, z_ref, framework=framework, kind=kind, n=6000,
                                        seed=11, behaviour_logits=z_mu, **opts)  # fmt: skip
    assert np.all(mc.se > 0)
    assert np.max(np.abs(mc.z_scores(exact.expected))) <= 5.0


def test_sequence_level_monte_carlo_agrees() -> None:
    z, z_ref, z_mu = (x[:, :3] for x in MODERATE)
    opts = {"use_bias_correction_kl": True, "importance_sampling_level": "sequence"}
    exact = penalty_gradient(z, z_ref, framework="trl", kind="grpo", behaviour_logits=z_mu,
                             **opts)  # fmt: skip
    mc = offpolicy_monte_carlo_gradient(z, z_ref, framework="trl", kind="grpo", n=8000, seed=5,
                                        behaviour_logits=z_mu, **opts)  # fmt: skip
    assert np.max(np.abs(mc.z_scores(exact.expected))) <= 5.0


# The RPG paper (Zhang et al. 2025), samples from the old policy: which weighted loss has the
# exact gradient of which KL. Normalised softmax policies: the unnormalised KLs equal the KLs.
RPG_TABLE = [
    ("differentiable", "k1", "KL(pi||ref)"),  # E_μ[∇(ρ k1)] = E_π[(1 + k1) ∇log π]
    ("differentiable", "k3", "KL(pi||ref)"),  # ∂(ρ k3) = ρ (k3 + 1 - r) = ρ k1
    ("detached", "k1", "zero"),  # E_π[∇log π] = 0
    ("detached", "k2", "KL(pi||ref)"),  # E_π[k1 ∇log π]
    ("detached", "k3", "KL(ref||pi)"),  # E_π[(1 - r) ∇log π]
    ("none", "k1", "neither"),  # E_μ[e_a − π] = μ − π = −∇KL(μ‖π)
    ("none", "k2", "neither"),
    ("none", "k3", "neither"),
    ("differentiable", "k2", "neither"),
]


@pytest.mark.parametrize("triple", TRIPLES)
@pytest.mark.parametrize(("weighting", "estimator", "verdict"), RPG_TABLE)
def test_rpg_table_of_weighted_losses(weighting, estimator, verdict, triple) -> None:  # type: ignore[no-untyped-def]
    z, z_ref, z_mu = MODERATE if triple == "moderate" else (x * 0.5 for x in CLAMPED)
    kind = {"k1": "k1", "k2": "k2", "k3": "k3"}[estimator]  # torchtune-style: no clamps
    fw = "slime@0.3.1"  # k1/k2/k3 of l without clamps
    g = penalty_gradient(z, z_ref, framework=fw, kind=kind, behaviour_logits=z_mu,
                         weighting=weighting)  # fmt: skip
    assert g.verdict == verdict


def test_nemo_rl_weights_change_the_gradient_between_releases() -> None:
    """v0.6.0: w detached, after the clamp; v0.7.0 (#2506): w differentiable, before it,
    exp(lp - lp.detach()) without generation log-probabilities."""
    z, z_ref, z_mu = (0.5 * x for x in MODERATE)  # no clamp active: |l| < 2.4
    flag = {"use_on_policy_kl_approximation": True}

    def verdict(version: str, mu, **opts) -> str:  # type: ignore[no-untyped-def]
        return penalty_gradient(z, z_ref, framework=f"nemo_rl@{version}", kind="k3",
                                behaviour_logits=mu, **opts).verdict  # fmt: skip

    assert verdict("0.6.0", None) == "KL(ref||pi)"  # on-policy k3 in the loss
    assert verdict("0.7.0", None) == "KL(pi||ref)"  # the ratio's gradient changes it
    assert verdict("0.6.0", z_mu) == "neither"  # off-policy, weights off (the default)
    assert verdict("0.6.0", z_mu, **flag) == "KL(ref||pi)"
    assert verdict("0.7.0", z_mu, **flag) == "KL(pi||ref)"
    # #2506's per-token gradient β w (k + k'): for k3, w (lp - ref), where no clamp is active
    lp, ref, gen = np.log([0.3, 0.5]), np.log([0.4, 0.2]), np.log([0.25, 0.6])
    lp_t = torch.tensor(lp, requires_grad=True)
    out = rl.kl_penalty(lp_t, torch.tensor(ref), "k3", framework="nemo_rl@0.7.0",
                        generation_logprob=torch.tensor(gen), **flag)  # fmt: skip
    out.sum().backward()
    np.testing.assert_allclose(lp_t.grad.numpy(), np.exp(lp - gen) * (lp - ref), rtol=1e-14)


def test_trl_6586_sequence_ratio_adds_a_spurious_term() -> None:
    """GSPO's sequence-level ratio broadcast onto the per-token k3: the gradient's
    Σ_t k3_t ∇log π_t (token-level ratio) becomes (Σ_t k3_t) ∇ mean_s log π_s. On-policy,
    with independent positions, the difference in expectation at position s is
    (1/T - 1) E[k3_s (e_{a_s} - π_s)], computed here by hand."""
    z, z_ref = (np.vstack([x[:, :3], x[:, :3][::-1]]) for x in MODERATE[:2])  # T = 4, V = 3
    seq = {"use_bias_correction_kl": True, "importance_sampling_level": "sequence"}
    token = penalty_gradient(z, z_ref, framework="trl", kind="grpo", use_bias_correction_kl=True)
    sequence = penalty_gradient(z, z_ref, framework="trl", kind="grpo", **seq)
    assert token.verdict == "KL(pi||ref)" and sequence.verdict == "neither"
    lp, lref = log_softmax(z, axis=-1), log_softmax(z_ref, axis=-1)
    pi, t_len = np.exp(lp), z.shape[0]
    k3 = np.expm1(lref - lp) - (lref - lp)
    # E[Σ_t k3_t (e_{a_s} − π_s)] = E[k3_s (e_{a_s} − π_s)]: the other positions are independent
    own = pi * k3 - pi * (pi * k3).sum(-1, keepdims=True)
    spurious = (1.0 / t_len - 1.0) * own
    np.testing.assert_allclose(sequence.expected - token.expected, spurious, rtol=1e-10,
                               atol=1e-15)  # fmt: skip


def test_logged_value_under_the_behaviour_policy() -> None:
    """What the logged KL means: k3 on-policy is unbiased for KL(π‖ref); sampled from μ it is
    not, and the detached ratio ρ k3 makes it unbiased again."""
    z, z_ref, z_mu = MODERATE
    on = penalty_gradient(z, z_ref, framework="torchtune@main", kind="k3")
    np.testing.assert_allclose(on.expected_value, on.kl["KL(pi||ref)"], rtol=1e-13)
    off = penalty_gradient(z, z_ref, framework="torchtune@main", kind="k3", behaviour_logits=z_mu)
    assert np.all(np.abs(off.expected_value - off.kl["KL(pi||ref)"]) > 1e-3)
    fixed = penalty_gradient(z, z_ref, framework="torchtune@main", kind="k3",
                             behaviour_logits=z_mu, weighting="detached")  # fmt: skip
    np.testing.assert_allclose(fixed.expected_value, fixed.kl["KL(pi||ref)"], rtol=1e-13)
    assert np.all(fixed.covariance_trace > 0) and np.all(np.isfinite(fixed.covariance_trace))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "grpo", "weighting": "ratio"}, "weighting must be one of"),
        ({"kind": "grpo", "level": "sequence_sum"}, "give weighting="),
        ({"kind": "grpo", "weighting": "none", "truncate": 2.0}, "takes no level"),
        ({"kind": "k1", "weighting": "detached"}, "placed in the reward"),
        ({"kind": "grpo", "bogus": 1}, "unknown option"),
        (
            {"kind": "grpo", "use_bias_correction_kl": True, "old_logprob": np.zeros((2, 4))},
            "filled from behaviour_logits",
        ),
        ({"kind": "grpo", "placement": "loss_is"}, "placement must be"),
        ({"kind": "k1", "placement": "loss"}, "computed without gradient"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict, match: str) -> None:
    z, z_ref, z_mu = MODERATE
    with pytest.raises(ValueError, match=match) as info:
        penalty_gradient(z, z_ref, framework="trl", behaviour_logits=z_mu, **kwargs)
    assert "\n" not in str(info.value)


def test_shapes_sizes_and_kinds_are_checked() -> None:
    z, z_ref, _ = MODERATE
    with pytest.raises(ValueError, match="one shape"):
        penalty_gradient(z, z_ref[:, :3], framework="verl", kind="k2")
    big = np.zeros((10, 4))  # 4^10 sequences
    assert 4**10 > MAX_SEQUENCES
    with pytest.raises(ValueError, match="at most"):
        penalty_gradient(big, big, framework="trl", kind="grpo", use_bias_correction_kl=True,
                         importance_sampling_level="sequence")  # fmt: skip
    with pytest.raises(ValueError, match="not a per-token penalty"):
        penalty_gradient(z, z_ref, framework="verl", kind="full")
    with pytest.raises(ValueError, match="finite"):
        penalty_gradient(np.full((2, 4), np.nan), z_ref, framework="verl", kind="k2")
    with pytest.raises(NotImplementedError, match=r"before v0\.8\.0"):  # as verl 0.7.1 itself
        penalty_gradient(z, z_ref, framework="verl@0.7.1", kind="k3+")
    with pytest.raises(NotImplementedError, match=r"before v0\.8\.0"):
        offpolicy_monte_carlo_gradient(z, z_ref, framework="verl@0.7.1", kind="k3+", n=10, seed=0)


@pytest.mark.parametrize("framework", ["trl", "nemo_rl", "open_instruct"])
def test_differentiable_ratio_times_k3_has_an_exact_gradient_at_large_log_ratios(framework):  # type: ignore[no-untyped-def]
    """d/d logprob [w k3(l)] = -w l: the product rule w k3 + w (1 - e^l) cancels all digits
    once e^l >> 1/eps (it gave -64 for -40 and 0 for -100). torch and the forward-mode route
    agree with the exact -w l (of these float inputs) to 2 ulp: torch's exp is within 1 ulp
    and -w (1 + c) or the product rule's w k3 + w (1 - e^c) rounds up to twice more (1.46 ulp
    measured; an np.exp reference alone is off by up to 0.84 ulp, and a CPU's torch exp can
    round the other way from it). The ref and behaviour gradients are the product's."""
    lp = np.array([-45.0, -101.0, -3.0, -1.0, -2.0])
    ref = np.array([-5.0, -1.0, -1.0, -1.0 + 1e-9, -1.5])
    old = lp + np.array([0.3, -0.2, 0.1, 0.05, 0.0])
    kind, opts = {
        "trl": ("grpo", {"use_bias_correction_kl": True}),
        "nemo_rl": ("k3", {"use_on_policy_kl_approximation": True,
                           "input_clamp_value": None, "output_clamp_value": None}),
        "open_instruct": ("ratio_k1", {}),
    }[framework]  # fmt: skip
    option = rl.spec(framework, kind).weight.option
    if framework == "open_instruct":  # ratio * k1 (no cancellation): the same exact gradient
        lp, ref = lp[2:], ref[2:]
        old = old[2:]
    with mpmath.workdps(DPS):
        exact = []
        for a, b, m in zip(*(map(mpmath.mpf, v.tolist()) for v in (lp, ref, old)), strict=True):
            w, l = mpmath.exp(a - m), b - a
            exact.append(-w * l if kind != "ratio_k1" else w * (1 - l))
    lp_t, ref_t, old_t = (torch.tensor(x, requires_grad=True) for x in (lp, ref, old))
    out = rl.kl_penalty(lp_t, ref_t, kind, framework=framework, **opts, **{option: old_t})
    out.sum().backward()
    assert ulp_errors_from(exact, lp_t.grad.numpy()).max() <= 2.0
    np.testing.assert_allclose(old_t.grad.numpy(), -out.detach().numpy(), rtol=4e-16)
    _, d = evaluate_with_derivative(rl.spec(framework, kind), lp, ref, {**opts, option: old})
    assert ulp_errors_from(exact, d[:, 0]).max() <= 2.0


def _variant_grads(framework: str, kind: str, lp, ref, beh, **variant):  # type: ignore[no-untyped-def]
    spec = weighted_spec(
        rl.spec(framework, kind),
        variant.pop("weighting"),
        variant.pop("level", "token"),
        variant.pop("truncate", None),
        variant.pop("mask_range", None),
        variant.pop("order", "before_clamp"),
    )
    lp_t, beh_t = torch.tensor(lp, requires_grad=True), torch.tensor(beh, requires_grad=True)
    out = rl.apply_spec(spec, lp_t, torch.tensor(ref), **{spec.weight.option: beh_t})
    out.sum().backward()
    dbeh = np.zeros_like(beh) if beh_t.grad is None else beh_t.grad.numpy()
    return out.detach().numpy(), lp_t.grad.numpy(), dbeh


def test_weighting_variants_by_hand() -> None:
    """Golden values and gradients of each weighting primitive, derived by hand for k3 without
    clamps (torchtune@main) and verl's clamped low_var_kl: ρ = exp(lp - μ), r = exp(l)."""
    lp = np.log([0.30, 0.05, 0.40, 0.25])
    ref = np.log([0.20, 0.30, 0.35, 0.15])
    beh = np.log([0.20, 0.20, 0.10, 0.45])
    l, rho = ref - lp, np.exp(lp - beh)
    r, k3 = np.exp(l), np.expm1(l) - l
    fw = "torchtune@main"
    v, dlp, dbeh = _variant_grads(fw, "k3", lp, ref, beh, weighting="detached")
    np.testing.assert_allclose(v, rho * k3, rtol=1e-14)
    np.testing.assert_allclose(dlp, rho * (1 - r), rtol=1e-13)
    assert np.all(dbeh == 0.0)
    v, dlp, dbeh = _variant_grads(fw, "k3", lp, ref, beh, weighting="differentiable")
    np.testing.assert_allclose(dlp, rho * -l, rtol=1e-13)  # ρ (k3 + 1 - r) = -ρ l
    np.testing.assert_allclose(dbeh, -rho * k3, rtol=1e-13)
    v, dlp, _ = _variant_grads(fw, "k3", lp, ref, beh, weighting="differentiable", truncate=1.2)
    capped = rho > 1.2  # rho = 1.5, 0.25, 4, 0.556
    assert capped.tolist() == [True, False, True, False]
    w = np.minimum(rho, 1.2)
    np.testing.assert_allclose(v, w * k3, rtol=1e-14)
    np.testing.assert_allclose(dlp, np.where(capped, w * (1 - r), -rho * l), rtol=1e-13)
    v, dlp, _ = _variant_grads(fw, "k3", lp, ref, beh, weighting="differentiable",
                               mask_range=(0.5, 2.0))  # fmt: skip
    inside = (rho >= 0.5) & (rho <= 2.0)
    assert inside.tolist() == [True, False, False, True]
    np.testing.assert_allclose(v, np.where(inside, rho * k3, 0.0), rtol=1e-14)
    np.testing.assert_allclose(dlp, np.where(inside, -rho * l, 0.0), rtol=1e-13)
    for level, scale in (("sequence_sum", 1.0), ("sequence_mean", 0.25)):
        v, dlp, _ = _variant_grads(fw, "k3", lp, ref, beh, weighting="differentiable",
                                   level=level)  # fmt: skip
        w = np.exp(scale * np.sum(lp - beh))
        np.testing.assert_allclose(v, w * k3, rtol=1e-13)
        np.testing.assert_allclose(dlp, w * (scale * k3.sum() + 1 - r), rtol=1e-13)
    # verl's low_var_kl (clamp(k3, ±10)) at l = 3 (k3 = 16.1): the weight before the clamp
    # clamps ρ k3 = 13.2 (gradient 0); after it, ρ · 10 keeps d/dlp = 10 ρ
    lp2, ref2, beh2 = np.array([-4.0, -1.0]), np.array([-1.0, -1.2]), np.array([-3.8, -1.1])
    rho2, l2 = np.exp(lp2 - beh2), ref2 - lp2
    k32 = np.expm1(l2) - l2
    v, dlp, _ = _variant_grads("verl", "low_var_kl", lp2, ref2, beh2, weighting="differentiable")
    np.testing.assert_allclose(v, np.minimum(rho2 * k32, 10.0), rtol=1e-14)
    np.testing.assert_allclose(dlp, [0.0, -rho2[1] * l2[1]], rtol=1e-13, atol=0)
    v, dlp, _ = _variant_grads("verl", "low_var_kl", lp2, ref2, beh2, weighting="differentiable",
                               order="after_clamp")  # fmt: skip
    np.testing.assert_allclose(v, rho2 * np.minimum(k32, 10.0), rtol=1e-14)
    np.testing.assert_allclose(dlp, [10.0 * rho2[0], -rho2[1] * l2[1]], rtol=1e-13)
