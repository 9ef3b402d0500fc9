"""kl_penalty(..., emulate=True) and emulated_full_kl: the frameworks' own arithmetic.

Golden values are derived by hand in the comments from the formats' significands: bf16 has 8
significant bits (spacing 2**-7 in [1, 2), 2**-8 in [0.5, 1)), fp16 11 (2**-10 in [1, 2),
2**-11 in [0.5, 1)), fp32 24 (2**-23 in [1, 2)); torch rounds each eager operation once, to
nearest, ties to even. The literal tests write each framework's expression out as its source
does (the pinned commits of klest/rl/frameworks/*.py) and require the emulation bit for bit.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from klest import rl
from klest.rl import emulate

torch = pytest.importorskip("torch")
F = torch.nn.functional
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def k3(framework: str, l_value: float, dtype, kind: str = "k3"):
    """The emulated penalty at one log-ratio l (logprob 0, ref_logprob l) in ``dtype``."""
    l = torch.tensor([l_value], dtype=dtype)
    return rl.kl_penalty(torch.zeros_like(l), l, kind, framework=framework, emulate=True)


# --- golden values -------------------------------------------------------------------------


def test_bf16_k3_at_2_to_minus_8() -> None:
    # exp(2**-8) = 1.0039139 lies above the midpoint 1 + 2**-8 of bf16's neighbours 1 and
    # 1 + 2**-7, so it rounds to 1 + 2**-7.
    # verl (exp(l) - l) - 1: 1 + 2**-7 - 2**-8 = 1 + 2**-8 is that midpoint again; ties to
    # even give 1 (fraction 0000000, not 0000001); 1 - 1 = 0.
    assert k3("verl", 2.0**-8, BF16).item() == 0.0
    assert k3("trl", 2.0**-8, BF16, "grpo").item() == 0.0
    # NeMo-RL (exp(l) - 1) - l: (1 + 2**-7) - 1 = 2**-7 and 2**-7 - 2**-8 = 2**-8, both exact:
    # 2**-8 = 0.0039, 512 times the true 7.64e-6.
    assert k3("nemo_rl", 2.0**-8, BF16).item() == 2.0**-8
    # open-instruct expm1(-d) + d = expm1(l) - l: expm1(2**-8) = 2**-8 (1 + 0.00196); bf16's
    # spacing there is 2**-15, 0.00196 * 2**-8 = 0.25 * 2**-15 rounds down: 2**-8; minus 2**-8: 0.
    assert k3("open_instruct", 2.0**-8, BF16).item() == 0.0
    # klest's exact value, rounded once to bf16, is not 0
    exact = rl.kl_penalty(torch.zeros(1, dtype=BF16), torch.tensor([2.0**-8], dtype=BF16), "k3")
    assert exact.item() > 7e-6


def test_oat_bf16_input_is_computed_in_float32() -> None:
    # oat's spec is float32. expm1(2**-8) = 2**-8 + (l**2/2 + l**3/6 + ...) = 2**-8 +
    # 16405.35 * 2**-31, and float32's spacing in [2**-8, 2**-7) is 2**-31: it rounds to
    # 2**-8 + 16405 * 2**-31; minus 2**-8 (exact): 16405 * 2**-31 = 7.63917e-6 (true 7.63934e-6).
    out = k3("oat", 2.0**-8, BF16)
    assert out.dtype == FP32 and out.item() == 16405 * 2.0**-31


def test_bf16_emulated_k3_negative_where_the_exact_one_is_positive() -> None:
    # NeMo-RL at l = 2**-10: exp(l) = 1.000977 is below 1 + 2**-8 (the midpoint to 1 + 2**-7):
    # 1; (1 - 1) - 2**-10 = -2**-10 exactly. The true k3 is l**2/2 = 4.8e-7 > 0.
    assert k3("nemo_rl", 2.0**-10, BF16).item() == -(2.0**-10)
    # verl at the same l: exp -> 1; 1 - 2**-10 rounds to 1 (its neighbours in [0.5, 1] are
    # 1 - 2**-8 and 1); 1 - 1 = 0.
    assert k3("verl", 2.0**-10, BF16).item() == 0.0
    # verl at l = 2**-9 + 2**-16 (a bf16 number: 2**-9 (1 + 2**-7)): exp -> 1; 1 - l lies
    # 2**-16 below the midpoint 1 - 2**-9 of 1 - 2**-8 and 1, so it rounds to 1 - 2**-8;
    # (1 - 2**-8) - 1 = -2**-8. The true value is l**2/2 = 1.9e-6.
    l = 2.0**-9 + 2.0**-16
    assert k3("verl", l, BF16).item() == -(2.0**-8)
    exact = rl.kl_penalty(torch.zeros(1, dtype=BF16), torch.tensor([l], dtype=BF16), "k3")
    assert exact.item() > 0


def test_fp16_golden() -> None:
    # fp16 at l = 2**-12: exp(l) = 1 + 2**-12 (1 + ...) is below the midpoint 1 + 2**-11: 1.
    # NeMo-RL: (1 - 1) - 2**-12 = -2**-12.
    assert k3("nemo_rl", 2.0**-12, FP16).item() == -(2.0**-12)
    # verl: 1 - 2**-12 is the midpoint of 1 - 2**-11 (fraction all ones: odd) and 1: ties to
    # even give 1; 1 - 1 = 0.
    assert k3("verl", 2.0**-12, FP16).item() == 0.0
    assert k3("verl", 2.0**-12, FP16).dtype == FP16


def test_fp32_golden() -> None:
    # fp32 at l = 2**-25: exp(l) = 1 + 2**-25 is a quarter of fp32's spacing 2**-23 above 1: 1.
    # NeMo-RL: (1 - 1) - 2**-25 = -2**-25; the true value is 2**-51.
    assert k3("nemo_rl", 2.0**-25, FP32).item() == -(2.0**-25)
    assert k3("verl", 2.0**-25, FP32).item() == 0.0  # 1 - 2**-25 rounds to 1


def test_the_float_cast_point_changes_the_result() -> None:
    # bf16 inputs with l = 2**-8. OpenRLHF writes (-d).exp() - 1 + d after log_probs.float():
    # in float32 exp(2**-8) = 1 + 32832.083 * 2**-23 rounds to 1 + 32832 * 2**-23; minus 1
    # and minus 2**-8 = 32768 * 2**-23 are exact: 64 * 2**-23 = 2**-17, a float32.
    out = k3("openrlhf", 2.0**-8, BF16)
    assert out.dtype == FP32 and out.item() == 2.0**-17
    # The same formula without the cast (NeMo-RL; or OpenRLHF's spec with the cast removed)
    # stays in bf16: 2**-8 (test_bf16_k3_at_2_to_minus_8).
    uncast = dataclasses.replace(rl.spec("openrlhf", "k3"), dtype="input dtype")
    l = torch.tensor([2.0**-8], dtype=BF16)
    out = rl.apply_spec(uncast, torch.zeros_like(l), l, emulate=True)
    assert out.dtype == BF16 and out.item() == 2.0**-8
    # slime: a bf16 importance ratio times slime's float32 k3 is float32 (torch promotion)
    lp = torch.zeros(1, dtype=BF16)
    out = rl.kl_penalty(lp, l, "k3", framework="slime", emulate=True, use_unbiased_kl=True)
    assert out.dtype == FP32 and out.item() == 2.0**-17


# --- the literal framework expressions ------------------------------------------------------


def verl_low_var(lp, ref):
    kl = ref - lp
    kl = torch.clamp(kl, min=-20, max=20)
    ratio = torch.exp(kl)
    kld = (ratio - kl - 1).contiguous()
    return torch.clamp(kld, min=-10, max=10)


def nemo(lp, ref, kl_type, w=None):
    logr = ref - lp
    logr_clamped = logr.clamp(min=-20.0, max=20.0)
    if w is not None:
        w = torch.where(logr == logr_clamped, w, w.detach())
    logr = logr_clamped
    kl = {"k1": -logr, "k2": torch.square(logr) / 2, "k3": torch.exp(logr) - 1 - logr}[kl_type]
    if w is not None:
        kl = w * kl
    return kl.clamp(min=-10.0, max=10.0)


def openrlhf(lp, ref, kind):
    log_ratio = lp.float() - ref.float()
    if kind == "k2":
        log_ratio = log_ratio**2 / 2.0
    elif kind == "k3":
        log_ratio = (-log_ratio).exp() - 1 + log_ratio
    return log_ratio.clamp(min=-10, max=10)


def slime(lp, ref, kind, ratio=None):
    log_ratio = lp.float() - ref.float()
    if kind == "k1":
        kl = log_ratio
    elif kind == "k2":
        kl = log_ratio**2 / 2.0
    else:
        log_ratio = -log_ratio
        kl = log_ratio.exp() - 1 - log_ratio
    if ratio is not None:
        kl = ratio * kl
    return torch.clamp(kl, min=-10, max=10) if kind == "low_var_kl" else kl


def easyr1(lp, ref, kind):
    lp, ref = lp.float(), ref.float()
    if kind == "kl":
        return lp - ref
    if kind == "abs":
        return (lp - ref).abs()
    if kind == "mse":
        return 0.5 * (lp - ref).square()
    kl = (ref - lp).clamp(-20.0, 20.0)
    return torch.clamp((kl.exp() - kl - 1).contiguous(), min=-10.0, max=10.0)


def open_instruct(lp, ref, index, old=None):
    d = (lp - ref).clamp(-40.0, 40.0)
    ratio = torch.exp(lp - (lp.detach() if old is None else old))
    return torch.stack([d, d**2 / 2, torch.expm1(-d) + d, ratio * d])[index]


def trl_grpo(lp, ref, old=None):
    kl = torch.exp(ref - lp) - (ref - lp) - 1
    return kl if old is None else kl * torch.exp(lp - old)


def mismatch(lp, mu):
    log_importance_ratio = lp - mu
    return torch.exp(log_importance_ratio) - log_importance_ratio - 1


LITERAL = [
    ("verl", "low_var_kl", {}, verl_low_var),
    ("verl", "kl", {}, lambda lp, ref: lp - ref),
    ("verl", "abs", {}, lambda lp, ref: (lp - ref).abs()),
    ("verl", "mse", {}, lambda lp, ref: 0.5 * (lp - ref).square()),
    ("verl@0.9.0", "k3+", {}, lambda lp, ref: verl_low_var(lp, ref)),  # value: the forward
    ("skyrl", "k3", {}, verl_low_var),
    ("skyrl", "k2", {}, lambda lp, ref: 0.5 * (lp - ref).square()),
    ("nemo_rl@0.6.0", "k3", {}, lambda lp, ref: nemo(lp, ref, "k3")),
    ("nemo_rl", "k2", {}, lambda lp, ref: nemo(lp, ref, "k2")),
    ("nemo_rl", "k1", {}, lambda lp, ref: nemo(lp, ref, "k1")),
    ("nemo_rl", "k3", {"generation_logprob": "old", "use_on_policy_kl_approximation": True},
     lambda lp, ref, old: nemo(lp, ref, "k3", torch.nan_to_num(torch.exp(lp - old)))),
    ("openrlhf", "k1", {}, lambda lp, ref: openrlhf(lp, ref, "k1")),
    ("openrlhf", "k2", {}, lambda lp, ref: openrlhf(lp, ref, "k2")),
    ("openrlhf", "k3", {}, lambda lp, ref: openrlhf(lp, ref, "k3")),
    ("areal", "k3", {}, lambda lp, ref: openrlhf(lp, ref, "k3")),  # AReaL: slime's form, clamped
    ("slime", "k3", {}, lambda lp, ref: slime(lp, ref, "k3")),
    ("slime", "low_var_kl", {}, lambda lp, ref: slime(lp, ref, "low_var_kl")),
    ("slime", "k2", {}, lambda lp, ref: slime(lp, ref, "k2")),
    ("slime", "low_var_kl", {"old_logprob": "old", "use_unbiased_kl": True},
     lambda lp, ref, old: slime(lp, ref, "low_var_kl", torch.exp(lp - old))),
    ("easyr1", "low_var_kl", {}, lambda lp, ref: easyr1(lp, ref, "low_var_kl")),
    ("easyr1", "mse", {}, lambda lp, ref: easyr1(lp, ref, "mse")),
    ("easyr1", "kl", {}, lambda lp, ref: easyr1(lp, ref, "kl")),
    ("trl", "grpo", {}, trl_grpo),
    ("trl", "grpo", {"old_logprob": "old", "use_bias_correction_kl": True}, trl_grpo),
    ("trl", "k3", {}, lambda lp, ref: ((ref - lp).exp() - 1) - (ref - lp)),
    ("trl", "rloo", {}, lambda lp, ref: lp - ref),
    ("torchtune", "k3", {}, lambda lp, ref: torch.exp(ref - lp) - (ref - lp) - 1),
    ("oat", "k3", {},
     lambda lp, ref: torch.expm1((ref.float() - lp.float()).clamp(-40.0, 40.0))
     - (ref.float() - lp.float()).clamp(-40.0, 40.0)),
    ("open_instruct", "k3", {}, lambda lp, ref: open_instruct(lp, ref, 2)),
    ("open_instruct", "k2", {}, lambda lp, ref: open_instruct(lp, ref, 1)),
    ("open_instruct", "ratio_k1", {"old_logprob": "old"},
     lambda lp, ref, old: open_instruct(lp, ref, 3, old)),
    ("prime_rl", "mismatch_kl", {}, mismatch),
    ("prime_rl", "kl_tau", {}, lambda lp, mu: (lp - mu) ** 2),
]  # fmt: skip


def inputs(dtype, seed: int = 0):
    """log-probs with log-ratios from 1e-4 to 50 (through every clamp), in ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    lp = -5 * torch.rand(4, 64, generator=g, dtype=torch.float64)
    scales = torch.tensor([1e-4, 1e-2, 1.0, 30.0], dtype=torch.float64)[:, None]
    ref = lp + scales * torch.randn(4, 64, generator=g, dtype=torch.float64)
    old = lp + 0.1 * torch.randn(4, 64, generator=g, dtype=torch.float64)
    return lp.to(dtype), ref.to(dtype), old.to(dtype)


