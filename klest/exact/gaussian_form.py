"""The log-ratio of a Gaussian pair as a quadratic form in standard normal variables.

For x ~ q, with q and p two Normals or two MultivariateNormals, the log-ratio
l = log p(x) - log q(x) is a Gaussian quadratic form. Writing x = mu_q + L_q z with
z ~ N(0, I) and diagonalising its quadratic part,

    l = c + sum_i (a_i w_i^2 + b_i w_i),   w ~ N(0, I),

with each coefficient kept to full relative precision at extreme parameters (variance
ratios of 1e-320, covariances one ulp apart). :mod:`klest.exact.gaussian` sums the moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular

from klest._special import exp, expm1_minus, log_ratio, scaled_difference
from klest.distributions.multivariate_normal import MultivariateNormal, cholesky_difference
from klest.distributions.normal import Normal
from klest.errors import NoExactMethodError

__all__ = ["TINY", "GaussianLogRatio", "gaussian_log_ratio", "one_plus_s_lambda"]

#: below this, 1 + s lambda_i (= var_q / var_p at s = 1) and b_i^2 are carried as logarithms:
#: as floats they would be subnormal or 0 (q = N(0, 1e-160), p = N(0, 1): ratio 1e-320)
TINY = 1e-290


@dataclass(frozen=True)
class GaussianLogRatio:
    """l = c + sum_i (a_i w_i^2 + b_i w_i) with w ~ N(0, I): the log-ratio of a Gaussian pair.

    ``lam`` holds lambda_i = -2 a_i and ``ratio`` = 1 + lambda_i, the ratio var_q / var_p along
    direction i, and ``log_ratio`` its logarithm: each is kept to full relative precision, as
    1 + lambda_i loses digits when var_q << var_p (``ratio`` may underflow to 0; ``log_ratio``
    stays exact). ``neg_kl`` = c + sum a_i = E[l] = -KL(q||p), computed without
    cancellation. ``log_b2`` is log b_i^2 where b_i^2 may underflow (else None).
    """

    c: float
    a: np.ndarray
    b: np.ndarray
    lam: np.ndarray
    ratio: np.ndarray
    log_ratio: np.ndarray
    neg_kl: float
    log_b2: np.ndarray | None = None

    @property
    def affine(self) -> bool:
        """True when every a_i is 0 (equal covariances): l ~ N(c, sum b_i^2)."""
        return not np.any(self.a)

    def _inverse_ratio(self) -> np.ndarray:
        with np.errstate(over="ignore", divide="ignore"):  # exp(1381) = inf: its rounding
            return np.where(self.ratio > TINY, 1.0 / self.ratio, np.exp(-self.log_ratio))

    @property
    def max_var_ratio(self) -> float:
        """The largest ratio var_p / var_q along any direction."""
        return float(np.max(self._inverse_ratio()))

    @property
    def min_var_ratio(self) -> float:
        """The smallest ratio var_p / var_q along any direction."""
        return float(np.min(self._inverse_ratio()))

    def one_dimensional(self) -> tuple[float, float, float] | None:
        """(c, a, b) with l = c + a w^2 + b w, w ~ N(0, 1), when l depends on one variable."""
        if self.affine:
            return self.c, 0.0, float(np.sqrt(np.sum(np.square(self.b))))
        if len(self.a) == 1:
            return self.c, float(self.a[0]), float(self.b[0])
        return None


def gaussian_log_ratio(q: Any, p: Any) -> GaussianLogRatio:
    """The quadratic-form representation of log p(x) - log q(x) for x ~ q.

    >>> from klest import Normal
    >>> form = gaussian_log_ratio(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0))
    >>> form.c, form.a.tolist(), form.b.tolist(), form.neg_kl
    (-0.5, [-0.0], [1.0], -0.5)
    """
    log_b2 = normal_log_ratio = None
    if isinstance(q, Normal) and isinstance(p, Normal):
        log_var_ratio = 2.0 * log_ratio(q.scale, p.scale)  # never forms the ratio
        if abs(log_var_ratio) < 0.5:
            rel = (q.scale - p.scale) / p.scale  # sigma_q / sigma_p - 1, without cancellation
            lam = np.array([rel * (2.0 + rel)])  # var_q / var_p - 1
        else:
            lam = np.array([exp(log_var_ratio) - 1.0])
        ratio = np.array([exp(log_var_ratio)])
        delta = np.array([scaled_difference(q.loc, p.loc, p.scale)])
        b = -exp(0.5 * log_var_ratio) * delta if delta[0] else np.zeros(1)
        if delta[0] and math.isfinite(delta[0]):
            log_b2 = np.array([log_var_ratio + 2.0 * math.log(abs(delta[0]))])
        if not (
            np.isfinite(lam[0])
            and np.isfinite(b[0])
            and math.isfinite(float(delta[0]) * float(delta[0]))
        ):
            raise NoExactMethodError(
                f"exact moments for q={q!r}, p={p!r} are out of float64 range: q.scale / "
                f"p.scale = exp({0.5 * log_var_ratio:.6g}) and the shift "
                f"(q.loc - p.loc) / p.scale = {delta[0]:.6g} make the log-ratio's quadratic "
                "form overflow"
            )
        normal_log_ratio = np.array([log_var_ratio])
    elif isinstance(q, MultivariateNormal) and isinstance(p, MultivariateNormal):
        if q.dim != p.dim:
            raise ValueError(
                f"exact moments need q and p of the same dimension, got MultivariateNormal "
                f"of dimension {q.dim} (q) and {p.dim} (p)"
            )
        lq, lp = q.scale_tril, p.scale_tril
        # A = Lp^{-1} Lq = I + E; A'A - I = E + E' + E'E is accurate when q's and p's
        # covariances are close, so the small a_i keep their relative precision.
        e = cholesky_difference(q, p)
        delta = solve_triangular(lp, q.mean() - p.mean(), lower=True)
        if not np.any(e):
            lam, v = np.zeros(q.dim), np.eye(q.dim)
            ratio, at_delta = np.ones(q.dim), delta
        else:
            lam, v = np.linalg.eigh(e + e.T + e.T @ e)
            ratio = 1.0 + lam
            at_delta = delta + e.T @ delta  # A' delta
            if np.min(lam) < -0.5:  # var_q << var_p somewhere: singular values keep 1 + lam
                a_mat = solve_triangular(lp, lq, lower=True)
                _, s, vt = np.linalg.svd(a_mat)
                lam, v, ratio, at_delta = (s - 1.0) * (s + 1.0), vt.T, s * s, a_mat.T @ delta
        b = -(v.T @ at_delta)
    else:
        names = f"q={type(q).__name__}, p={type(p).__name__}"
        if {type(q), type(p)} == {Normal, MultivariateNormal}:
            raise ValueError(
                f"exact moments need q and p on the same space, got {names}; use a "
                "1-dimensional MultivariateNormal for both or Normal for both"
            )
        raise NoExactMethodError(
            f"gaussian_moments needs two Normal or two MultivariateNormal distributions, "
            f"got {names}"
        )
    half_sq = 0.5 * float(delta @ delta)
    with np.errstate(divide="ignore", invalid="ignore"):  # np.where evaluates both sides
        log_ratios = np.where(np.abs(lam) < 0.5, np.log1p(lam), np.log(ratio))
    if normal_log_ratio is not None and ratio[0] < TINY:
        log_ratios = normal_log_ratio  # log(ratio) of a subnormal ratio (or of 0) is not
    c = -half_sq + 0.5 * float(np.sum(log_ratios))
    neg_kl = -half_sq - 0.5 * float(np.sum(expm1_minus(log_ratios)))
    b = np.asarray(b, float)
    return GaussianLogRatio(c, -0.5 * lam, b, lam, ratio, log_ratios, neg_kl, log_b2)


def one_plus_s_lambda(form: GaussianLogRatio, s: float) -> tuple[np.ndarray, np.ndarray]:
    """1 - 2 s a_i = 1 + s lambda_i and its logarithm, each to full relative precision."""
    lam = form.lam
    near = np.abs(lam) <= 0.5
    u0 = np.where(near, 1.0 + s * lam, (1.0 - s) + s * form.ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_u0 = np.where(np.abs(s * lam) < 0.5, np.log1p(s * lam), np.log(np.abs(u0)))
    if s == 1.0:  # u0 = ratio exactly, whose logarithm is exact even where it underflows
        log_u0 = np.where(near, log_u0, form.log_ratio)
    return u0, log_u0
