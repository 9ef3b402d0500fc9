"""klest.rl.kl_penalty: every framework x kind against hand-derived values and derivatives.

References are written here from the frameworks' formulas, independently of klest's code:
values in float64 (k3 in 50-digit arithmetic), derivatives derived by hand with
l = ref_logprob - logprob and r = exp(l): d l/d logprob = -1, d l/d ref_logprob = +1,
d k3(l)/d l = r - 1, so d k3/d logprob = 1 - r.
"""

from __future__ import annotations

import math
import subprocess
import sys

import mpmath
import numpy as np
import pytest

from klest import rl

torch = pytest.importorskip("torch")

EXTREME_L = np.array([-800.0, -50.0, -1e-8, 1e-8, 50.0, 800.0])


def k3_ref(l: np.ndarray) -> np.ndarray:
    """exp(l) - 1 - l in 50-digit arithmetic, rounded to float64 (inf past the range)."""
    with mpmath.workdps(50):
        out = []
        for x in np.ravel(l):
            v = mpmath.exp(mpmath.mpf(float(x))) - 1 - mpmath.mpf(float(x))
            out.append(math.inf if v > np.finfo(np.float64).max else float(v))
    return np.array(out).reshape(np.shape(l))


def r_of(l: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(l)


def clip_value(v: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(clamp(v, -c, c), whether the clamp is inactive)."""
    return np.clip(v, -c, c), np.abs(v) <= c


def reference(framework: str, kind: str, lp: np.ndarray, ref: np.ndarray, **opts):
    """(value, d value/d logprob, d value/d ref_logprob) elementwise, or grads None if detached.

    For the releases of PINNED (``framework`` may carry its "@version")."""
    framework = framework.partition("@")[0]
    l = ref - lp
    r = r_of(l)
    one = np.ones_like(l)
    base = {
        "k1": (-l, one, -one),
        "kl": (-l, one, -one),
        "abs": (np.abs(l), -np.sign(l), np.sign(l)),
        "k2": (l * l / 2, -l, l),
        "mse": (l * l / 2, -l, l),
        "k3": (k3_ref(l), 1 - r, r - 1),
    }
    if framework == "verl":
        if kind.endswith("+"):
            v, _, _ = reference("verl", kind[:-1], lp, ref)
            return v, -l, l  # forward of the base kind, gradient of k2
        if kind in ("low_var_kl", "k3"):
            v, active = clip_value(k3_ref(np.clip(l, -20, 20)), 10.0)
            active &= np.abs(l) <= 20
            return v, np.where(active, 1 - r, 0.0), np.where(active, r - 1, 0.0)
        return base[kind]
    if framework == "openrlhf":
        v, dlp, dref = base[kind]
        v, active = clip_value(v, 10.0)
        return v, np.where(active, dlp, 0.0), np.where(active, dref, 0.0)
    if framework == "trl":
        if kind != "grpo":
            return base[kind][0], None, None
        v, dlp, dref = base["k3"]
        if not opts.get("use_bias_correction_kl"):
            return v, dlp, dref
        old = opts.get("old_logprob")
        w = np.ones_like(l) if old is None else np.exp(lp - old)
        # d/d logp [w k3] = w k3 (d w/d logp = w) + w (1 - r); with w = 1 this is -l
        return w * v, w * (v + 1 - r), w * (r - 1)
    if framework == "slime":
        v, dlp, dref = base[kind if kind != "low_var_kl" else "k3"]
        old, ratio = opts.get("old_logprob"), opts.get("importance_ratio")
        if old is not None:  # w = exp(logp - old), differentiable: d w/d logp = w
            w = np.exp(lp - old)
            v, dlp, dref = w * v, w * v + w * dlp, w * dref
        elif ratio is not None:  # given weights without gradient
            v, dlp, dref = ratio * v, ratio * dlp, ratio * dref
        if kind == "low_var_kl":
            v, active = clip_value(v, 10.0)
            dlp, dref = np.where(active, dlp, 0.0), np.where(active, dref, 0.0)
        return v, dlp, dref
    if framework == "nemo_rl":
        ic = opts.get("input_clamp_value", 20.0)
        oc = opts.get("output_clamp_value", 10.0)
        c = l if ic is None else np.clip(l, -ic, ic)
        f, df_dl = {
            "k1": (-c, -one),
            "k2": (c * c / 2, c),
            "k3": (k3_ref(c), r_of(c) - 1),
        }[kind]
        active = np.ones(l.shape, bool) if ic is None else np.abs(l) <= ic
        if oc is not None:
            f, inside = clip_value(f, oc)
            active &= inside
        gen = opts.get("generation_logprob")
        w = np.ones_like(l) if gen is None else np.nan_to_num(np.exp(lp - gen), posinf=0.0)
        return w * f, np.where(active, -df_dl * w, 0.0), np.where(active, df_dl * w, 0.0)
    raise AssertionError(f"no reference for {framework}/{kind}")


#: the releases whose loss kinds this module checks; every release and kind, the placements
#: in the reward and advantages among them, is checked in test_rl_specs.py
PINNED = (
    "nemo_rl@0.6.0",
    "openrlhf@0.11.0",
    "slime@0.3.1",
    "trl@0.11.4",
    "trl@1.9.0",
    "verl@0.9.0",
)
ALL_KINDS = [
    (fw, k)
    for fw in PINNED
    for k in rl.kinds(fw)
    if k not in ("full", "rloo", "opd") and not k.startswith("reward_")
]


def ordinary_inputs(seed: int = 0, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities in [-6, 0) and log-ratios spread over [-4, 4], away from clamp edges."""
    rng = np.random.default_rng(seed)
    lp = rng.uniform(-6.0, -0.01, n)
    ref = lp + rng.uniform(-4.0, 4.0, n)
    return lp, ref


def torch_grads(framework: str, kind: str, lp: np.ndarray, ref: np.ndarray, **opts):
    lp_t = torch.tensor(lp, dtype=torch.float64, requires_grad=True)
    ref_t = torch.tensor(ref, dtype=torch.float64, requires_grad=True)
    out = rl.kl_penalty(lp_t, ref_t, kind, framework=framework, **opts)
    if not out.requires_grad:
        return out, None, None
    out.sum().backward()
    return out, lp_t.grad.numpy(), ref_t.grad.numpy()


@pytest.mark.parametrize(("framework", "kind"), ALL_KINDS)
def test_values_match_hand_formulas_numpy_and_torch(framework: str, kind: str) -> None:
    lp, ref = ordinary_inputs()
    want, _, _ = reference(framework, kind, lp, ref)
    got = rl.kl_penalty(lp, ref, kind, framework=framework)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)
    got_t = rl.kl_penalty(torch.tensor(lp), torch.tensor(ref), kind, framework=framework)
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.float64
    np.testing.assert_allclose(got_t.numpy(), want, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(("framework", "kind"), ALL_KINDS)
def test_torch_gradients_match_hand_derivatives(framework: str, kind: str) -> None:
    lp, ref = ordinary_inputs(seed=1)
    _, dlp_want, dref_want = reference(framework, kind, lp, ref)
    out, dlp, dref = torch_grads(framework, kind, lp, ref)
    if dlp_want is None:
        assert not out.requires_grad  # TRL's reward kinds are computed under no_grad
        return
    np.testing.assert_allclose(dlp, dlp_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dref, dref_want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("framework", "kind"), ALL_KINDS)
def test_extreme_log_ratios_give_no_nan(framework: str, kind: str) -> None:
    """l = +-1e-8, +-50, +-800: clamps engage, values match, no NaN in values; gradients are
    exact and never NaN where the value is finite (where k3 itself overflows to +inf, as
    TRL's and slime's unclamped k3 do at l = 800, the value is honestly +inf)."""
    lp = np.full(EXTREME_L.shape, -2.0)
    ref = lp + EXTREME_L
    want, dlp_want, dref_want = reference(framework, kind, lp, ref)
    got = rl.kl_penalty(lp, ref, kind, framework=framework)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)
    out, dlp, dref = torch_grads(framework, kind, lp, ref)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-13, atol=1e-300)
    if dlp_want is None:
        return
    finite = np.isfinite(want)
    assert not np.isnan(dlp[finite]).any() and not np.isnan(dref[finite]).any()
    np.testing.assert_allclose(dlp[finite], dlp_want[finite], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dref[finite], dref_want[finite], rtol=1e-12, atol=1e-15)