@pytest.mark.parametrize("dtype", [BF16, FP16, FP32])
@pytest.mark.parametrize(("framework", "kind", "opts", "literal"), LITERAL)
def test_emulation_is_the_literal_framework_expression(framework, kind, opts, literal, dtype):
    lp, ref, old = inputs(dtype)
    given = {k: (old if v == "old" else v) for k, v in opts.items()}
    out = rl.kl_penalty(lp, ref, kind, framework=framework, emulate=True, **given)
    expected = literal(lp, ref, old) if "old" in opts.values() else literal(lp, ref)
    assert out.dtype == expected.dtype
    assert torch.equal(out, expected)


def test_gradients_are_the_framework_autograd() -> None:
    lp, ref, _ = inputs(BF16, seed=1)
    a, b = lp.clone().requires_grad_(), lp.clone().requires_grad_()
    rl.kl_penalty(a, ref, "k3+", framework="verl", emulate=True).sum().backward()
    (0.5 * (b - ref).square()).sum().backward()  # verl '+': the k2 gradient, straight through
    assert torch.equal(a.grad, b.grad)
    a.grad = b.grad = None
    rl.kl_penalty(a, ref, "grpo", framework="trl", emulate=True).sum().backward()
    trl_grpo(b, ref).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_every_k3_spec_has_its_framework_form() -> None:
    for fw in rl.frameworks():
        for version in rl.versions(fw):
            for kind in rl.kinds(f"{fw}@{version}"):
                s = rl.spec(f"{fw}@{version}", kind)
                if s.estimator == "k3":
                    assert emulate.k3_form(s) in emulate.K3_FORMS


