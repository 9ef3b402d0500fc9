"""Exact expected gradients of a framework's KL term when tokens come from a behaviour policy.

The policy is π = softmax(z), the reference π_ref = softmax(z_ref), the behaviour policy
μ = softmax(z_μ) (π_old or an inference engine; μ = π when ``behaviour_logits`` is omitted),
per position over the last axis. Tokens are drawn a ~ μ; ρ = π/μ. For the framework's
per-token penalty f(a) (:func:`klest.rl.kl_penalty`, with the option through which the
framework receives μ's log-probabilities filled from ``behaviour_logits``), the gradient
with respect to z is ∂f/∂log π(a) · (e_a − π), and by enumeration of a:

- **loss** placement (the penalty is differentiated):
  E_{a~μ}[∇_z f(a)] = μ ⊙ D − π Σ_a μ_a D_a, with D_a = ∂f/∂log π at a (forward-mode
  derivatives through the spec's own primitives: :mod:`klest.gradients.dual`);
- **reward** / **advantages** placement (the value, computed without gradient from the
  rollout log-probabilities log μ, enters a policy-gradient surrogate ρ·A, unclipped):
  E_{a~μ}[ρ_a f(a) ∇_z log π(a)] = π ⊙ f − π Σ_a π_a f_a;
- **metric**: no gradient (zero).

Sign convention: gradients of the quantity minimised (the penalty added to the loss, or
subtracted from the reward). With a sequence-level weight (``level="sequence_sum"`` /
``"sequence_mean"``, or TRL's ``importance_sampling_level="sequence"``) the logits are one
sequence of independent positions, shape (T, V), and the penalty is Σ_t f_t: the
expectation is an enumeration of all V^T sequences (at most 2^18).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import log_softmax

from klest.gradients.dual import SequenceLevel, evaluate_with_derivative
from klest.gradients.softmax import _check_logits
from klest.rl.penalty import spec as lookup_spec
from klest.rl.primitives import LEVELS, PenaltySpec, Weight

__all__ = [
    "WEIGHTINGS",
    "PenaltyGradient",
    "behaviour_options",
    "configured_spec",
    "penalty_gradient",
    "resolve_placement",
    "weighted_spec",
]

#: weighting variants: the framework's own (None) or one of these
WEIGHTINGS = ("none", "detached", "differentiable")
#: most sequences a sequence-level expectation enumerates
MAX_SEQUENCES = 1 << 18
#: relative tolerance of the verdict (the expectations are exact to ~1e-13)
VERDICT_RTOL = 1e-9


@dataclass(frozen=True)
class PenaltyGradient:
    """Exact expectations of one framework KL term under a ~ μ (see the module notes).

    ``expected``: E[∇_z penalty], shape of the logits. ``true``: ∇_z KL(π‖π_ref) and
    ∇_z KL(π_ref‖π). ``verdict``: which of them ``expected`` equals (to 1e-9 relative), or
    "zero" / "neither". ``relative_bias``: ‖expected − ∇KL(π‖π_ref)‖ / ‖∇KL(π‖π_ref)‖ over
    all entries. ``expected_value``: E_{a~μ}[penalty] per position (what the logged KL
    means). ``covariance_trace``: tr Cov[per-sample gradient] per position (token level;
    per sequence at sequence level). ``kl``: KL(π‖π_ref), KL(π_ref‖π), KL(μ‖π), KL(π‖μ) per
    position.
    """

    framework: str
    kind: str
    placement: str
    weight: str
    expected: np.ndarray
    true: dict[str, np.ndarray]
    verdict: str
    relative_bias: float
    expected_value: np.ndarray
    covariance_trace: np.ndarray
    kl: dict[str, np.ndarray]


def _kls(log_pi: np.ndarray, log_ref: np.ndarray, log_mu: np.ndarray) -> dict[str, np.ndarray]:
    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pa = np.exp(a)
        return np.sum(np.where(pa > 0, pa * (a - b), 0.0), axis=-1)

    return {
        "KL(pi||ref)": kl(log_pi, log_ref),
        "KL(ref||pi)": kl(log_ref, log_pi),
        "KL(mu||pi)": kl(log_mu, log_pi),
        "KL(pi||mu)": kl(log_pi, log_mu),
    }


def _true_gradients(log_pi: np.ndarray, log_ref: np.ndarray) -> dict[str, np.ndarray]:
    pi = np.exp(log_pi)
    c = pi * (log_pi - log_ref)
    return {
        "KL(pi||ref)": c - pi * c.sum(axis=-1, keepdims=True),
        "KL(ref||pi)": pi - np.exp(log_ref),
    }


def _verdict(g: np.ndarray, truths: dict[str, np.ndarray]) -> tuple[str, float]:
    norms = {k: float(np.linalg.norm(t)) for k, t in truths.items()}
    errors = {k: float(np.linalg.norm(g - t)) / norms[k] if norms[k] > 0 else np.inf
              for k, t in truths.items()}  # fmt: skip
    verdict = next((k for k, e in errors.items() if e <= VERDICT_RTOL), "neither")
    if verdict == "neither" and float(np.linalg.norm(g)) <= VERDICT_RTOL * max(norms.values()):
        verdict = "zero"
    return verdict, errors["KL(pi||ref)"]


def weighted_spec(
    spec: PenaltySpec,
    weighting: str | None,
    level: str,
    truncate: float | None,
    mask_range: tuple[float, float] | None,
    weight_order: str,
) -> PenaltySpec:
    """The spec with its weight replaced by a weighting variant (None: the framework's own)."""
    if weighting is None:
        if level != "token" or truncate is not None or mask_range is not None:
            raise ValueError(
                "level=, truncate= and mask_range= build a weighting variant: give weighting= "
                f"too (one of {WEIGHTINGS})"
            )
        return spec
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS} or None, got {weighting!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if weighting == "none":
        if level != "token" or truncate is not None or mask_range is not None:
            raise ValueError("weighting='none' takes no level, truncate or mask_range")
        return replace(spec, weight=None)
    option = spec.weight.option if spec.weight is not None else "behaviour_logprob"
    weight = Weight(
        option,
        gradient=weighting,
        missing="self",
        level=level,
        order=weight_order,
        truncate=truncate,
        mask_range=mask_range,
    )
    return replace(spec, weight=weight)


def resolve_placement(spec: PenaltySpec, placement: str | None, variant: bool = False) -> str:
    """The placement to use (the spec's own by default); a weighting variant needs 'loss'."""
    where = _placement_of(spec, placement)
    if variant and where != "loss":
        raise ValueError(
            f"a weighting variant changes a KL term in the loss; {spec.framework} "
            f"{spec.kind!r} is placed in the {where}"
        )
    return where


def _placement_of(spec: PenaltySpec, placement: str | None) -> str:
    if placement is None:
        first = spec.placement.split(" ")[0]
        return "reward" if spec.detached and first == "loss" else first
    if placement not in ("loss", "reward", "advantages"):
        raise ValueError(f"placement must be 'loss', 'reward' or 'advantages', got {placement!r}")
    if placement == "loss" and spec.detached:
        raise ValueError(f"{spec.framework} {spec.kind!r} is computed without gradient: no loss")
    return placement


def configured_spec(
    framework: str,
    kind: str,
    *,
    placement: str | None,
    weighting: str | None,
    level: str,
    truncate: float | None,
    mask_range: tuple[float, float] | None,
    weight_order: str,
) -> tuple[PenaltySpec, str]:
    """(spec, placement) of one configuration, shared by the exact, Gaussian and Monte Carlo
    routes: the registered spec with its weighting variant, checked to be a supported
    per-token penalty of the sampled tokens."""
    spec = weighted_spec(
        lookup_spec(framework, kind), weighting, level, truncate, mask_range, weight_order
    )
    if spec.unsupported is not None:
        raise NotImplementedError(
            f"{spec.framework}@{spec.version} kind {kind!r}: {spec.unsupported}"
        )
    if spec.raw or spec.estimator == "pi_k1_sum":
        raise ValueError(f"{framework} {kind!r} is not a per-token penalty of sampled tokens")
    return spec, resolve_placement(spec, placement, variant=weighting is not None)


def behaviour_options(
    spec: PenaltySpec, log_mu: np.ndarray, given: bool, options: dict[str, Any]
) -> dict[str, Any]:
    opts = dict(options)
    unknown = sorted(set(opts) - set(spec.options))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {spec.framework}@"
            f"{spec.version} kind {spec.kind!r}; accepted: {', '.join(spec.options) or 'none'}"
        )
    w = spec.weight
    full = {**spec.options, **opts}
    active = w is not None and all(
        full.get(name) is True for name in (w.switch, w.option_switch) if name
    )
    if w is not None and given and active:
        if opts.get(w.option) is not None:
            raise ValueError(f"{w.option}= is filled from behaviour_logits: give one of them")
        opts[w.option] = log_mu
    return opts