def test_tiny_log_ratio_keeps_full_precision() -> None:
    """k3 at l = 1e-8 is 5.0000000166e-17: exp(l) - 1 - l would return 0 or 1e-16 noise."""
    lp = np.array([-1.0, -1.0])
    ref = lp + np.array([1e-8, -1e-8])
    for fw, kind in [("verl", "k3"), ("openrlhf", "k3"), ("trl", "grpo"), ("nemo_rl", "k3")]:
        got = rl.kl_penalty(lp, ref, kind, framework=fw)
        np.testing.assert_allclose(got, k3_ref(ref - lp), rtol=1e-12)


@pytest.mark.parametrize("kind", ["kl+", "k1+", "abs+", "mse+", "k2+", "low_var_kl+", "k3+"])
def test_verl_straight_through_value_is_the_base_value_bit_for_bit(kind: str) -> None:
    lp, ref = ordinary_inputs(seed=2)
    lp_t = torch.tensor(lp, requires_grad=True)
    base = rl.kl_penalty(lp_t, torch.tensor(ref), kind[:-1], framework="verl")
    plus = rl.kl_penalty(lp_t, torch.tensor(ref), kind, framework="verl")
    assert torch.equal(base.detach(), plus.detach())
    assert np.array_equal(
        rl.kl_penalty(lp, ref, kind, framework="verl"),
        rl.kl_penalty(lp, ref, kind[:-1], framework="verl"),
    )