def test_trl_legacy_full_is_kl_div_of_the_given_log_probs() -> None:
    g = torch.Generator().manual_seed(2)
    lp = torch.randn(3, 5, 50, generator=g).log_softmax(-1).to(BF16)
    ref = torch.randn(3, 5, 50, generator=g).log_softmax(-1).to(BF16)
    out = rl.kl_penalty(lp, ref, "full", framework="trl@0.11.4", emulate=True)
    expected = F.kl_div(ref, lp, log_target=True, reduction="none").sum(-1)
    assert out.dtype == BF16 and torch.equal(out, expected)
    with pytest.raises(NotImplementedError, match=r"verl@0\.9\.0 kind 'full'"):
        rl.kl_penalty(lp, ref, "full", framework="verl", emulate=True)


def test_default_is_unchanged_and_bad_emulate_is_an_error() -> None:
    lp, ref, _ = inputs(FP32)
    assert torch.equal(
        rl.kl_penalty(lp, ref, "k3", framework="nemo_rl"),
        rl.kl_penalty(lp, ref, "k3", framework="nemo_rl", emulate=False),
    )
    with pytest.raises(TypeError, match="emulate must be True or False"):
        rl.kl_penalty(lp, ref, "k3", framework="nemo_rl", emulate="yes")


def test_numpy_input_keeps_its_dtype_and_nan_stays_nan() -> None:
    lp = np.array([0.0, 0.0], dtype=np.float32)
    ref = np.array([2.0**-25, np.nan], dtype=np.float32)
    out = rl.kl_penalty(lp, ref, "k3", framework="nemo_rl@0.6.0", emulate=True)
    assert out.dtype == FP32
    assert out[0].item() == -(2.0**-25) and torch.isnan(out[1])