def _token_level(spec, placement, lp, ref, log_mu, opts):  # type: ignore[no-untyped-def]
    """(expected, E[f], tr Cov) by enumeration of each position's V actions."""
    pi, mu = np.exp(lp), np.exp(log_mu)
    norm2 = 1.0 - 2.0 * pi + np.sum(pi * pi, axis=-1, keepdims=True)  # ‖e_a − π‖²
    if placement == "loss":
        f, d = evaluate_with_derivative(spec, lp, ref, opts)
        d = d[..., 0]
        md = np.where(mu > 0, mu * d, 0.0)
        expected = md - pi * md.sum(axis=-1, keepdims=True)
        second = np.sum(np.where(mu > 0, mu * d * d, 0.0) * norm2, axis=-1)
    else:  # the value, from the rollout's log-probabilities, through rho * A
        f, _ = evaluate_with_derivative(spec, log_mu, ref, opts)
        pf = np.where(pi > 0, pi * f, 0.0)
        expected = pf - pi * pf.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            second = np.sum(np.where(pi > 0, pi * pi / mu * f * f, 0.0) * norm2, axis=-1)
    value = np.sum(np.where(mu > 0, mu * f, 0.0), axis=-1)
    trace = np.maximum(second - np.sum(expected * expected, axis=-1), 0.0)
    return expected, value, trace