def test_trl_grpo_importance_ratio_with_old_logprob() -> None:
    """w = exp(logp - old_logp): value w k3, d/d logp = w (k3 + 1 - r), d/d old = -w k3."""
    lp, ref = ordinary_inputs(seed=3)
    old = lp + np.random.default_rng(3).normal(0.0, 0.3, lp.shape)
    want, dlp_want, dref_want = reference(
        "trl", "grpo", lp, ref, use_bias_correction_kl=True, old_logprob=old
    )
    lp_t, ref_t = torch.tensor(lp, requires_grad=True), torch.tensor(ref, requires_grad=True)
    old_t = torch.tensor(old, requires_grad=True)
    out = rl.kl_penalty(
        lp_t, ref_t, "grpo", framework="trl", use_bias_correction_kl=True, old_logprob=old_t
    )
    out.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-13)
    np.testing.assert_allclose(lp_t.grad.numpy(), dlp_want, rtol=1e-12)
    np.testing.assert_allclose(ref_t.grad.numpy(), dref_want, rtol=1e-12)
    np.testing.assert_allclose(old_t.grad.numpy(), -want, rtol=1e-12)
    # without old_logprob the ratio is exp(logp - logp.detach()): value 1, gradient -l
    _, dlp, _ = torch_grads("trl", "grpo", lp, ref, use_bias_correction_kl=True)
    np.testing.assert_allclose(dlp, lp - ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        rl.kl_penalty(lp, ref, "grpo", framework="trl", use_bias_correction_kl=True),
        k3_ref(ref - lp),
        rtol=1e-13,
    )


def test_trl_grpo_sequence_level_importance_ratio() -> None:
    """GSPO: log w_b = sum_t m_bt (logp - old)_bt / max(sum_t m_bt, 1), one w per row; then
    d/d logp_bs sum_t w_b k3_bt = w_b (1 - r_bs) + m_bs w_b sum_t k3_bt / max(sum_t m_bt, 1)."""
    rng = np.random.default_rng(4)
    lp = rng.uniform(-5.0, -0.1, (3, 5))
    ref = lp + rng.uniform(-2.0, 2.0, lp.shape)
    old = lp + rng.normal(0.0, 0.2, lp.shape)
    mask = (rng.uniform(size=lp.shape) < 0.7).astype(float)
    mask[2] = 0.0  # an all-masked row: the denominator is clamped to 1, the weight is 1
    den = np.maximum(mask.sum(-1, keepdims=True), 1.0)
    w = np.exp(((lp - old) * mask).sum(-1, keepdims=True) / den)
    k3 = k3_ref(ref - lp)
    r = np.exp(ref - lp)
    lp_t = torch.tensor(lp, requires_grad=True)
    out = rl.kl_penalty(
        lp_t,
        torch.tensor(ref),
        "grpo",
        framework="trl",
        use_bias_correction_kl=True,
        old_logprob=torch.tensor(old),
        importance_sampling_level="sequence",
        mask=mask,
    )
    out.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), w * k3, rtol=1e-13)
    grad = w * (1 - r) + mask * w * k3.sum(-1, keepdims=True) / den
    np.testing.assert_allclose(lp_t.grad.numpy(), grad, rtol=1e-12)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3", "low_var_kl"])
