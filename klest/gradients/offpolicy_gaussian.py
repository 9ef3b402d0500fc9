"""Exact off-policy expectations of a framework's KL term for a 1-D Gaussian policy.

The policy is π = N(m, σ²) with parameters θ = (m, log σ), the reference π_ref and the
behaviour policy μ (π_old or an inference engine; μ = π when ``behaviour`` is omitted) are
Normals too. Samples are drawn x ~ μ (not reparametrised), ρ = π/μ, and the score is
s(x) = ∇_θ log π(x) = ((x − m)/σ², ((x − m)/σ)² − 1). The semantics are those of
:func:`klest.gradients.penalty_gradient` (softmax policies), with sums over actions replaced
by integrals over x:

- **loss** placement: G(x) = D(x) s(x), D = ∂f/∂logprob of the framework's per-token penalty
  f at logprob = log π(x), ref_logprob = log π_ref(x) and the behaviour option
  (``old_logprob``, ``generation_logprob``, ...) = log μ(x), by forward-mode derivatives
  through the spec's own primitives (:mod:`klest.gradients.dual`);
- **reward** / **advantages**: G(x) = ρ(x) f(x) s(x), f evaluated at logprob = log μ(x) (the
  rollout log-probabilities, computed without gradient), the unclipped surrogate ρ·A;
- **metric**: G = 0.

A spec anchored at the behaviour policy (prime-rl's penalty) uses log μ as ref_logprob. Then

    E[G] = ∫ μ(x) G(x) dx,   tr Cov[G] = ∫ μ(x) ‖G(x)‖² dx − ‖E[G]‖²,

by :func:`klest.integrate.quadrature.expect_continuous` (adaptive Gauss–Kronrod, relative
tolerance 1e-11 of ∫|μ G|), split where a clamp, a truncation or a mask bound switches on:
the log-ratio l(x) and the log-weight log ρ(x) are quadratics in x, so those points are
roots of quadratics; where the output clamp meets the (weighted) estimator they are found
numerically. An integral that diverges is inf (or NaN when both tails diverge with opposite
signs), one that float64 cannot evaluate is NaN, never a finite number: the second moment of
a ρ-weighted gradient diverges when σ_π² ≥ 2σ_μ² (μ(x)ρ(x)² = π(x)²/μ(x)), and
``covariance_trace`` is then inf. Where a
weight ρ = e^{log π − log μ} overflows float64 on μ's support, a weight that enters linearly
is integrated in log space; otherwise (an output clamp, TIS, MIS or ``nonfinite_to_zero``
bound it, or a k3 whose e^l overflows) an overflow where μ·G still matters gives NaN, not
an integral around it. Known limit (of the forward-mode derivatives, not of the
quadrature): a differentiable weight times k3 is differentiated as w·k3(l) + w·(1 − e^l),
which loses every digit of its exact sum −w·l once e^l ≫ 1/eps (l ≳ 37 without an input
clamp); the mean is unaffected (μ·w·e^l·eps = π_ref·eps), the second moment can be.

Sign convention: gradients of the quantity minimised (the penalty added to the loss, or
subtracted from the reward). Only token-level weights: one sample is one token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from klest.distributions import Normal
from klest.divergence import kl
from klest.gradients.dual import evaluate_with_derivative
from klest.gradients.gaussian import _scores, gaussian_true_gradient
from klest.gradients.offpolicy import (
    PenaltyGradient,
    _verdict,
    behaviour_options,
    configured_spec,
)
from klest.integrate.quadrature import expect_continuous, level_crossings
from klest.rl.primitives import PenaltySpec

__all__ = ["gaussian_penalty_gradient"]

ArrayFn = Callable[[np.ndarray], np.ndarray]

#: largest finite log: exp overflows float64 above it (a nonfinite_to_zero weight becomes 0)
_LOG_MAX = math.log(np.finfo(np.float64).max)
#: a weight enters the log-space integrand as e^{shift} · (its value at log ρ − shift)
_LOG_SHIFT_ABOVE = 300.0
#: half-width, in μ's standard deviations, of the grid on which clamp crossings are sought
_GRID_HALF_WIDTH = 40.0
_GRID_POINTS = 4001


class _Behaviour:
    """Placeholder for the behaviour option, filled with log μ(x) at each x."""


_FILL = _Behaviour()


def _check_normal(name: str, dist: Any) -> Normal:
    if not isinstance(dist, Normal):
        raise ValueError(f"{name} must be a klest.Normal; got {dist!r}")
    return dist


def _quadratic(a: Normal, b: Normal) -> tuple[float, float, float]:
    """(A, B, C) with log a(x) − log b(x) = A x² + B x + C."""
    va, vb = a.scale**2, b.scale**2
    return (
        0.5 / vb - 0.5 / va,
        a.loc / va - b.loc / vb,
        0.5 * b.loc**2 / vb - 0.5 * a.loc**2 / va + math.log(b.scale) - math.log(a.scale),
    )


def _quadratic_roots(coef: tuple[float, float, float], levels: list[float]) -> list[float]:
    """The real x where A x² + B x + C equals each level (stable quadratic formula)."""
    a, b, c0 = coef
    roots: list[float] = []
    for level in levels:
        c = c0 - level
        if a == 0.0:
            if b != 0.0:
                roots.append(-c / b)
            continue
        disc = b * b - 4.0 * a * c
        if disc < 0.0:
            continue
        q = -0.5 * (b + math.copysign(math.sqrt(disc), b))
        roots.append(q / a)
        if q != 0.0:
            roots.append(c / q)
    return [r for r in roots if math.isfinite(r)]


def _check_token_level(spec: PenaltySpec, options: dict[str, Any]) -> None:
    w = spec.weight
    if w is None:
        return
    if w.level != "token":
        raise ValueError(f"{spec.framework} {spec.kind!r} has a sequence-level weight: token only")
    if w.level_option is not None:
        chosen = options.get(w.level_option, "token")
        if chosen != "token":
            raise ValueError(
                f"{w.level_option}={chosen!r}: a Gaussian policy has one token per sample, "
                "so only 'token' is supported"
            )
    for name in sorted(spec.array_options):
        if options.get(name) is not None:
            raise ValueError(
                f"{name}= is a per-token array, not a function of x: for a Gaussian policy "
                "the behaviour log-probabilities come from behaviour="
            )


class _Penalty:
    """The per-sample penalty f(x), its gradient G(x) and their logarithms, vectorised in x."""

    def __init__(
        self,
        spec: PenaltySpec,
        placement: str,
        policy: Normal,
        anchor: Normal,
        mu: Normal,
        opts: dict[str, Any],
    ) -> None:
        self.spec, self.placement = spec, placement
        self.policy, self.anchor, self.mu = policy, anchor, mu
        self.filled = [k for k, v in opts.items() if v is _FILL]
        self.opts = {k: v for k, v in opts.items() if v is not _FILL}
        self.full = {**spec.options, **self.opts}
        self.input_clamp, self.output_clamp = spec.input_clamp, spec.output_clamp
        if spec.clamp_options:
            self.input_clamp = self.full[spec.clamp_options[0]]
            self.output_clamp = self.full[spec.clamp_options[1]]
        w = spec.weight
        self.weighted = w is not None and bool(self.filled) and placement == "loss"
        # D is linear in w (so e^{-shift} w gives e^{-shift} D) without anything that bounds w
        self.linear = (
            self.weighted
            and w is not None
            and self.output_clamp is None
            and w.truncate is None
            and w.mask_range is None
            and not w.nonfinite_to_zero
            and spec.gradient_of is None
        )

    def _options(self, log_mu: np.ndarray, shift: Any = 0.0) -> dict[str, Any]:
        return {**self.opts, **{k: log_mu + shift for k in self.filled}}

    def logprob(self, x: np.ndarray) -> np.ndarray:
        """The logprob at which f is evaluated: log π (loss, metric) or log μ (reward)."""
        dist = self.mu if self.placement in ("reward", "advantages") else self.policy
        return dist.log_prob(x)

    def _shifted(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(f, ∂f/∂logprob, shift) with f·e^shift and ∂f·e^shift the true values: where a
        weight that enters linearly would overflow, it is evaluated as ρ·e^-shift."""
        at, ref, log_mu = self.logprob(x), self.anchor.log_prob(x), self.mu.log_prob(x)
        shift = np.zeros(np.shape(at))
        if self.linear:
            with np.errstate(invalid="ignore"):
                shift = np.maximum(at - log_mu - _LOG_SHIFT_ABOVE, 0.0)
        f, d = evaluate_with_derivative(self.spec, at, ref, self._options(log_mu, shift))
        return f, d[..., 0], shift

    def value(self, x: np.ndarray) -> np.ndarray:
        f, _, shift = self._shifted(x)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(f == 0.0, 0.0, f * np.exp(shift))

    def log_abs_value(self, x: np.ndarray) -> np.ndarray:
        f, _, shift = self._shifted(x)
        with np.errstate(divide="ignore"):
            return np.log(np.abs(f)) + shift

    def coefficient(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(c, log|c| or None) with G(x) = c(x) s(x)."""
        if self.placement == "loss":
            _, d, shift = self._shifted(x)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                c = np.where(d == 0.0, 0.0, d * np.exp(shift))  # ±inf where it overflows
                return c, (np.log(np.abs(d)) + shift if self.linear else None)
        f, _ = evaluate_with_derivative(
            self.spec, self.mu.log_prob(x), self.anchor.log_prob(x),
            self._options(self.mu.log_prob(x)),
        )  # fmt: skip
        log_rho = self.policy.log_prob(x) - self.mu.log_prob(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.exp(log_rho) * f, log_rho + np.log(np.abs(f))

    def breaks(self) -> np.ndarray:
        """Where a clamp, truncation, mask bound or kink switches on or off."""
        spec, w = self.spec, self.spec.weight
        at = self.mu if self.placement in ("reward", "advantages") else self.policy
        levels = []
        if self.input_clamp is not None:
            levels += [-self.input_clamp, self.input_clamp]
        if spec.estimator == "abs":
            levels.append(0.0)
        points = _quadratic_roots(_quadratic(self.anchor, at), levels)
        if self.weighted and w is not None:
            weight_levels = [_LOG_MAX] if w.nonfinite_to_zero else []
            if w.truncate is not None:
                weight_levels.append(math.log(w.truncate))
            if w.mask_range is not None:
                weight_levels += [math.log(b) for b in w.mask_range if b > 0]
            points += _quadratic_roots(_quadratic(self.policy, self.mu), weight_levels)
        if self.output_clamp is not None:
            points += list(self._output_clamp_crossings(np.array(points)))
        return np.unique(np.asarray(points, dtype=np.float64))

    def _output_clamp_crossings(self, roots: np.ndarray) -> np.ndarray:
        """x where the value the output clamp acts on (w·k or k) reaches ±output_clamp."""
        spec, oc = self.spec, self.output_clamp
        opts = dict(self.opts)
        if spec.clamp_options:
            opts[spec.clamp_options[1]] = None
            inner = spec
        else:
            inner = replace(spec, output_clamp=None)
        if spec.weight is not None and spec.weight.order == "after_clamp":
            inner = replace(inner, weight=None)
            opts = {k: v for k, v in opts.items() if k in inner.options}
        filled = [k for k in self.filled if k in inner.options]

        def pre_clamp(x: np.ndarray) -> np.ndarray:
            log_mu = self.mu.log_prob(x)
            o = {**opts, **{k: log_mu for k in filled}}
            f, _ = evaluate_with_derivative(inner, self.logprob(x), self.anchor.log_prob(x), o)
            return f

        half = _GRID_HALF_WIDTH * self.mu.scale
        grid = np.linspace(self.mu.loc - half, self.mu.loc + half, _GRID_POINTS)
        grid = np.unique(np.concatenate([grid, roots[np.abs(roots - self.mu.loc) < half]]))
        return level_crossings(pre_clamp, grid, [-oc, oc])


def _integral(mu: Normal, g: ArrayFn, log_abs_g: ArrayFn | None, breaks: np.ndarray) -> float:
    """E_μ[g]: ±inf (NaN for opposite signs) when it diverges, NaN when float64 cannot
    evaluate it (g overflows where μ still has mass: a finite integral is not inf)."""
    res = expect_continuous(mu, g, log_abs_g=log_abs_g, breaks=tuple(breaks))
    if not res.finite and "not integrable" not in res.reason:
        return math.nan
    return float(res.value)


def _gradient_moments(model: _Penalty, breaks: np.ndarray) -> tuple[np.ndarray, float]:
    """(E[G], E‖G‖²) under μ."""
    policy = model.policy

    def product(x: np.ndarray, power: int, which: int | None) -> tuple[np.ndarray, np.ndarray]:
        c, log_c = model.coefficient(x)
        s1, s2 = _scores(x, policy)
        weight = s1 * s1 + s2 * s2 if which is None else (s1, s2)[which]
        with np.errstate(all="ignore"):
            value = np.where(c == 0.0, 0.0, c**power * weight)  # 0 even where c·s is inf·0
            if log_c is None:
                log_c = np.log(np.abs(c))
            log_abs = np.where(c == 0.0, -np.inf, power * log_c + np.log(np.abs(weight)))
        return value, log_abs

    linear = model.placement != "loss" or model.linear
    expected = np.empty(2)
    for i in range(2):
        expected[i] = _integral(
            model.mu,
            lambda x, i=i: product(x, 1, i)[0],
            (lambda x, i=i: product(x, 1, i)[1]) if linear else None,
            breaks,
        )
    second = _integral(
        model.mu,
        lambda x: product(x, 2, None)[0],
        (lambda x: product(x, 2, None)[1]) if linear else None,
        breaks,
    )
    return expected, second


def gaussian_penalty_gradient(
    policy: Normal,
    ref: Normal,
    *,
    framework: str,
    kind: str,
    behaviour: Normal | None = None,
    placement: str | None = None,
    weighting: str | None = None,
    level: str = "token",
    truncate: float | None = None,
    mask_range: tuple[float, float] | None = None,
    weight_order: str = "before_clamp",
    **options: Any,
) -> PenaltyGradient:
    """Exact E_{x~μ}[∇_(m, log σ) penalty(x)] of a framework's KL term, Gaussian policy.

    As :func:`klest.gradients.penalty_gradient` with π = ``policy``, π_ref = ``ref`` and
    μ = ``behaviour`` (μ = π when None), all :class:`klest.Normal`; ``expected`` and each of
    ``true`` have shape (2,) (the gradient with respect to (loc, log scale));
    ``expected_value`` (E_μ[penalty]) and ``covariance_trace`` are 0-d arrays, the trace inf
    when the second moment diverges; ``kl`` holds KL(π‖π_ref), KL(π_ref‖π), KL(μ‖π) and
    KL(π‖μ) (π_ref is μ for a spec anchored at the behaviour policy). Only
    ``level="token"``: one sample is one token.

    >>> from klest import Normal
    >>> pi, ref = Normal(loc=0.2, scale=1.1), Normal(loc=0.0, scale=1.0)
    >>> mu = Normal(loc=0.1, scale=1.0)
    >>> gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu).verdict
    'neither'
    >>> gaussian_penalty_gradient(pi, ref, framework="trl", kind="grpo", behaviour=mu,
    ...                           use_bias_correction_kl=True).verdict
    'KL(pi||ref)'
    """
    policy = _check_normal("policy", policy)
    ref = _check_normal("ref", ref)
    given = behaviour is not None
    mu = _check_normal("behaviour", behaviour) if given else policy
    if level != "token":
        raise ValueError(
            f"level={level!r}: a Gaussian policy has one token per sample, so only "
            "token-level weights are supported (use penalty_gradient for sequences)"
        )
    spec, where = configured_spec(
        framework, kind, placement=placement, weighting=weighting, level=level,
        truncate=truncate, mask_range=mask_range, weight_order=weight_order,
    )  # fmt: skip
    _check_token_level(spec, options)
    opts = behaviour_options(spec, _FILL, given, options)  # type: ignore[arg-type]
    anchored = not spec.anchor.startswith("ref_logprob")
    anchor = mu if anchored else ref  # prime-rl's penalty pulls toward μ
    model = _Penalty(spec, where, policy, anchor, mu, opts)
    breaks = model.breaks()
    value = _integral(mu, model.value, model.log_abs_value if model.linear else None, breaks)
    if where == "metric":
        expected, trace = np.zeros(2), 0.0
    else:
        expected, second = _gradient_moments(model, breaks)
        if np.all(np.isfinite(expected)) and math.isfinite(second):
            trace = max(second - float(expected @ expected), 0.0)
        else:  # E‖G‖² ≥ ‖E G‖²: it diverges with the mean, and is unknown if either is
            trace = math.inf if second == math.inf else math.nan
    true = {
        "KL(pi||ref)": gaussian_true_gradient(policy, anchor, direction="KL(pi||ref)"),
        "KL(ref||pi)": gaussian_true_gradient(policy, anchor, direction="KL(ref||pi)"),
    }
    verdict, bias = _verdict(expected, true)
    kls = {
        "KL(pi||ref)": kl(policy, anchor),
        "KL(ref||pi)": kl(anchor, policy),
        "KL(mu||pi)": kl(mu, policy),
        "KL(pi||mu)": kl(policy, mu),
    }
    return PenaltyGradient(
        framework=f"{spec.framework}@{spec.version}",
        kind=kind,
        placement=where,
        weight="none" if spec.weight is None else spec.weight.describe(),
        expected=expected,
        true=true,
        verdict=verdict,
        relative_bias=bias,
        expected_value=np.asarray(value, dtype=np.float64),
        covariance_trace=np.asarray(trace, dtype=np.float64),
        kl={k: np.asarray(v, dtype=np.float64) for k, v in kls.items()},
    )
