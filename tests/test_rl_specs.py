"""Golden tests for every registered (framework@version, kind) of klest.rl.

Each framework release's per-token KL term is written out below by hand, in numpy, from the
framework's own source at the pinned tag (/work/notes/h13_frameworks_*.md, and the code in
/work/.mirror): the value and its hand-derived vector-Jacobian products with respect to
``logprob``, ``ref_logprob`` and the behaviour log-probabilities of the importance weights.
Nothing here calls ``klest.rl.spec.evaluate`` or reads a ``PenaltySpec``'s primitives to
compute an expected number; ``GOLDEN`` must name every registered spec, so a spec added
without a golden reference fails ``test_golden_table_covers_every_registered_spec``.

Notation: l = ref_logprob - logprob (klest's log p - log q), d = logprob - ref_logprob = -l.
k3(x) = e^x - 1 - x is evaluated in 50-digit arithmetic (mpmath). torch.clamp's gradient
passes at the bound itself (x = ±c): "live" masks below are inclusive.

Tolerances (float64): values rtol 1e-13 (~450 ulp); gradients rtol 1e-12 (~4500 ulp), in both
cases relative to the sum of the magnitudes of the terms the hand formula adds (autograd adds
the same product-rule terms, w·k + w·k', so their cancellation costs up to that many ulp of
the larger term: float64 rounding, not a klest error); a single-term formula is compared
relative to its own value. Where the expected number is exactly 0 klest must return 0.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
import pytest

from klest import rl

torch = pytest.importorskip("torch")

MIRROR = Path("/work/.mirror")
VALUE_RTOL = 1e-13
GRAD_RTOL = 1e-12


# ---- hand-written building blocks ------------------------------------------------------------


def k3_ref(x: np.ndarray) -> np.ndarray:
    """exp(x) - 1 - x in 50-digit arithmetic, rounded to float64 (inf past the range)."""
    with mpmath.workdps(50):
        out = []
        for v in np.ravel(x):
            y = mpmath.exp(mpmath.mpf(float(v))) - 1 - mpmath.mpf(float(v))
            out.append(math.inf if y > np.finfo(np.float64).max else float(y))
    return np.array(out).reshape(np.shape(x))


def of_d(kind: str, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, d value/d d) of an estimator written in d = logprob - ref_logprob."""
    if kind == "k1":
        return d.copy(), np.ones_like(d)
    if kind == "k2":
        return d * d / 2, d.copy()
    if kind == "abs":
        return np.abs(d), np.sign(d)
    if kind == "k3":  # exp(-d) - 1 + d
        return k3_ref(-d), -np.expm1(-d)
    if kind == "sq":
        return d * d, 2 * d
    raise AssertionError(kind)


def of_l(kind: str, l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, d value/d l) of an estimator written in l = ref_logprob - logprob."""
    if kind == "k1":
        return -l, -np.ones_like(l)
    if kind == "k2":
        return l * l / 2, l.copy()
    if kind == "k3":  # exp(l) - 1 - l
        return k3_ref(l), np.expm1(l)
    raise AssertionError(kind)


def clamp(x: np.ndarray, c: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(torch.clamp(x, -c, c), where its gradient passes: |x| <= c, inclusive)."""
    if c is None:
        return x, np.ones(np.shape(x), bool)
    return np.clip(x, -c, c), np.abs(x) <= c


