"""Exact estimator moments under x ~ q: closed form, enumeration or quadrature — no sampling.

``exact_moments(q, p, "k3")`` returns the estimator's mean and variance, the true value of
its target and the bias. Gaussian pairs (Normal, MultivariateNormal) use the moment
generating function of the Gaussian quadratic form that the log-ratio is; finite discrete
pairs are enumerated; countable ones are summed with a tail bound; other 1-D continuous pairs
use adaptive quadrature with a tail analysis that reports a divergent moment as ``inf`` (with
the reason) instead of the large finite number a truncated integral would give.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest import estimators as _estimators
from klest._special import as_float_or_array
from klest.distributions.affine import standardized
from klest.distributions.base import Distribution
from klest.distributions.log_ratio import log_ratio_function
from klest.divergence.registry import METHODS, check_same_space, kl_result
from klest.errors import NoExactMethodError
from klest.exact.gaussian import gaussian_moments
from klest.integrate import Expectation, expect

__all__ = ["ExactMoments", "NoExactMethodError", "exact_moments"]


@dataclass(frozen=True)
class ExactMoments:
    """Exact moments of one estimator under x ~ q.

    ``mean`` and ``var`` are E_q[k] and Var_q[k]; ``truth`` is the estimator's target
    (KL(q||p), KL(p||q) or D_f(p||q)); ``method`` says how the moments were computed;
    ``abs_error`` bounds the numerical error of ``mean`` (0 for closed forms); ``note``
    explains any infinite value.
    """

    estimator: str
    target: str
    mean: float | np.ndarray
    var: float | np.ndarray
    truth: float | np.ndarray
    method: str
    abs_error: float | np.ndarray = 0.0
    note: str = ""

    @property
    def std(self) -> float | np.ndarray:
        return as_float_or_array(np.sqrt(self.var))

    @property
    def bias(self) -> float | np.ndarray:
        with np.errstate(invalid="ignore"):
            return as_float_or_array(np.subtract(self.mean, self.truth))

    @property
    def rel_bias(self) -> float | np.ndarray:
        """bias / truth (Schulman's "bias/true")."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return as_float_or_array(np.divide(self.bias, self.truth))

    @property
    def rel_std(self) -> float | np.ndarray:
        """std / truth (Schulman's "stdev/true")."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return as_float_or_array(np.divide(self.std, self.truth))

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of every field and derived quantity (scalars only)."""
        return {
            "estimator": self.estimator,
            "target": self.target,
            "exact_mean": self.mean,
            "exact_var": self.var,
            "exact_std": self.std,
            "truth": self.truth,
            "exact_bias": self.bias,
            "exact_rel_bias": self.rel_bias,
            "exact_rel_std": self.rel_std,
            "exact_method": self.method,
            "exact_note": self.note,
        }


def _is_gaussian(d: Distribution) -> bool:
    return d.family in ("normal", "multivariate_normal")


def _numerical_expectation(
    q: Distribution,
    p: Distribution,
    est: _estimators.Estimator,
    g: Callable[[np.ndarray], np.ndarray],
    log_abs_g: Callable[[np.ndarray], np.ndarray] | None,
) -> Expectation:
    # split where p's density has kinks and where the log-ratio crosses the estimator's kinks
    level_sets = (log_ratio_function(q, p), est.kinks) if est.kinks else None
    return expect(q, g, log_abs_g=log_abs_g, breaks=p.breakpoints(), level_sets=level_sets)


#: quadrature follows q's density from its quartiles out to |x| = 1e150 scales: p's bulk
#: must lie within this many of q's scales (and be no narrower than 1/this of it)
_REACH = 1e100


def _quartiles(d: Distribution) -> np.ndarray | None:
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(d.quantile(np.array([0.25, 0.5, 0.75])), dtype=np.float64)
    except (NotImplementedError, ValueError, OverflowError, ZeroDivisionError):
        return None
    return out if np.all(np.isfinite(out)) else None


def _check_quadrature_reach(q: Distribution, p: Distribution, est: _estimators.Estimator) -> None:
    """NoExactMethodError where quadrature under q would return a wrong finite number.

    * Estimators that grow like a power of r = p/q (rev_kl, pearson_chi2, ...) weight x
      like p does: with p's bulk 1e300 of q's scales away, or 1e-300 of q's scale wide
      (StudentT(scale=1e300) vs StudentT(scale=1)), no tail walk or grid of q finds it.
    * A log-ratio whose spread over q's bulk is below the resolution of its value
      (N(0, 1) vs Laplace(loc=1e20): l = -1e20 + x + ..., the ulp of 1e20 is 16384) keeps
      no digit of any variance.
    """
    qq, pq = _quartiles(q), _quartiles(p)
    if qq is None:
        return
    q_scale = qq[2] - qq[0]
    if pq is not None and q_scale > 0:
        with np.errstate(over="ignore", invalid="ignore"):
            far = float(np.abs(est(np.array([800.0])))[0])
            p_scale, offset = pq[2] - pq[0], abs(pq[1] - qq[1])
            out = not (p_scale * _REACH > q_scale and max(p_scale, offset) < _REACH * q_scale)
        if out and not far < 1e300:
            raise NoExactMethodError(
                f"no exact method for {est.name!r} with q={q!r}, p={p!r} (in q's units): "
                f"{est.name} grows like a power of r = p/q, whose mass is out of the "
                "quadrature's reach (klest.simulate gives Monte Carlo estimates)"
            )
    with np.errstate(all="ignore"):
        values = np.asarray(log_ratio_function(q, p)(qq), dtype=np.float64)
        spread = float(np.max(values) - np.min(values))
    level = abs(float(values[1]))
    if math.isfinite(level) and level >= 1e10 and spread <= 1e6 * np.finfo(float).eps * level:
        raise NoExactMethodError(
            f"no exact moments for {est.name!r} with q={q!r}, p={p!r} (in q's units): "
            f"the log-ratio's spread over q's quartiles ({spread:.3g}) is below the float64 "
            f"resolution of its value ({values[1]:.6g})"
        )


def _numerical_moments(
    q: Distribution, p: Distribution, est: _estimators.Estimator
) -> tuple[Any, Any, str, Any, str]:
    """(mean, var, method, abs_error, note) by enumeration or quadrature, in two passes."""
    if not p.support.contains(q.support) and not q.batch_shape:
        # q puts mass where p has none: log r = -inf there. Estimators that are infinite at
        # l = -inf (k1, k2, k3, abs) have an infinite mean; the others stay finite.
        at_zero_ratio = float(est(np.array([-np.inf]))[0])
        if math.isinf(at_zero_ratio):
            method = "enumeration" if q.discrete else "quadrature"
            note = (
                f"q puts mass outside p's support ({q.support.describe()} is not inside "
                f"{p.support.describe()}): log r = -inf there and {est.name} = "
                f"{at_zero_ratio:g}, so its mean and variance are infinite"
            )
            return at_zero_ratio, math.inf, method, 0.0, note
    if not q.discrete:
        q, p = standardized(q, p)  # the log-ratio's law is unchanged; quadrature needs it
        _check_quadrature_reach(q, p, est)
    log_ratio = log_ratio_function(q, p)

    def g(x: np.ndarray) -> np.ndarray:
        return est(log_ratio(x))

    def log_abs_g(x: np.ndarray) -> np.ndarray:
        return est.log_abs(log_ratio(x))

    first = _numerical_expectation(q, p, est, g, log_abs_g)
    if not first.finite:
        return first.value, math.inf, first.method, first.abs_error, first.reason
    mean = first.value

    def centred_sq(x: np.ndarray) -> np.ndarray:
        return np.square(g(x) - mean)

    def log_abs_centred_sq(x: np.ndarray) -> np.ndarray:
        # Where g overflows, |g - mean| = |g| to double precision.
        value = g(x)
        with np.errstate(divide="ignore"):
            out = 2.0 * np.log(np.abs(value - mean))
        return np.where(np.isinf(value), 2.0 * log_abs_g(x), out)

    second = _numerical_expectation(q, p, est, centred_sq, log_abs_centred_sq)
    note = "" if second.finite else f"variance diverges: {second.reason}"
    return mean, second.value, first.method, first.abs_error, note


def _truth(q: Distribution, p: Distribution, est: _estimators.Estimator) -> Any:
    target = est.target
    if target.kind == "kl_qp":
        return kl_result(q, p).value
    if target.kind == "kl_pq":
        return kl_result(p, q).value
    # f-divergence D_f(p||q) = E_q[f(r)]: the exact mean of f(r) itself.
    f_est = _estimators.Estimator(
        name=f"f[{est.name}]",
        fn=target.f_of_log_ratio,
        target=target,
        unbiased=True,
        nonnegative=True,
        source="target of " + est.name,
        formula="f(r)",
        terms=target.f_terms,
        log_abs_fn=est.log_abs_fn,
        kinks=est.kinks,
    )
    truth = _moments(q, p, f_est, need_var=False)[0]
    if q.support.contains(p.support) or p.batch_shape or q.batch_shape:
        return truth
    # p has mass outside q's support, which E_q[f(r)] cannot see: that mass is
    # 1 - E_q[r], and each unit of it adds lim f(t)/t to D_f(p||q).
    ratio = _estimators.Estimator(
        name="r", fn=np.exp, target=target, unbiased=True, nonnegative=True,
        source="likelihood ratio", formula="r", terms=((1.0, 0, 1.0),),
    )  # fmt: skip
    missing = 1.0 - float(_moments(q, p, ratio, need_var=False)[0])
    if missing <= 1e-12:
        return truth
    return truth + (math.inf if math.isinf(target.f_slope_at_infinity) else
                    target.f_slope_at_infinity * missing)  # fmt: skip


def _moments(
    q: Distribution,
    p: Distribution,
    est: _estimators.Estimator,
    method: str = "auto",
    need_var: bool = True,
) -> tuple[Any, Any, str, Any, str]:
    numerical = None
    if q.support.dim == 1 and not q.event_shape and q.discrete == p.discrete:
        numerical = "enumeration" if q.discrete else "quadrature"
    gaussian = _is_gaussian(q) and _is_gaussian(p)
    if gaussian and method in ("auto", "closed_form"):
        # closed form when the estimator has one, else quadrature along the log-ratio
        result = gaussian_moments(q, p, est, need_var=need_var)
        if method == "auto" or result[2] == "closed_form":
            return result
    elif method == "auto" and numerical is not None:
        return _numerical_moments(q, p, est)
    if method == numerical:
        return _numerical_moments(q, p, est)
    raise NoExactMethodError(
        f"no exact method {method!r} for the moments of {est.name!r} with "
        f"q={type(q).__name__}, p={type(p).__name__}"
        + ("; try method='auto'" if method != "auto" else "")
        + " (klest.simulate gives Monte Carlo estimates)"
    )


def exact_moments(
    q: Distribution, p: Distribution, estimator: str | Any, method: str = "auto"
) -> ExactMoments:
    """Exact mean, variance, truth and bias of ``estimator`` for x ~ q (no sampling).

    >>> from klest import Normal
    >>> m = exact_moments(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0), "k2")
    >>> round(m.rel_bias, 6), round(m.rel_std, 6)
    (0.25, 1.732051)
    >>> m.method
    'closed_form'
    """
    est = _estimators.get(estimator)
    if method not in METHODS:
        raise ValueError(f"unknown exact method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(q, Distribution) or not isinstance(p, Distribution):
        raise TypeError(
            f"exact_moments needs two klest distributions, got "
            f"{type(q).__name__} and {type(p).__name__}"
        )
    check_same_space(q, p, "exact moments are")
    mean, var, used, abs_error, note = _moments(q, p, est, method)
    truth = _truth(q, p, est)
    return ExactMoments(
        estimator=est.name,
        target=est.target.label,
        mean=mean,
        var=var,
        truth=truth,
        method=used,
        abs_error=abs_error,
        note=note,
    )


def exact_frame(q: Distribution, p: Distribution, estimators: list[str]) -> Any:
    """A tidy pandas DataFrame of :func:`exact_moments`, one row per estimator.

    >>> from klest import Normal
    >>> df = exact_frame(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0), ["k1", "k3"])
    >>> print(df[["estimator", "exact_rel_bias", "exact_rel_std"]].round(3).to_string(index=False))
    estimator  exact_rel_bias  exact_rel_std
           k1             0.0          2.000
           k3             0.0          1.695
    """
    import pandas as pd

    return pd.DataFrame([exact_moments(q, p, name).to_dict() for name in estimators])