def _sequence_level(spec, placement, lp, ref, log_mu, opts):  # type: ignore[no-untyped-def]
    """Enumerate every sequence of one (T, V) block: the penalty is Σ_t f_t."""
    if placement != "loss":
        raise ValueError("a sequence-level weight applies to a KL term in the loss")
    t_len, v = lp.shape
    if v**t_len > MAX_SEQUENCES:
        raise ValueError(
            f"a sequence-level expectation enumerates V^T = {v}^{t_len} sequences; at most "
            f"{MAX_SEQUENCES} are supported (use fewer positions or a smaller vocabulary)"
        )
    seqs = np.array(list(itertools.product(range(v), repeat=t_len)))  # (N, T)
    pos = np.arange(t_len)
    pick = {k: x[pos, seqs] for k, x in (("lp", lp), ("ref", ref), ("mu", log_mu))}
    seq_opts = {k: (x[pos, seqs] if isinstance(x, np.ndarray) and x.shape == lp.shape else x)
                for k, x in opts.items()}  # fmt: skip
    f, d = evaluate_with_derivative(spec, pick["lp"], pick["ref"], seq_opts, tangents=np.eye(t_len))
    grad_lp = d.sum(axis=-2)  # ∂(Σ_t f_t)/∂logprob_s, (N, T)
    prob = np.exp(pick["mu"].sum(axis=-1))  # μ(sequence)
    pi = np.exp(lp)
    expected = np.zeros_like(lp)
    for s in range(t_len):
        expected[s] = np.bincount(seqs[:, s], weights=prob * grad_lp[:, s], minlength=v)
    expected -= pi * expected.sum(axis=-1, keepdims=True)
    value = np.einsum("n,nt->t", prob, f)
    # ‖G‖² of a sequence: Σ_s (∂P/∂lp_s)² ‖e_{a_s} − π_s‖²
    norm2 = 1.0 - 2.0 * pi[pos, seqs] + np.sum(pi * pi, axis=-1)[None, :]
    second = np.sum(prob * np.sum(grad_lp**2 * norm2, axis=-1))
    trace = np.array(max(second - float(np.sum(expected * expected)), 0.0))
    return expected, value, trace