def exp_(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(x)


@dataclass
class Out:
    """Expected value and VJPs of sum(g * value): name -> (expected, magnitude of its terms)."""

    value: np.ndarray
    grads: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    value_scale: np.ndarray | None = None


def single(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x, np.abs(x)


def elementwise(value: np.ndarray, dv_dd: np.ndarray, g: np.ndarray) -> Out:
    """A function of d alone: d/d logprob = dv/dd, d/d ref_logprob = -dv/dd."""
    return Out(value, {"logprob": single(g * dv_dd), "ref_logprob": single(-g * dv_dd)})


# ---- the frameworks, from their source ------------------------------------------------------


def verl(version: str, kind: str) -> Callable[..., Out]:
    """verl/trainer/ppo/core_algos.py kl_penalty(_forward); '+' = k2's gradient, from 0.8.0."""
    base = kind.removesuffix("+")

    def fn(lp, ref, g):
        if base == "low_var_kl":
            kl, live_in = clamp(ref - lp, 20.0)
            v, dv_dl = of_l("k3", kl)
            v, live_out = clamp(v, 10.0)
            dv_dd = -dv_dl * live_in * live_out
        else:
            v, dv_dd = of_d({"kl": "k1", "abs": "abs", "mse": "k2"}[base], lp - ref)
        if kind.endswith("+"):  # backward_score - backward_score.detach() + forward.detach()
            dv_dd = lp - ref
        return elementwise(v, dv_dd, g)

    return fn


def openrlhf_like(kind: str) -> Callable[..., Out]:
    """OpenRLHF / AReaL compute_approx_kl: log_ratio = lp - ref, every kind clamped to ±10."""

    def fn(lp, ref, g):
        v, dv = of_d(kind, lp - ref)
        v, live = clamp(v, 10.0)
        return elementwise(v, dv * live, g)

    return fn


def skyrl(kind: str) -> Callable[..., Out]:
    def fn(lp, ref, g):
        if kind != "k3":
            return elementwise(*of_d(kind, lp - ref), g)
        kl, live_in = clamp(ref - lp, 20.0)
        v, dv_dl = of_l("k3", kl)
        v, live_out = clamp(v, 10.0)
        return elementwise(v, -dv_dl * live_in * live_out, g)

    return fn


def easyr1(version: str, kind: str) -> Callable[..., Out]:
    """verl/trainer/core_algos.py compute_kl of EasyR1 (its verl fork)."""

    def fn(lp, ref, g):
        if kind == "full":  # F.kl_div(ref, lp, log_target=True).sum(-1): e^lp (lp - ref)
            terms = np.exp(lp) * (lp - ref)
            v = terms.sum(-1, keepdims=True)
            dlp = g * np.exp(lp) * (1 + lp - ref)
            scale = np.abs(g) * np.exp(lp) * (1 + np.abs(lp - ref))
            dref = -g * np.exp(lp)
            return Out(v, {"logprob": (dlp, scale), "ref_logprob": single(dref)},
                       np.abs(terms).sum(-1, keepdims=True))  # fmt: skip
        if kind == "low_var_kl":  # v0.3.0: no input clamp; v0.3.1 on: clamp(-20, 20)
            kl, live_in = clamp(ref - lp, None if version == "0.3.0" else 20.0)
            v, dv_dl = of_l("k3", kl)
            v, live_out = clamp(v, 10.0)
            return elementwise(v, -dv_dl * live_in * live_out, g)
        return elementwise(*of_d({"kl": "k1", "abs": "abs", "mse": "k2"}[kind], lp - ref), g)

    return fn


def nemo_loss(version: str, kind: str) -> Callable[..., Out]:
    """calculate_kl + ClippedPGLossFn's kl_importance_weights (nemo_rl 0.6.0 / 0.7.0)."""

    def fn(lp, ref, g, generation_logprob=None, input_clamp_value=20.0, output_clamp_value=10.0,
           use_on_policy_kl_approximation=False):  # fmt: skip
        # exp(curr - generation_logprobs) only with use_on_policy_kl_approximation
        gen = generation_logprob if use_on_policy_kl_approximation else None
        logr = ref - lp
        c, live_in = clamp(logr, input_clamp_value)
        k, dk_dc = of_l(kind, c)
        dk_dlp, dk_dref = -dk_dc * live_in, dk_dc * live_in
        w = np.ones_like(lp) if gen is None else exp_(lp - gen)
        finite = np.isfinite(w)
        w = np.where(finite, w, 0.0)  # torch.nan_to_num(nan=0, posinf=0, neginf=0)
        if version == "0.6.0":  # detached weight times the clamped KL
            kc, live_out = clamp(k, output_clamp_value)
            grads = {
                "logprob": single(g * w * live_out * dk_dlp),
                "ref_logprob": single(g * w * live_out * dk_dref),
            }
            if gen is not None:
                grads["generation_logprob"] = single(np.zeros_like(lp))
            return Out(w * kc, grads)
        # 0.7.0: exp(lp - gen) or exp(lp - lp.detach()), differentiable; klest's 0 gradient
        # where nan_to_num replaced it; detached where the input clamp is active; before the
        # output clamp
        dw_dlp = w * finite * live_in
        v, live_out = clamp(w * k, output_clamp_value)
        grads = {
            "logprob": (
                g * live_out * (dw_dlp * k + w * dk_dlp),
                np.abs(g) * live_out * (np.abs(dw_dlp * k) + np.abs(w * dk_dlp)),
            ),
            "ref_logprob": single(g * live_out * w * dk_dref),
        }
        if gen is not None:
            grads["generation_logprob"] = single(-g * live_out * dw_dlp * k)
        return Out(v, grads)

    return fn


def nemo_reward(kind: str) -> Callable[..., Out]:
    """calculate_kl(prev_logprobs, reference, kl_type) with its default clamps 20 / 10."""

    def fn(lp, ref, g):
        c, _ = clamp(ref - lp, 20.0)
        return Out(clamp(of_l(kind, c)[0], 10.0)[0])

    return fn


def open_instruct(kind: str) -> Callable[..., Out]:
    """model_utils.estimate_kl: d = clamp(lp - ref, ±40); [d, d²/2, expm1(-d) + d, ratio·d]."""

    def fn(lp, ref, g, old_logprob=None):
        d, live = clamp(lp - ref, 40.0)
        if kind != "ratio_k1":
            v, dv = of_d(kind, d)
            return elementwise(v, dv * live, g)
        # ratio = exp(new - old), differentiable; old = new.detach() by default
        w = np.ones_like(lp) if old_logprob is None else np.exp(lp - old_logprob)
        grads = {
            "logprob": (g * (w * d + w * live), np.abs(g) * (np.abs(w * d) + w * live)),
            "ref_logprob": single(-g * w * live),
        }
        if old_logprob is not None:
            grads["old_logprob"] = single(-g * w * d)
        return Out(w * d, grads)

    return fn


def oat(kind: str) -> Callable[..., Out]:
    def fn(lp, ref, g):
        if kind == "k1":  # kl_rewards = -coef * (logps - ref_logps), no gradient
            return Out(lp - ref)
        c, live = clamp(ref - lp, 40.0)  # expm1(log_ratio) - log_ratio
        v, dv_dl = of_l("k3", c)
        return elementwise(v, -dv_dl * live, g)

    return fn


def prime_rl(kind: str) -> Callable[..., Out]:
    def fn(lp, ref, g):
        d = lp - ref  # log_importance_ratio = trainer - inference
        if kind == "mismatch_kl":  # importance_ratio - log_importance_ratio - 1, a metric
            return Out(k3_ref(d))
        return elementwise(d * d, 2 * d, g)  # kl_tau * log_importance_ratio**2

    return fn


def slime(version: str, kind: str) -> Callable[..., Out]:
    """ppo_utils.compute_approx_kl; v0.3.1 importance_ratio (= exp(lp - old) in the loss)."""
    base = "k1" if kind == "opd" else kind.removeprefix("reward_")
    est = "k3" if base == "low_var_kl" else base

    def fn(lp, ref, g, old_logprob=None, importance_ratio=None, use_unbiased_kl=False):
        k, dk_dd = of_d(est, lp - ref)
        if kind != base:  # reward / advantages: no gradient, no weight
            return Out(clamp(k, 10.0)[0] if base == "low_var_kl" else k)
        w, dw_dlp = np.ones_like(lp), np.zeros_like(lp)
        if use_unbiased_kl and importance_ratio is not None:
            w = np.asarray(importance_ratio, dtype=np.float64) * np.ones_like(lp)
        elif use_unbiased_kl:  # exp(log_probs - old_log_probs); old = log_probs.detach()
            w = np.exp(lp - (lp if old_logprob is None else old_logprob))  # if none stored
            dw_dlp = w
        v, live = clamp(w * k, 10.0 if base == "low_var_kl" else None)
        grads = {
            "logprob": (
                g * live * (dw_dlp * k + w * dk_dd),
                np.abs(g) * live * (np.abs(dw_dlp * k) + np.abs(w * dk_dd)),
            ),
            "ref_logprob": single(-g * live * w * dk_dd),
        }
        if old_logprob is not None:
            grads["old_logprob"] = single(-g * live * dw_dlp * k)
        if importance_ratio is not None:
            grads["importance_ratio"] = single(g * live * k)
        return Out(v, grads)

    return fn


def torchtune(kind: str) -> Callable[..., Out]:
    def fn(lp, ref, g):
        if kind == "k1":  # get_rewards_ppo: kl = logprobs - ref_logprobs
            return Out(lp - ref)
        v, dv_dl = of_l("k3", ref - lp)  # exp(ref - pi) - (ref - pi) - 1, unclamped
        return elementwise(v, -dv_dl, g)

    return fn


def trl(version: str, kind: str) -> Callable[..., Out]:
    def fn(lp, ref, g, **opts):
        if kind in ("kl", "k1", "rloo"):  # logprob - ref_logprob, under no_grad
            return Out(lp - ref)
        if kind == "abs":
            return Out(np.abs(lp - ref))
        if kind == "mse":
            return Out((lp - ref) ** 2 / 2)
        l = ref - lp
        k = k3_ref(l)  # exp(ref - logp) - (ref - logp) - 1
        if kind == "k3":
            return Out(k)
        return grpo(lp, l, k, g, **opts)

    return fn


def grpo(lp, l, k, g, use_bias_correction_kl=False, old_logprob=None,
         importance_sampling_level="token", mask=None) -> Out:  # fmt: skip
    """GRPOTrainer._compute_loss: per_token_kl * coef_1 if use_bias_correction_kl."""
    dk_dlp = -np.expm1(l)
    if not use_bias_correction_kl:
        return elementwise(k, dk_dlp, g)
    old = lp if old_logprob is None else old_logprob  # per_token_logps.detach()
    x = lp - old
    if importance_sampling_level == "token":
        w = np.exp(x)
        grads = {
            "logprob": (g * w * (k + dk_dlp), np.abs(g) * w * (k + np.abs(dk_dlp))),
            "ref_logprob": single(-g * w * dk_dlp),
        }
        if old_logprob is not None:
            grads["old_logprob"] = single(-g * w * k)
        return Out(w * k, grads)
    m = np.ones_like(lp) if mask is None else np.asarray(mask, dtype=np.float64)
    n = np.maximum(m.sum(-1, keepdims=True), 1.0)
    w = np.exp((x * m).sum(-1, keepdims=True) / n)  # (B, 1), broadcast onto every token
    cross = w * m / n * (g * k).sum(-1, keepdims=True)  # d w/d lp_j times sum_t g_t k_t
    cross_scale = w * m / n * np.abs(g * k).sum(-1, keepdims=True)
    grads = {
        "logprob": (g * w * dk_dlp + cross, np.abs(g * w * dk_dlp) + cross_scale),
        "ref_logprob": single(-g * w * dk_dlp),
    }
    if old_logprob is not None:
        grads["old_logprob"] = (-cross, cross_scale)
    return Out(w * k, grads)


# ---- the golden table: every (framework, version) and kind ----------------------------------


@dataclass(frozen=True)
class Golden:
    fn: Callable[..., Out] | None  # None: unsupported or a full-vocabulary kind
    placement: str  # first word of describe()["placement"]
    detached: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    float32: bool = False
    behaviour: str | None = None  # the option taking the behaviour policy's log-probs
    switch: dict[str, Any] = field(default_factory=dict)  # options turning the weight on
    missing_is_self: bool = False  # without behaviour: exp(lp - lp.detach()), gradient 1
    unsupported: bool = False
    full: bool = False
    reduces_last: bool = False  # value has shape (..., 1)


FULL_OPTIONS = {"logits": None, "ref_logits": None, "chunk_size": None, "nonfinite": "propagate"}
NEMO_SWITCH = {"use_on_policy_kl_approximation": True}
NEMO_OPTIONS = {"input_clamp_value": 20.0, "output_clamp_value": 10.0, "generation_logprob": None,
                "use_on_policy_kl_approximation": False}  # fmt: skip
SLIME_SWITCH = {"use_unbiased_kl": True}
SLIME_OPTIONS = {"old_logprob": None, "importance_ratio": None, "use_unbiased_kl": False}
GRPO_OPTIONS = {"use_bias_correction_kl": False, "old_logprob": None,
                "importance_sampling_level": "token", "mask": None}  # fmt: skip

#: (framework, version) -> (repository, commit of the tag, default kind)
RELEASES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("areal", "1.0.4"): ("inclusionAI/AReaL", "37d6c6400e99a05fa3409d6a067762a44df40d3b", "k1"),
    ("easyr1", "0.3.0"): ("hiyouga/EasyR1", "7435d3c718fcdef84d41f0fdbaba9515001b268e", "kl"),
    ("easyr1", "0.3.2"): ("hiyouga/EasyR1", "a23fb5b06be61d0eaa5819430533bf11136609cf", "kl"),
    ("nemo_rl", "0.6.0"): ("NVIDIA-NeMo/RL", "5fb588932bf835506a8a5bac01de4f8c7ab0a065", "k3"),
    ("nemo_rl", "0.7.0"): ("NVIDIA-NeMo/RL", "81aa43dda4765b0429cf31dab44441e4e4383911", "k3"),
    ("oat", "0.2.3"): ("sail-sg/oat", "c1a074c320ff5ca9fe9a4f669bf05208e2f310be", "k3"),
    **{
        ("open_instruct", v): ("allenai/open-instruct", c, "k3")
        for v, c in (("0.1.0", "8befd55e21d045805d9abcc33120456aeb1e4546"),
                     ("0.2.0", "aa29e218ea5468c8396fb77bc5a0ba07a90c0eb0"),
                     ("0.3.0", "26de99604002d6a7b25a2c5f2ee880e388a21dca"))
    },
    ("openrlhf", "0.11.0"): ("OpenRLHF/OpenRLHF", "3c3be6234e0cb353e76bb8019947db9dfe99fca7", "k1"),
    ("prime_rl", "0.8.0"): ("PrimeIntellect-ai/prime-rl",
                            "60bc29547a8824ad1de7b9af8d265e2b27b2a72d", "kl_tau"),
    ("skyrl", "skyrl_train-0.4.0"): ("NovaSky-AI/SkyRL",
                                     "332c7cbcc4f4fad20ca71d94c5bb33d84035da09", "k3"),
    ("skyrl", "0.3.0"): ("NovaSky-AI/SkyRL", "f5bc3b78dfddfb352870d5d7430cd226e5785838", "k3"),
    ("slime", "0.2.0"): ("THUDM/slime", "91acef0f8b47816c984be30f99ee48bb4e48d167", "k1"),
    ("slime", "0.3.1"): ("THUDM/slime", "a6272da0d4f3d0a08520c99a2f3b4f6c887960dc", "k1"),
    ("torchtune", "0.6.1"): ("pytorch/torchtune", "a6290a5b40758f13bca61c386bc8756a49ef417e", "k1"),
    ("torchtune", "main"): ("pytorch/torchtune", "bd2a0fc7c31430972728494fa01aaeeb0ebf1ba1", "k3"),
    ("trl", "0.11.4"): ("huggingface/trl", "1f8ba929fbb6962249386f7dce20155da8a26cda", "kl"),
    ("trl", "0.25.1"): ("huggingface/trl", "1cf8d56c06ce095aeaa92d0853fca68e5834a928", "grpo"),
    ("trl", "0.26.0"): ("huggingface/trl", "84794a7d03c748f3e1518cd3efc9a944b8cdd2bd", "grpo"),
    ("trl", "1.9.0"): ("huggingface/trl", "35def3ee000a87f6839e66f4b7749b06274ed1b3", "grpo"),
    **{
        ("verl", v): ("verl-project/verl", c, "low_var_kl")
        for v, c in (("0.5.0", "8fdc4d3f202f41461f4de9f42a637228e342668b"),
                     ("0.6.0", "ddd86f527a4af75095e4677b02b5aa272913a088"),
                     ("0.7.1", "bec9ef74768dd201881cd4e54cd0385e87caae27"),
                     ("0.8.0", "7aed6b230776f963fa09509c10d9c3a767d1102c"),
                     ("0.9.0", "483b8a009ba3a97563edee3a19887e4862b8094a"))
    },
}  # fmt: skip
#: framework -> its versions, oldest first (release dates from the tags)
VERSIONS = {
    "areal": ("1.0.4",), "easyr1": ("0.3.0", "0.3.2"), "nemo_rl": ("0.6.0", "0.7.0"),
    "oat": ("0.2.3",), "open_instruct": ("0.1.0", "0.2.0", "0.3.0"), "openrlhf": ("0.11.0",),
    "prime_rl": ("0.8.0",), "skyrl": ("skyrl_train-0.4.0", "0.3.0"), "slime": ("0.2.0", "0.3.1"),
    "torchtune": ("0.6.1", "main"), "trl": ("0.11.4", "0.25.1", "0.26.0", "1.9.0"),
    "verl": ("0.5.0", "0.6.0", "0.7.1", "0.8.0", "0.9.0"),
}  # fmt: skip
#: the tag each release's commit must be (None: a commit on main, no release)
TAGS = {("skyrl", "skyrl_train-0.4.0"): "skyrl_train-v0.4.0", ("skyrl", "0.3.0"): "skyrl-v0.3.0",
        ("torchtune", "main"): None}  # fmt: skip


def _golden() -> tuple[dict[tuple[str, str, str], Golden], dict[tuple[str, str, str], str]]:
    table: dict[tuple[str, str, str], Golden] = {}
    aliases: dict[tuple[str, str, str], str] = {}

    def put(fw: str, v: str, kind: str, gold: Golden, *alias: str) -> None:
        table[fw, v, kind] = gold
        for a in alias:
            aliases[fw, v, a] = kind

    for kind in ("k1", "k2", "k3"):
        put("areal", "1.0.4", kind, Golden(openrlhf_like(kind), "reward", True, float32=True))
        put("openrlhf", "0.11.0", kind, Golden(openrlhf_like(kind), "reward", float32=True))
    for v in ("0.3.0", "0.3.2"):
        for kind in ("kl", "abs", "mse", "low_var_kl", "full"):
            put("easyr1", v, kind, Golden(easyr1(v, kind), "reward", float32=True,
                                          reduces_last=kind == "full"))  # fmt: skip
    for v in ("0.6.0", "0.7.0"):
        for kind in ("k1", "k2", "k3"):
            put("nemo_rl", v, kind, Golden(nemo_loss(v, kind), "loss", options=NEMO_OPTIONS,
                                           behaviour="generation_logprob", switch=NEMO_SWITCH,
                                           missing_is_self=v == "0.7.0"))  # fmt: skip
            put("nemo_rl", v, f"reward_{kind}", Golden(nemo_reward(kind), "advantages", True))
    put("nemo_rl", "0.7.0", "opd", Golden(oat("k1"), "advantages", True))  # teacher - prev
    put("oat", "0.2.3", "k3", Golden(oat("k3"), "loss", float32=True))
    put("oat", "0.2.3", "k1", Golden(oat("k1"), "reward", True, float32=True))
    for v in ("0.1.0", "0.2.0", "0.3.0"):
        for i, kind in enumerate(("k1", "k2", "k3")):
            put("open_instruct", v, kind, Golden(open_instruct(kind), "loss"), str(i))
        put("open_instruct", v, "ratio_k1",
            Golden(open_instruct("ratio_k1"), "loss", options={"old_logprob": None},
                   behaviour="old_logprob", missing_is_self=True), "3")  # fmt: skip
    put("prime_rl", "0.8.0", "kl_tau", Golden(prime_rl("kl_tau"), "loss"))
    put("prime_rl", "0.8.0", "mismatch_kl", Golden(prime_rl("mismatch_kl"), "metric", True))
    for v in ("skyrl_train-0.4.0", "0.3.0"):
        for kind in ("k1", "abs", "k2", "k3"):
            put("skyrl", v, kind, Golden(skyrl(kind), "loss"))
    for kind in ("k1", "k2", "k3", "low_var_kl"):
        put("slime", "0.2.0", kind, Golden(slime("0.2.0", kind), "loss", float32=True))
        put("slime", "0.3.1", kind,
            Golden(slime("0.3.1", kind), "loss", float32=True, behaviour="old_logprob",
                   options=SLIME_OPTIONS, switch=SLIME_SWITCH, missing_is_self=True))  # fmt: skip
        put(
            "slime",
            "0.3.1",
            f"reward_{kind}",
            Golden(slime("0.3.1", f"reward_{kind}"), "reward", True, float32=True),
        )
    put("slime", "0.3.1", "opd", Golden(slime("0.3.1", "opd"), "advantages", True))
    put("torchtune", "0.6.1", "k1", Golden(torchtune("k1"), "reward", True))
    put("torchtune", "main", "k1", Golden(torchtune("k1"), "reward", True))
    put("torchtune", "main", "k3", Golden(torchtune("k3"), "loss"))
    for kind in ("kl", "abs", "mse"):
        put("trl", "0.11.4", kind, Golden(trl("0.11.4", kind), "reward", True))
    put("trl", "0.11.4", "full", Golden(None, "reward", True, FULL_OPTIONS, full=True))
    for v in ("0.25.1", "0.26.0", "1.9.0"):
        for kind in ("k1", "k3", "rloo"):
            put("trl", v, kind, Golden(trl(v, kind), "reward", True))
        weighted = v != "0.25.1"  # use_bias_correction_kl: PR #4638, first in v0.26.0
        put("trl", v, "grpo",
            Golden(trl(v, "grpo"), "loss", options=GRPO_OPTIONS if weighted else {},
                   behaviour="old_logprob" if weighted else None,
                   switch={"use_bias_correction_kl": True} if weighted else {},
                   missing_is_self=True))  # fmt: skip
    for v in VERSIONS["verl"]:
        works = v in ("0.8.0", "0.9.0")  # PR #6058 strips the '+'
        for kind, *alias in (("kl", "k1"), ("abs",), ("mse", "k2"), ("low_var_kl", "k3")):
            put("verl", v, kind, Golden(verl(v, kind), "loss"), *alias)
            put("verl", v, kind + "+",
                Golden(verl(v, kind + "+") if works else None, "loss", unsupported=not works),
                *(a + "+" for a in alias))  # fmt: skip
        put("verl", v, "full", Golden(None, "loss", options=FULL_OPTIONS, full=True))
    return table, aliases


GOLDEN, ALIASES = _golden()


def registered() -> list[tuple[str, str, str]]:
    return [(fw, v, k) for fw in rl.frameworks() for v in rl.versions(fw)
            for k in rl.kinds(f"{fw}@{v}")]  # fmt: skip


def ids(cases: list[tuple[str, str, str]]) -> list[str]:
    return [f"{fw}@{v}:{k}" for fw, v, k in cases]


COMPUTED = [key for key, gold in GOLDEN.items() if gold.fn is not None]
DIFFERENTIABLE = [key for key in COMPUTED if not GOLDEN[key].detached]
WEIGHTED = [key for key in COMPUTED if GOLDEN[key].behaviour is not None]
UNSUPPORTED = [key for key, gold in GOLDEN.items() if gold.unsupported]
FULL = [key for key, gold in GOLDEN.items() if gold.full]


# ---- inputs ---------------------------------------------------------------------------------

#: log-ratios l where each clamp is active: k3's ±10 output clamp (l = 3.5, -12), k1/k2's
#: (±12), the ±20 input clamps (±30), the ±40 ones (±50); tiny l for k3's precision
SPECIAL_L = (1e-8, -1e-8, 3e-4, -3e-4, 0.3, -0.3, 2.5, -2.5, 3.5, -3.5,
             12.0, -12.0, 30.0, -30.0, 50.0, -50.0, 100.0, -100.0)  # fmt: skip
SHAPE = (6, 11)


def make_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """logprob, ref_logprob <= 0 with l = ref - lp spread over [-4, 4] plus SPECIAL_L, the
    behaviour log-probs lp - δ with δ in [-1, 1], an upstream gradient and a mask."""
    rng = np.random.default_rng(seed)
    n = SHAPE[0] * SHAPE[1]
    l = np.concatenate([rng.uniform(-4.0, 4.0, n - len(SPECIAL_L)), SPECIAL_L])
    l = rng.permutation(l)
    base = -rng.uniform(0.05, 2.0, n)
    lp = np.where(l >= 0, base - l, base)
    ref = np.where(l >= 0, base, base + l)
    mask = (rng.uniform(size=n) < 0.8).astype(np.float64).reshape(SHAPE)
    mask[1] = 0.0  # a sequence without tokens: TRL's clamp(min=1) of the count
    return {
        "lp": lp.reshape(SHAPE),
        "ref": ref.reshape(SHAPE),
        "behaviour": (lp - rng.uniform(-1.0, 1.0, n)).reshape(SHAPE),
        "g": rng.normal(size=SHAPE),
        "g_last": rng.normal(size=(SHAPE[0], 1)),
        "mask": mask,
    }


INPUTS = make_inputs()
GRAD_FREE = ("mask", "importance_sampling_level", "use_bias_correction_kl")


def run_torch(fw: str, v: str, kind: str, lp, ref, g, **opts) -> tuple[Any, dict[str, Any]]:
    """klest's torch value and the gradients of sum(g * value) (zeros where none flows)."""
    leaves = {"logprob": torch.tensor(lp, requires_grad=True),
              "ref_logprob": torch.tensor(ref, requires_grad=True)}  # fmt: skip
    topts = {}
    for name, x in opts.items():
        if isinstance(x, np.ndarray):
            topts[name] = torch.tensor(x, requires_grad=name not in GRAD_FREE)
            if name not in GRAD_FREE:
                leaves[name] = topts[name]
        else:
            topts[name] = x
    out = rl.kl_penalty(leaves["logprob"], leaves["ref_logprob"], kind,
                        framework=f"{fw}@{v}", **topts)  # fmt: skip
    assert out.dtype == torch.float64
    grads = {}
    if out.requires_grad:
        (out * torch.tensor(g)).sum().backward()
        grads = {
            name: np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            for name, t in leaves.items()
        }
    return out, grads


def check_close(got: np.ndarray, want: np.ndarray, scale: np.ndarray, rtol: float, what: str):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    err = np.where(same, 0.0, np.abs(got - want))
    bad = ~(err <= rtol * np.maximum(np.abs(want), scale))
    assert not bad.any(), (
        f"{what}: {bad.sum()} entries off, e.g. got {got[bad][:4]} want {want[bad][:4]}"
    )


def check_case(key: tuple[str, str, str], opts: dict[str, Any], inputs=INPUTS) -> None:
    """Values (numpy and torch) and every gradient against the golden reference."""
    fw, v, kind = key
    gold = GOLDEN[key]
    lp, ref = inputs["lp"], inputs["ref"]
    g = inputs["g_last"] if gold.reduces_last else inputs["g"]
    want = gold.fn(lp, ref, g, **opts)
    vscale = np.abs(want.value) if want.value_scale is None else want.value_scale
    got = rl.kl_penalty(lp, ref, kind, framework=f"{fw}@{v}", **opts)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    check_close(got, want.value, vscale, VALUE_RTOL, "numpy value")
    out, grads = run_torch(fw, v, kind, lp, ref, g, **opts)
    check_close(out.detach().numpy(), want.value, vscale, VALUE_RTOL, "torch value")
    assert out.requires_grad is not gold.detached, "detached kinds carry no gradient"
    if gold.detached:
        return
    assert set(want.grads) == set(grads), (set(want.grads), set(grads))
    for name, (expected, scale) in want.grads.items():
        check_close(grads[name], expected, scale, GRAD_RTOL, f"d/d {name}")


# ---- the tests ------------------------------------------------------------------------------


def test_golden_table_covers_every_registered_spec() -> None:
    """Every registered (framework@version, kind) has a golden reference (aliases: the very
    same spec object as their canonical kind), and the table names nothing unregistered."""
    reg = registered()
    missing = [key for key in reg if key not in GOLDEN and key not in ALIASES]
    assert not missing, f"specs without a golden reference in test_rl_specs.py: {missing}"
    for (fw, v, alias), kind in ALIASES.items():
        assert rl.spec(f"{fw}@{v}", alias) is rl.spec(f"{fw}@{v}", kind), (fw, v, alias)
    stale = sorted((set(GOLDEN) | set(ALIASES)) - set(reg))
    assert not stale, f"golden references for unregistered specs: {stale}"
    for fw, v, kind in GOLDEN:  # a canonical kind is not an alias of another one
        assert rl.spec(f"{fw}@{v}", kind).kind == kind
    assert set(RELEASES) == {(fw, v) for fw, v, _ in reg}


@pytest.mark.parametrize("key", COMPUTED, ids=ids(COMPUTED))
def test_value_and_gradient_with_default_options(key: tuple[str, str, str]) -> None:
    """Ordinary log-ratios and ones where every clamp is active; behaviour log-probs omitted."""
    check_case(key, {})


def weighted(key: tuple[str, str, str], behaviour: np.ndarray | None) -> dict[str, Any]:
    """The options that turn the weight on, with the behaviour log-probs if given."""
    gold = GOLDEN[key]
    opts = dict(gold.switch)
    if behaviour is not None:
        opts[gold.behaviour] = behaviour
    return opts


WEIGHT_CASES = [
    pytest.param(key, given, id=f"{fw}@{v}:{kind}-{'behaviour' if given else 'none'}")
    for key in WEIGHTED for given in (True, False) for fw, v, kind in [key]
]  # fmt: skip


@pytest.mark.parametrize(("key", "given"), WEIGHT_CASES)
def test_importance_weight_value_and_gradients(key: tuple[str, str, str], given: bool) -> None:
    """The weight switched on with the behaviour log-probs given (gradient w.r.t. them too) or
    omitted (then exp(lp - lp.detach()): value 1, gradient 1; or no weight at all)."""
    check_case(key, weighted(key, INPUTS["behaviour"] if given else None))
    if not given and not GOLDEN[key].missing_is_self:  # no weight: the unweighted term exactly
        fw, v, kind = key
        plain = rl.kl_penalty(INPUTS["lp"], INPUTS["ref"], kind, framework=f"{fw}@{v}")
        assert np.array_equal(rl.kl_penalty(INPUTS["lp"], INPUTS["ref"], kind,
                                            framework=f"{fw}@{v}", **weighted(key, None)),
                              plain)  # fmt: skip


SWITCHED = [key for key in WEIGHTED if GOLDEN[key].switch]


@pytest.mark.parametrize("key", SWITCHED, ids=ids(SWITCHED))
def test_behaviour_option_without_its_switch_is_an_error(key: tuple[str, str, str]) -> None:
    """klest's contract: the behaviour log-probs are not silently ignored when the framework's
    flag (use_on_policy_kl_approximation, use_unbiased_kl, use_bias_correction_kl) is off."""
    fw, v, kind = key
    gold = GOLDEN[key]
    with pytest.raises(ValueError, match=gold.behaviour):
        rl.kl_penalty(INPUTS["lp"], INPUTS["ref"], kind, framework=f"{fw}@{v}",
                      **{gold.behaviour: INPUTS["behaviour"]})  # fmt: skip


NEMO_LOSS = [key for key in WEIGHTED if key[0] == "nemo_rl"]


@pytest.mark.parametrize("key", NEMO_LOSS, ids=ids(NEMO_LOSS))
@pytest.mark.parametrize(("ic", "oc"), [(None, None), (5.0, None), (None, 2.0), (30.0, 40.0)])
def test_nemo_rl_clamp_options(
    key: tuple[str, str, str], ic: float | None, oc: float | None
) -> None:
    opts = {"input_clamp_value": ic, "output_clamp_value": oc}
    check_case(key, opts)
    check_case(key, {**opts, **weighted(key, None)})
    check_case(key, {**opts, **weighted(key, INPUTS["behaviour"])})


@pytest.mark.parametrize("key", NEMO_LOSS, ids=ids(NEMO_LOSS))
def test_nemo_rl_nonfinite_weights_are_zero_with_zero_gradient(key: tuple[str, str, str]) -> None:
    """nan_to_num(exp(lp - gen)): overflow (gen = -800, -1e4, -inf) and NaN give weight 0;
    klest's gradient there is 0 (NeMo-RL's own backward gives 0 * inf = NaN; documented)."""
    fw, v, kind = key
    gen = INPUTS["behaviour"].copy()
    gen[0, :3] = (-800.0, -np.inf, np.nan)
    gen[2, 4:6] = (-1e4, np.nan)
    inputs = {**INPUTS, "behaviour": gen}
    lp = INPUTS["lp"]
    out, grads = run_torch(fw, v, kind, lp, INPUTS["ref"], INPUTS["g"], **weighted(key, gen))
    bad = ~np.isfinite(exp_(lp - gen))
    assert bad.sum() == 5
    assert (out.detach().numpy()[bad] == 0).all()
    for name in ("logprob", "ref_logprob", "generation_logprob"):
        assert (grads[name][bad] == 0).all(), name
        assert np.isfinite(grads[name]).all(), name
    check_case(key, weighted(key, gen), inputs)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_nemo_rl_070_weight_stays_live_at_the_input_clamp_bound(kind: str) -> None:
    """logr == logr_clamped holds at ±20 itself: the weight keeps its gradient there and
    loses it just past the bound (torch.clamp's gradient passes at the bound too)."""
    lp = np.array([-25.0, -5.0, -25.5, -5.0])
    ref = np.array([-5.0, -25.0, -5.0, -25.5])  # l = 20, -20, 20.5, -20.5
    inputs = {"lp": lp, "ref": ref, "behaviour": lp - 0.25, "g": np.ones(4)}
    for gen in (None, inputs["behaviour"]):
        opts = {"output_clamp_value": None, **weighted(("nemo_rl", "0.7.0", kind), gen)}
        check_case(("nemo_rl", "0.7.0", kind), opts, inputs)
        _, grads = run_torch("nemo_rl", "0.7.0", kind, lp, ref, np.ones(4), **opts)
        for name in grads:  # every gradient lives at the bound, none past it
            assert (grads[name][:2] != 0).all() and (grads[name][2:] == 0).all(), name


@pytest.mark.parametrize("key", UNSUPPORTED, ids=ids(UNSUPPORTED))
def test_verl_plus_kinds_raise_before_080(key: tuple[str, str, str]) -> None:
    fw, v, kind = key
    lp, ref = INPUTS["lp"], INPUTS["ref"]
    for a, b in ((lp, ref), (torch.tensor(lp, requires_grad=True), torch.tensor(ref))):
        with pytest.raises(NotImplementedError, match=r"\+"):
            rl.kl_penalty(a, b, kind, framework=f"{fw}@{v}")
    aliases = [a for (f, w, a), k in ALIASES.items() if (f, w, k) == key]
    for alias in aliases:
        with pytest.raises(NotImplementedError):
            rl.kl_penalty(lp, ref, alias, framework=f"{fw}@{v}")
    assert v in ("0.5.0", "0.6.0", "0.7.1")


@pytest.mark.parametrize("v", ["0.8.0", "0.9.0"])
def test_verl_plus_kinds_have_k2_gradient_whatever_the_clamps(v: str) -> None:
    """Where low_var_kl's clamps are active (|l| = 30, 50, 100) the value is clamped and the
    gradient is still lp - ref: the straight-through k2."""
    lp, ref = INPUTS["lp"], INPUTS["ref"]
    for kind in ("low_var_kl+", "k3+", "kl+", "abs+", "mse+", "k2+"):
        out, grads = run_torch("verl", v, kind, lp, ref, np.ones(SHAPE))
        base, _ = run_torch("verl", v, kind.removesuffix("+"), lp, ref, np.ones(SHAPE))
        assert torch.equal(out, base), "the value is the base kind's, bit for bit"
        np.testing.assert_array_equal(grads["logprob"], lp - ref)
        np.testing.assert_array_equal(grads["ref_logprob"], -(lp - ref))
    assert (np.abs(ref - lp) > 20).sum() >= 6  # the input clamp is active somewhere


@pytest.mark.parametrize("v", ["0.26.0", "1.9.0"])
@pytest.mark.parametrize("masked", [True, False])
def test_trl_grpo_sequence_level_weight(v: str, masked: bool) -> None:
    """GSPO: w = exp(sum_t m (lp - old) / clamp(sum_t m, 1)) per sequence, broadcast onto
    every token's k3 (issue #6586's cross term in the gradient)."""
    opts: dict[str, Any] = {"use_bias_correction_kl": True, "importance_sampling_level": "sequence"}
    if masked:
        opts["mask"] = INPUTS["mask"]
    check_case(("trl", v, "grpo"), opts)
    check_case(("trl", v, "grpo"), {**opts, "old_logprob": INPUTS["behaviour"]})
    # the token level ignores the mask
    check_case(("trl", v, "grpo"), {"use_bias_correction_kl": True, "mask": INPUTS["mask"]})


def test_trl_grpo_has_no_bias_correction_before_0260() -> None:
    with pytest.raises(ValueError, match="use_bias_correction_kl"):
        rl.kl_penalty(INPUTS["lp"], INPUTS["ref"], "grpo", framework="trl@0.25.1",
                      use_bias_correction_kl=True)  # fmt: skip


@pytest.mark.parametrize("kind", ["k1", "k2", "k3", "low_var_kl"])
def test_slime_importance_ratio_given(kind: str) -> None:
    """importance_ratio= is used as given (its own gradient is k); not with old_logprob."""
    ratio = np.exp(INPUTS["behaviour"] - INPUTS["lp"] + 0.5)
    check_case(("slime", "0.3.1", kind), {"importance_ratio": ratio, **SLIME_SWITCH})
    with pytest.raises(ValueError, match="not both"):
        rl.kl_penalty(INPUTS["lp"], INPUTS["ref"], kind, framework="slime@0.3.1",
                      importance_ratio=ratio, old_logprob=INPUTS["behaviour"],
                      **SLIME_SWITCH)  # fmt: skip
    with pytest.raises(ValueError, match="unknown option"):
        rl.kl_penalty(INPUTS["lp"], INPUTS["ref"], kind, framework="slime@0.2.0",
                      old_logprob=INPUTS["behaviour"])  # fmt: skip


@pytest.mark.parametrize("v", ["0.3.0", "0.3.2"])
def test_easyr1_full_sums_the_last_axis(v: str) -> None:
    """F.kl_div of the sampled tokens' log-probs: sum_t exp(lp_t)(lp_t - ref_t), shape (B, 1)."""
    lp, ref = np.log([[0.5, 0.2, 0.1]]), np.log([[0.25, 0.4, 0.1]])
    got = rl.kl_penalty(lp, ref, "full", framework=f"easyr1@{v}")
    assert got.shape == (1, 1)
    want = 0.5 * math.log(2.0) + 0.2 * math.log(0.5)
    np.testing.assert_allclose(got, [[want]], rtol=1e-15)
    _, grads = run_torch("easyr1", v, "full", lp, ref, np.ones((1, 1)))
    np.testing.assert_allclose(grads["logprob"], np.exp(lp) * (1 + lp - ref), rtol=1e-15)


@pytest.mark.parametrize("key", FULL, ids=ids(FULL))
def test_full_kinds_are_full_kl(key: tuple[str, str, str]) -> None:
    """The full-vocabulary kinds: rl.full_kl of the logits, = sum_v p_v log(p_v / r_v)."""
    fw, v, kind = key
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 3, 7)), rng.normal(size=(2, 3, 7))
    la = a - np.log(np.exp(a).sum(-1, keepdims=True))
    lb = b - np.log(np.exp(b).sum(-1, keepdims=True))
    hand = (np.exp(la) * (la - lb)).sum(-1)
    if fw == "trl":  # legacy PPOTrainer: whole-vocabulary log-probs as logprob/ref_logprob
        got = rl.kl_penalty(la, lb, kind, framework=f"{fw}@{v}")
        out = rl.kl_penalty(torch.tensor(la, requires_grad=True), torch.tensor(lb), kind,
                            framework=f"{fw}@{v}")  # fmt: skip
    else:
        got = rl.kl_penalty(la[..., 0], lb[..., 0], kind, framework=f"{fw}@{v}", logits=a,
                            ref_logits=b)  # fmt: skip
        out = rl.kl_penalty(
            None,
            None,
            kind,
            framework=f"{fw}@{v}",
            logits=torch.tensor(a, requires_grad=True),
            ref_logits=torch.tensor(b),
        )
    np.testing.assert_allclose(got, rl.full_kl(a, b), rtol=1e-13)
    np.testing.assert_allclose(got, hand, rtol=1e-12)
    assert out.requires_grad is not GOLDEN[key].detached
    np.testing.assert_allclose(out.detach().numpy(), hand, rtol=1e-12)