def test_slime_importance_ratio(kind: str) -> None:
    lp, ref = ordinary_inputs(seed=5)
    old = lp + np.random.default_rng(5).normal(0.0, 0.5, lp.shape)
    want, dlp_want, dref_want = reference("slime", kind, lp, ref, old_logprob=old)
    out, dlp, dref = torch_grads("slime", kind, lp, ref, old_logprob=old, use_unbiased_kl=True)
    assert (np.abs(want) >= 10).any() or kind != "low_var_kl"  # the clamp is exercised
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-13)
    np.testing.assert_allclose(dlp, dlp_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dref, dref_want, rtol=1e-12, atol=1e-15)
    ratio = np.exp(np.random.default_rng(6).normal(0.0, 0.5, lp.shape))
    want, dlp_want, _ = reference("slime", kind, lp, ref, importance_ratio=ratio)
    out, dlp, _ = torch_grads(
        "slime", kind, lp, ref, importance_ratio=torch.tensor(ratio), use_unbiased_kl=True
    )
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-13)
    np.testing.assert_allclose(dlp, dlp_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        rl.kl_penalty(
            lp, ref, kind, framework="slime", importance_ratio=ratio, use_unbiased_kl=True
        ),
        want,
        rtol=1e-13,
    )


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
@pytest.mark.parametrize(("ic", "oc"), [(20.0, 10.0), (2.0, 1.5), (None, 3.0), (1.0, None)])
def test_nemo_rl_clamps_and_detached_weights(kind: str, ic, oc) -> None:  # type: ignore[no-untyped-def]
    lp, ref = ordinary_inputs(seed=7)
    gen = lp + np.random.default_rng(7).normal(0.0, 0.5, lp.shape)
    gen[0] = -np.inf  # exp(logp - gen) = inf: NeMo-RL's nan_to_num turns the weight into 0
    opts = {
        "input_clamp_value": ic,
        "output_clamp_value": oc,
        "generation_logprob": gen,
        "use_on_policy_kl_approximation": True,
    }
    want, dlp_want, dref_want = reference("nemo_rl@0.6.0", kind, lp, ref, **opts)
    assert want[0] == 0.0
    out, dlp, dref = torch_grads("nemo_rl@0.6.0", kind, lp, ref, **opts)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(dlp, dlp_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dref, dref_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        rl.kl_penalty(lp, ref, kind, framework="nemo_rl@0.6.0", **opts),
        want,
        rtol=1e-13,
        atol=1e-300,
    )


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [("float32", "float32"), ("bfloat16", "bfloat16"), ("float64", "float64")],
)
def test_torch_dtype_is_kept_and_autograd_flows(dtype: str, out_dtype: str) -> None:
    lp, ref = ordinary_inputs(seed=8, n=8)
    lp_t = torch.tensor(lp, dtype=getattr(torch, dtype), requires_grad=True)
    ref_t = torch.tensor(ref, dtype=getattr(torch, dtype))
    out = rl.kl_penalty(lp_t, ref_t, "k3", framework="verl")
    assert out.dtype == getattr(torch, out_dtype)
    out.sum().backward()
    assert lp_t.grad.dtype == lp_t.dtype
    # computed in float64 from the rounded inputs, then rounded once: within 1 ulp of the
    # exactly rounded value in float32/bfloat16 (float64: the usual 1e-13 of k3's forms)
    l = ref_t.double().numpy() - lp_t.detach().double().numpy()
    want = torch.tensor(np.minimum(k3_ref(l), 10.0)).to(out.dtype)
    rtol = max(torch.finfo(out.dtype).eps, 1e-13)
    torch.testing.assert_close(out.detach(), want, rtol=rtol, atol=0.0)