def test_without_torch_a_one_line_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"^emulate=True needs torch \(pip install torch\)$"):
        emulate.emulated_full_kl(np.zeros((1, 3)), np.zeros((1, 3)), dtype="float32")


# --- emulated_full_kl -----------------------------------------------------------------------


def logits(v: int = 300, seed: int = 3, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    a = scale * torch.randn(4, v, generator=g, dtype=torch.float64)
    return a, a + 0.1 * torch.randn(4, v, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [BF16, FP16, FP32])
def test_full_formulas_are_the_literal_expressions(dtype) -> None:
    a, b = logits()
    la, lb = F.log_softmax(a.to(dtype), -1), F.log_softmax(b.to(dtype), -1)
    plain = (la.exp() * (la - lb)).sum(-1)
    out = emulate.emulated_full_kl(a, b, dtype=dtype)
    assert out.dtype == torch.float64 and torch.equal(out, plain.double())
    trl = F.kl_div(lb, la, log_target=True, reduction="none").sum(-1)
    assert torch.equal(emulate.emulated_full_kl(a, b, dtype=dtype, formula="kl_div"), trl.double())
    terms, total = la.exp() * (la - lb), None  # chunks of 64 entries, accumulated in dtype
    for s in range(0, a.shape[-1], 64):
        part = terms[:, s : s + 64].sum(-1)
        total = part if total is None else total + part
    chunked = emulate.emulated_full_kl(a, b, dtype=dtype, chunk=64)
    assert torch.equal(chunked, total.double())
    # EasyDeL before #267 (T = 1): float32 inside, per-position casts, difference in dtype
    t, s = a.to(dtype).float(), b.to(dtype).float()
    lt = t - torch.logsumexp(t, -1, keepdim=True)
    pt = lt.exp()
    ent = (-(pt * lt).sum(-1)).to(dtype)
    xent = (torch.logsumexp(s, -1) - (pt * s).sum(-1)).to(dtype)
    out = emulate.emulated_full_kl(a.to(dtype), b.to(dtype), dtype=dtype,
                                   formula="xent_minus_entropy")  # fmt: skip
    assert torch.equal(out, (xent - ent).double())


def test_full_identical_pair_is_zero_direction_and_masks() -> None:
    a, b = logits(v=64)
    assert torch.equal(
        emulate.emulated_full_kl(a, a, dtype=BF16), torch.zeros(4, dtype=torch.float64)
    )
    swapped = emulate.emulated_full_kl(b, a, dtype=FP32)
    assert torch.equal(emulate.emulated_full_kl(a, b, dtype=FP32, direction="KL(ref||pi)"), swapped)
    keep = torch.tensor([True, False, True, True])
    out = emulate.emulated_full_kl(a, b, dtype=FP32, mask=keep)
    assert out[1].item() == 0.0 and torch.equal(
        out[keep], emulate.emulated_full_kl(a, b, dtype=FP32)[keep]
    )
    entries = torch.ones(4, 64, dtype=torch.bool)
    entries[:, 32:] = False  # the same as the KL of the first 32 entries' renormalised softmax
    out = emulate.emulated_full_kl(a, b, dtype=FP32, mask=entries)
    assert torch.equal(out, emulate.emulated_full_kl(a[:, :32], b[:, :32], dtype=FP32))
    entries[2] = False  # no kept entry: a masked position (0), as in full_kl
    assert emulate.emulated_full_kl(a, b, dtype=FP32, mask=entries)[2].item() == 0.0
    # float32 at V = 64 against klest's exact value: float32 rounding only (64 terms)
    exact = rl.full_kl(a[:, :32], b[:, :32])
    assert torch.allclose(out, torch.as_tensor(exact), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "int8"}, "dtype must be"),
        ({"dtype": FP32, "chunk": 0}, "chunk must be"),
        ({"dtype": FP32, "direction": "forward"}, "direction must be"),
        ({"dtype": FP32, "formula": "fused"}, "formula must be"),
        ({"dtype": FP32, "mask": torch.ones(3, dtype=torch.bool)}, "mask of shape"),
    ],
)
def test_full_bad_arguments(kwargs, message) -> None:
    a, b = logits(v=8)
    with pytest.raises(ValueError, match=message):
        emulate.emulated_full_kl(a, b, **kwargs)
    with pytest.raises(TypeError, match="mask must be boolean"):
        emulate.emulated_full_kl(a, b, dtype=FP32, mask=torch.ones(4))
    with pytest.raises(ValueError, match="same non-empty shape"):
        emulate.emulated_full_kl(a, b[:, :4], dtype=FP32)