# ---- describe, versions, releases -----------------------------------------------------------

DESCRIBE_KEYS = {"repository", "version", "commit", "file", "function", "lines", "formula",
                 "gradient", "placement", "reduction", "dtype", "options", "detached",
                 "default"}  # fmt: skip


@pytest.mark.parametrize("key", registered(), ids=ids(registered()))
def test_describe_reports_the_release_and_the_spec(key: tuple[str, str, str]) -> None:
    fw, v, kind = key
    canonical = ALIASES.get(key, kind)
    gold = GOLDEN[fw, v, canonical]
    repository, commit, default = RELEASES[fw, v]
    info = rl.describe(f"{fw}@{v}", kind)
    assert DESCRIBE_KEYS <= set(info), DESCRIBE_KEYS - set(info)
    assert (info["repository"], info["version"], info["commit"]) == (repository, v, commit)
    assert re.fullmatch(r"[0-9a-f]{40}", info["commit"])
    assert info["file"].endswith(".py") and info["function"]
    assert re.fullmatch(r"\d+-\d+", info["lines"])
    a, b = map(int, info["lines"].split("-"))
    assert 0 < a <= b
    for name in ("formula", "gradient", "reduction", "dtype"):
        assert isinstance(info[name], str) and info[name], name
    assert info["placement"].split(" ")[0] == gold.placement
    assert info["detached"] is gold.detached
    assert info["options"] == gold.options
    assert ("float32" in info["dtype"]) is gold.float32
    assert info["default"] is (canonical == default)