def test_numpy_inputs_give_float64_arrays() -> None:
    got = rl.kl_penalty(np.float32([-1.0, -2.0]), [-1.5, -1.0], "k2", framework="verl")
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, [0.125, 0.5])
    mixed = rl.kl_penalty(torch.tensor([-1.0]), np.array([-1.5]), "k2", framework="verl")
    assert isinstance(mixed, torch.Tensor) and mixed.dtype == torch.float32


def test_broadcasting_and_shapes() -> None:
    lp = np.log(np.full((2, 3), 0.3))
    got = rl.kl_penalty(lp, np.log(0.2), "k1", framework="verl")
    assert got.shape == (2, 3)
    with pytest.raises(ValueError, match="do not broadcast"):
        rl.kl_penalty(np.zeros(3), np.zeros(4), "k1", framework="verl")


def test_unknown_framework_kind_or_option_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: areal, easyr1, nemo_rl, oat, open_instruct"):
        rl.kl_penalty(0.0, 0.0, "k1", framework="deepspeed")
    with pytest.raises(ValueError, match=r"valid: k1, k2, k3$"):
        rl.kl_penalty(0.0, 0.0, "low_var_kl", framework="openrlhf")
    with pytest.raises(ValueError, match="accepted options: none"):
        rl.kl_penalty(0.0, 0.0, "k3", framework="verl", old_logprob=0.0)
    with pytest.raises(ValueError, match=r"'clamp'.*accepted options: input_clamp_value"):
        rl.kl_penalty(0.0, 0.0, "k3", framework="nemo_rl", clamp=1.0)
    with pytest.raises(ValueError, match="unknown framework 'unknown'; valid"):
        rl.kinds("unknown")