def penalty_gradient(
    logits: Any,
    ref_logits: Any,
    *,
    framework: str,
    kind: str,
    behaviour_logits: Any = None,
    placement: str | None = None,
    weighting: str | None = None,
    level: str = "token",
    truncate: float | None = None,
    mask_range: tuple[float, float] | None = None,
    weight_order: str = "before_clamp",
    **options: Any,
) -> PenaltyGradient:
    """Exact E_{a~μ}[∇_logits penalty(a)] of a framework's KL term (softmax policies).

    ``framework`` is "name" or "name@version" and ``kind`` one of ``rl.kinds(framework)``;
    ``options`` are the kind's own (``rl.describe(...)["options"]``), except the behaviour
    log-probabilities, which come from ``behaviour_logits``. ``placement`` defaults to the
    spec's. ``weighting`` replaces the framework's importance weight by a variant: "none",
    "detached" or "differentiable" ρ, at ``level`` "token", "sequence_sum" or
    "sequence_mean" (GSPO), truncated at ``truncate`` (TIS), zeroed outside ``mask_range``
    (MIS / IcePop), before or after the output clamp (``weight_order``).

    >>> import numpy as np
    >>> z, z_ref = np.array([0.5, 0.0, -1.0]), np.array([0.0, 0.3, 0.1])
    >>> z_old = np.array([0.2, 0.1, -0.5])
    >>> g = penalty_gradient(z, z_ref, framework="trl", kind="grpo", behaviour_logits=z_old)
    >>> g.verdict  # k3 in the loss, sampled off-policy without correction
    'neither'
    >>> penalty_gradient(z, z_ref, framework="trl", kind="grpo", behaviour_logits=z_old,
    ...                  use_bias_correction_kl=True).verdict
    'KL(pi||ref)'
    """
    spec, where = configured_spec(
        framework, kind, placement=placement, weighting=weighting, level=level,
        truncate=truncate, mask_range=mask_range, weight_order=weight_order,
    )  # fmt: skip
    z = _check_logits("logits", logits)
    z_ref = _check_logits("ref_logits", ref_logits)
    given = behaviour_logits is not None
    z_mu = _check_logits("behaviour_logits", behaviour_logits) if given else z
    if not (z.shape == z_ref.shape == z_mu.shape):
        raise ValueError(
            f"logits, ref_logits and behaviour_logits must have one shape; got {z.shape}, "
            f"{z_ref.shape} and {z_mu.shape}"
        )
    lp, log_mu = log_softmax(z, axis=-1), log_softmax(z_mu, axis=-1)
    log_ref = log_softmax(z_ref, axis=-1)
    anchored = not spec.anchor.startswith("ref_logprob")
    ref = log_mu if anchored else log_ref  # prime-rl's penalty pulls toward μ
    opts = behaviour_options(spec, log_mu, given, options)
    if where == "metric":
        zero = np.zeros_like(lp)
        f, _ = evaluate_with_derivative(spec, lp, ref, opts)
        value = np.sum(np.exp(log_mu) * f, axis=-1)
        expected, trace = zero, np.zeros(lp.shape[:-1])
    else:
        try:
            expected, value, trace = _token_level(spec, where, lp, ref, log_mu, opts)
        except SequenceLevel:
            expected, value, trace = _blocks(spec, where, lp, ref, log_mu, opts)
    true = _true_gradients(lp, ref)
    verdict, bias = _verdict(expected, true)
    return PenaltyGradient(
        framework=f"{spec.framework}@{spec.version}",
        kind=kind,
        placement=where,
        weight="none" if spec.weight is None else spec.weight.describe(),
        expected=expected,
        true=true,
        verdict=verdict,
        relative_bias=bias,
        expected_value=value,
        covariance_trace=trace,
        kl=_kls(lp, ref, log_mu),
    )


def _blocks(spec, where, lp, ref, log_mu, opts):  # type: ignore[no-untyped-def]
    """Sequence-level expectations for each (T, V) block of (..., T, V) logits."""
    if lp.ndim < 2:
        raise ValueError("a sequence-level weight needs logits of shape (..., T, V)")
    lead = lp.shape[:-2]
    expected = np.empty_like(lp)
    value = np.empty(lp.shape[:-1])
    trace = np.empty(lead)
    for idx in np.ndindex(*lead):
        block_opts = {k: (x[idx] if isinstance(x, np.ndarray) and x.shape == lp.shape else x)
                      for k, x in opts.items()}  # fmt: skip
        expected[idx], value[idx], trace[idx] = _sequence_level(
            spec, where, lp[idx], ref[idx], log_mu[idx], block_opts
        )
    return expected, value, trace