@pytest.mark.parametrize("fw", sorted(VERSIONS))
def test_versions_releases_and_defaults(fw: str) -> None:
    vs = rl.versions(fw)
    assert vs == VERSIONS[fw], "oldest first"
    dates = [rl.release(f"{fw}@{v}").date for v in vs]
    assert dates == sorted(dates)
    assert rl.release(fw) is rl.release(f"{fw}@{vs[-1]}"), "the bare name is the newest"
    for kind in rl.kinds(fw):
        assert rl.spec(fw, kind) is rl.spec(f"{fw}@{vs[-1]}", kind)
    for v in vs:
        rel = rl.release(f"{fw}@{v}")
        assert rel.commit == RELEASES[fw, v][1]
        if v[0].isdigit():
            assert rl.release(f"{fw}@v{v}") is rel
            assert rl.release(f"{fw.upper().replace('_', '-')}@V{v}") is rel
        specs = {id(s): s for s in (rl.spec(f"{fw}@{v}", k) for k in rl.kinds(f"{fw}@{v}"))}
        defaults = [s.kind for s in specs.values() if rl.describe(f"{fw}@{v}", s.kind)["default"]]
        assert defaults == [rel.default_kind] == [RELEASES[fw, v][2]], defaults
    for bad in (f"{fw}@0.0.0", f"{fw}@99.1"):
        with pytest.raises(ValueError, match="mirrored") as err:
            rl.kl_penalty(np.zeros(2), np.zeros(2), rl.kinds(fw)[0], framework=bad)
        assert all(v in str(err.value) for v in vs), str(err.value)
        with pytest.raises(ValueError, match="unknown version"):
            rl.describe(bad, rl.kinds(fw)[0])