@pytest.mark.parametrize(
    ("framework", "kind", "opts", "match"),
    [
        (
            "slime",
            "k3",
            {"old_logprob": 0.0, "importance_ratio": 1.0, "use_unbiased_kl": True},
            "not both",
        ),
        ("slime", "k3", {"old_logprob": 0.0}, "only with use_unbiased_kl=True"),
        (
            "nemo_rl",
            "k3",
            {"generation_logprob": 0.0},
            "only with use_on_policy_kl_approximation=True",
        ),
        ("trl", "grpo", {"old_logprob": 0.0}, "only with use_bias_correction_kl=True"),
        ("nemo_rl", "k3", {"input_clamp_value": -1.0}, "input_clamp_value"),
        ("nemo_rl", "k3", {"output_clamp_value": math.inf}, "output_clamp_value"),
        ("nemo_rl", "k3", {"output_clamp_value": True}, "output_clamp_value"),
        ("trl", "grpo", {"use_bias_correction_kl": 1}, "use_bias_correction_kl"),
        (
            "trl",
            "grpo",
            {"use_bias_correction_kl": True, "importance_sampling_level": "seq"},
            "importance_sampling_level",
        ),
    ],
)
def test_invalid_option_values_raise(framework: str, kind: str, opts: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rl.kl_penalty(np.zeros(2), np.zeros(2), kind, framework=framework, **opts)


def test_framework_names_are_normalised_and_described() -> None:
    lp, ref = ordinary_inputs(n=4)
    a = rl.kl_penalty(lp, ref, "k3", framework="NeMo-RL")
    b = rl.kl_penalty(lp, ref, "k3", framework="nemo_rl")
    assert np.array_equal(a, b)
    assert rl.kinds("OpenRLHF") == ("k1", "k2", "k3")
    for fw, kind in [*ALL_KINDS, ("verl", "full"), ("trl@0.11.4", "full")]:
        info = rl.describe(fw, kind)
        assert info["framework"] == fw.partition("@")[0] and info["kind"] in rl.kinds(fw)
        assert "." in info["source"] and info["formula"] and info["gradient"]
    assert rl.describe("trl", "k3")["detached"] is True
    assert rl.describe("trl@0.11.4", "mse")["detached"] is True
    assert rl.describe("verl", "k3")["detached"] is False


def test_klest_import_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np, klest\n"
        "from klest import rl\n"
        "rl.kl_penalty(np.zeros(3), np.ones(3), 'k3+', framework='verl')\n"
        "rl.full_kl(np.zeros((2, 4)), np.ones((2, 4)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _up(x: float) -> float:
    return float(np.nextafter(x, math.inf))


def _down(x: float) -> float:
    return float(np.nextafter(x, -math.inf))


def test_torch_output_clamp_is_inclusive_at_the_bounds_like_torch_clamp() -> None:
    """`TorchOps.clamp_output(fn, args, lo, hi)` = torch.clamp(fn(*args), lo, hi) in value
    and gradient: at a value exactly on a bound the clamp is not active and fn's gradient
    passes (torch.clamp's gradient is 1 there); one ulp past the bound it is 0. Both code
    paths: some entries past a bound (masked evaluation), and only entries on the bounds
    (the early return when nothing is clamped)."""
    from klest.rl._backend import TorchOps

    ops = TorchOps()
    grid = [-5.0, 5.0, _up(5.0), _down(-5.0), _down(5.0), _up(-5.0), 0.0, -7.0, 7.0]
    for xs in (grid, [-5.0, 5.0]):
        x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
        out = ops.clamp_output(lambda t: 2.0 * t, (x,), -10.0, 10.0)
        out.sum().backward()
        x2 = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
        want = torch.clamp(2.0 * x2, -10.0, 10.0)
        want.sum().backward()
        assert torch.equal(out.detach(), want.detach())
        assert torch.equal(x.grad, x2.grad)
        assert x.grad[0] == 2.0 and x.grad[1] == 2.0  # exactly on -10 and on 10


K3_AT_2 = float(k3_ref(np.array([2.0]))[0])  # klest's k3(2.0) is this float exactly
SLIME_W = 10.0 / K3_AT_2  # SLIME_W * K3_AT_2 == 10.0 exactly (asserted below)


@pytest.mark.parametrize(
    ("framework", "kind", "l", "opts", "bound", "on"),
    [
        # value -l = k1 reaches +-10 exactly at l = -+10; one ulp further it is clamped
        ("openrlhf", "k1", [-10.0, 10.0, _down(-10.0), _up(10.0), _up(-10.0)], {}, 10.0, 2),
        ("nemo_rl@0.6.0", "k1", [-10.0, 10.0, _down(-10.0), _up(10.0), _up(-10.0)], {}, 10.0, 2),
        (
            "nemo_rl@0.6.0",
            "k2",
            [4.0, -4.0, _up(4.0), _down(-4.0)],
            {"output_clamp_value": 8.0},
            8.0,
            2,
        ),
        ("nemo_rl@0.6.0", "k3", [2.0, _up(2.0), 1.0], {"output_clamp_value": K3_AT_2}, K3_AT_2, 1),
        (
            "slime",
            "low_var_kl",
            [2.0, 2.5],
            {"importance_ratio": SLIME_W, "use_unbiased_kl": True},
            10.0,
            1,
        ),
    ],
)
def test_output_clamps_pass_the_gradient_at_exactly_the_bound(
    framework: str, kind: str, l: list[float], opts: dict, bound: float, on: int
) -> None:
    """The clamped kinds at values exactly on the output clamp: the value is the bound and
    the gradient is the unclamped function's (as torch.clamp, which the frameworks call),
    not 0. (verl's low_var_kl clamps k3 at 10, which no float64 l reaches exactly: k3 jumps
    from 9.999999999999995 to 10.000000000000002; its clamp is the same clamp_output.)
    The first `on` entries of `l` give values exactly on a bound, the others lie past it."""
    assert SLIME_W * K3_AT_2 == 10.0
    lp = np.zeros(len(l))
    ref = np.array(l)
    want, dlp_want, dref_want = reference(framework, kind, lp, ref, **opts)
    at_bound = np.arange(len(l)) < on
    assert (np.abs(want[at_bound]) == bound).all()
    out, dlp, dref = torch_grads(framework, kind, lp, ref, **opts)
    for got in (out.detach().numpy(), rl.kl_penalty(lp, ref, kind, framework=framework, **opts)):
        assert (got[at_bound] == want[at_bound]).all()
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert (dlp[at_bound] != 0).all() and (dref[at_bound] != 0).all()
    np.testing.assert_allclose(dlp, dlp_want, rtol=1e-13, atol=0)
    np.testing.assert_allclose(dref, dref_want, rtol=1e-13, atol=0)