# ---- the sources at the pinned commits (developer machines with /work/.mirror) --------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def _sites(fw: str, v: str, kind: str) -> list[tuple[str, str, str]]:
    info = rl.describe(f"{fw}@{v}", kind)
    sites = [(info["file"], info["function"], info["lines"])]
    call = rl.spec(f"{fw}@{v}", kind).site.call
    if call:
        m = re.fullmatch(r"(\S+\.py)::(\S+) \((\d+-\d+)\)", call)
        assert m, f"{fw}@{v}:{kind}: call site {call!r} is not 'file::function (a-b)'"
        sites.append(m.groups())
    return sites


def _function_extent(text: list[str], name: str, start: int) -> tuple[int, int] | None:
    """(def line, last line) of the last ``def name`` at or before ``start`` (1-based)."""
    short = name.split(".")[-1]
    defs = [i for i, t in enumerate(text, 1)
            if re.match(rf"\s*(async\s+)?def {re.escape(short)}\b", t) and i <= start]  # fmt: skip
    if not defs:
        return None
    d = defs[-1]
    indent = len(text[d - 1]) - len(text[d - 1].lstrip())
    last = d
    for i in range(d, len(text)):
        t = text[i]
        if not t.strip() or t.lstrip().startswith("#"):
            continue
        if t.lstrip().startswith((")", "]", "}")):  # closes a bracket: never ends the def
            last = i + 1
            continue
        if len(t) - len(t.lstrip()) <= indent:
            break
        last = i + 1
    return d, last


SOURCES: dict[tuple[str, str], list[str]] = {}


def _source(repo: Path, commit: str, path: str) -> list[str]:
    if (commit, path) not in SOURCES:
        SOURCES[commit, path] = _git(repo, "show", f"{commit}:{path}").splitlines()
    return SOURCES[commit, path]


def _mirror(repository: str) -> Path:
    if not MIRROR.is_dir():
        pytest.skip(f"{MIRROR} (git snapshots of the frameworks) is absent: CI has none")
    repo = MIRROR / repository.replace("/", "+") / "repo"
    if not repo.is_dir():  # a machine's mirror holds the snapshots fetched on it, maybe none
        pytest.skip(f"{repo} is not fetched here: fetch github:{repository} to check it")
    return repo


SPEC_CASES = [
    pytest.param(key, id=f"{key[0]}@{key[1]}:{key[2]}")
    for key in registered()
]  # fmt: skip


@pytest.mark.parametrize("key", SPEC_CASES)
def test_source_lines_exist_at_the_pinned_commit(key: tuple[str, str, str]) -> None:
    """The file at the release's commit holds ``def <function>`` (in its class), the line
    range lies inside that function and holds the KL code (for the distillation kinds: the
    teacher term), for the estimator and for where it is applied. Needs /work/.mirror."""
    fw, v, kind = key
    repository, commit, _ = RELEASES[fw, v]
    repo = _mirror(repository)
    for path, function, lines in _sites(fw, v, kind):
        text = _source(repo, commit, path)
        a, b = map(int, lines.split("-"))
        where = f"{path}::{function} ({lines}) at {commit[:8]}"
        assert b <= len(text), f"{where}: the file has {len(text)} lines"
        extent = _function_extent(text, function, a + 2)  # + 2: decorators above the def
        assert extent is not None, f"{where}: no def {function.split('.')[-1]} before line {a}"
        if "." in function:
            cls = function.split(".")[-2]
            heads = [t for t in text[: extent[0] - 1] if re.match(r"\s*class \w+", t)]
            assert heads and re.match(rf"\s*class {re.escape(cls)}\b", heads[-1]), where
        after = [t for t in text[extent[1] : b] if t.strip()]  # past the end: blank lines only
        assert not after, f"{where}: the function spans lines {extent[0]}-{extent[1]}"
        assert re.search(r"kl|teacher", "\n".join(text[a - 1 : b]), re.I), f"{where}: no KL"


@pytest.mark.parametrize("release", sorted(RELEASES), ids=[f"{f}@{v}" for f, v in sorted(RELEASES)])
def test_release_commit_is_the_tagged_commit(release: tuple[str, str]) -> None:
    """The pinned commit exists in the snapshot and is the release tag's (torchtune main: no
    release, a commit on main). Needs /work/.mirror."""
    _, v = release
    repository, commit, _ = RELEASES[release]
    repo = _mirror(repository)
    _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    tag = TAGS.get(release, f"v{v}")
    if tag is None:
        _git(repo, "merge-base", "--is-ancestor", commit, "HEAD")
    else:
        assert _git(repo, "rev-parse", f"{tag}^{{commit}}").strip() == commit, tag
