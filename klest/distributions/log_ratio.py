"""log p(x) - log q(x) as a fast vectorised function of the draws, specialised by pair.

Gaussian pairs get the log-ratio as one polynomial in x instead of two log-densities and a
subtraction, and :func:`sample_log_ratio` draws it straight from the compiled normal sampler
(the engine's path: x is never written). Pairs of one family (Gamma, Beta, StudentT,
Laplace, Exponential, LogNormal, GaussianMixture, MultivariateNormal) get the difference in
closed form: each log, log1p or exp once per draw, the constants of both sides folded into
one; log and log1p are klest's own (``klest.native.log`` / ``log1p``: compiled, within 1 ulp,
the same bits on every CPU and NumPy build). Every specialisation is checked against the
generic ``p.log_prob(x) - q.log_prob(x)`` in the tests (tests/test_log_ratio_pairs.py): it
agrees within 8 eps (|log p(x)| + |log q(x)| + 1) (the generic difference's own rounding is
of that order), and it *is* the generic difference wherever x is outside the range where
the closed form is valid (the support's edges: x = 0, a Beta draw of 0 or 1, inf, NaN) or
where it is not finite. Only parameters of magnitude within [1e-50, 1e50] (locations may
be 0) are specialised, so that no closed-form term overflows for |x| < 1e50; others take
the generic difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from klest.distributions.base import Distribution
from klest.distributions.beta import Beta
from klest.distributions.categorical import Categorical
from klest.distributions.exponential import Exponential
from klest.distributions.gamma import Gamma
from klest.distributions.laplace import Laplace
from klest.distributions.lognormal import LogNormal
from klest.distributions.mixture import GaussianMixture, mixture_log_ratio
from klest.distributions.multivariate_normal import (
    MultivariateNormal,
    mvn_log_ratio,
    sample_mvn_log_ratio,
)
from klest.distributions.normal import Normal
from klest.distributions.student_t import StudentT
from klest.native import log as native_log
from klest.native import log1p as native_log1p
from klest.native import quadratic_in_place, scaled_normal
from klest.native.checks import family_is_compiled

__all__ = ["log_ratio_function", "sample_log_ratio"]

LogRatio = Callable[..., np.ndarray]


def _generic(q: Distribution, p: Distribution) -> LogRatio:
    def log_ratio(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            lr = np.asarray(p.log_prob(x), dtype=np.float64)
            lr = lr - q.log_prob(x)
        # a point outside both supports gives -inf - (-inf) = nan; q never draws it, but
        # make the convention explicit: no mass under q, ratio 0
        return lr

    return log_ratio


def _normal_normal_coefficients(q: Normal, p: Normal) -> tuple[float, float, float]:
    """(a, b, c) with log p(x) - log q(x) = a x^2 + b x + c."""
    a = 0.5 / q.scale**2 - 0.5 / p.scale**2
    b = p.loc / p.scale**2 - q.loc / q.scale**2
    c = 0.5 * (q.loc / q.scale) ** 2 - 0.5 * (p.loc / p.scale) ** 2 + math.log(q.scale / p.scale)
    return a, b, c


def _standardized_coefficients(q: Normal, p: Normal) -> tuple[float, float, float]:
    """(a, b, c) with log p(x) - log q(x) = a z^2 + b z + c for x = q.loc + q.scale z.

    With d = (q.loc - p.loc)/p.scale and rho = q.scale/p.scale (from logarithms: neither
    ratio is formed where it would overflow): a = (1 - rho)(1 + rho)/2, b = -d rho and
    c = log rho - d^2/2. Terms beyond the float64 range are +-inf, their correct rounding.
    """
    log_rho = math.log(q.scale) - math.log(p.scale)
    rho = math.exp(log_rho) if log_rho < 709.0 else math.inf
    diff = q.loc - p.loc  # inf only when |q.loc - p.loc| exceeds the float64 range
    d = diff / p.scale if math.isfinite(diff) else q.loc / p.scale - p.loc / p.scale
    a = 0.5 * (1.0 - rho) * (1.0 + rho)
    b = -d * rho if d else 0.0
    return a, b, log_rho - 0.5 * d * d


#: use the x-polynomial (the compiled fused path) only while its terms exceed the
#: standardized polynomial's by less than this factor (digits lost to cancellation)
_CONDITIONING = 1e3


def _x_polynomial_is_safe(q: Normal, p: Normal) -> bool:
    """True when a x^2 + b x + c is finite and loses at most ~3 digits to cancellation.

    It is not for locations far from 0 in units of the scales (q = N(1e20, 1): c = 5e39
    cancels against b x) nor for scale ratios whose squares overflow (q.scale = 1e-160).
    Typical parameters always take the x-polynomial, so their streams are unchanged.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        try:
            a, b, c = _normal_normal_coefficients(q, p)
        except (OverflowError, ZeroDivisionError, ValueError):
            return False
        if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
            return False
        za, zb, zc = _standardized_coefficients(q, p)
        x = abs(q.loc) + 10.0 * q.scale
        size = abs(a) * x * x + abs(b) * x + abs(c)
        standard = abs(za) * 100.0 + abs(zb) * 10.0 + abs(zc)
        return math.isfinite(size) and size <= _CONDITIONING * (standard + 1.0)


def _normal_normal(q: Normal, p: Normal) -> LogRatio:
    if not _x_polynomial_is_safe(q, p):
        coefficients = _standardized_coefficients(q, p)
        loc, scale = q.loc, q.scale

        def standardized(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                diff = x - loc
                z = np.where(np.isfinite(diff), diff / scale, x / scale - loc / scale)
            return _quadratic_no_warnings(z, *coefficients)

        return standardized
    coefficients = _normal_normal_coefficients(q, p)

    def quadratic(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        # ((x * a) + b) * x + c, or x * b + c when a == 0 (equal scales)
        return quadratic_in_place(x if overwrite else np.array(x, dtype=np.float64), *coefficients)

    return quadratic


def _quadratic_no_warnings(z: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """quadratic_in_place where a coefficient may be +-inf (z = 0 then gives c, not NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = quadratic_in_place(np.array(z, dtype=np.float64), a, b, c)
    if not (math.isfinite(a) and math.isfinite(b)):
        out = np.where(z == 0.0, c, out)
    return out


def sample_log_ratio(
    q: Distribution, p: Distribution, rng: np.random.Generator, size: int
) -> np.ndarray:
    """log p(x) - log q(x) for ``size`` draws x ~ q from ``rng``.

    Bit for bit ``log_ratio_function(q, p)(q.sample(rng, size))``; for a pair of Normals the
    draws and the log-ratio come out of one compiled loop, and x is never written. (At
    extreme Normal parameters, where the polynomial in x would overflow or cancel, the
    log-ratio is the polynomial in the standard normal draw z, x = loc + scale z: the same
    law, computed without forming x.) A pair of MultivariateNormals is the exception to
    "bit for bit": its log-ratio comes from the standard normal rows z that ``q.sample``
    draws (the same rows, the same generator state after), x = m + L z never formed, so it
    agrees with the function of x within the module's bound, not bit for bit.

    >>> q, p = Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=2.0)
    >>> fused = sample_log_ratio(q, p, np.random.default_rng(3), 10_000)
    >>> plain = log_ratio_function(q, p)(q.sample(np.random.default_rng(3), 10_000))
    >>> bool(np.array_equal(fused, plain))
    True
    """
    fused = fused_normal_parameters(q, p)  # the engine's one-pass route takes the same one
    if fused is not None:
        scale, loc, coefficients = fused
        return scaled_normal(rng, size, scale, loc, quadratic=coefficients)
    if type(q) is Normal and type(p) is Normal:
        # extreme parameters: the log-ratio as a polynomial in the standard normal draw
        return _quadratic_no_warnings(
            scaled_normal(rng, size, 1.0, 0.0), *_standardized_coefficients(q, p)
        )
    if _unbatched_categoricals(q, p):
        # log p[i] - log q[i], looked up by the inverse CDF's index in the same pass
        return q.inverse_cdf(rng.random(size), table=_categorical_log_ratios(q, p))
    if type(q) is MultivariateNormal and type(p) is MultivariateNormal and q.dim == p.dim:
        # from the standard normal rows z alone, chunk by chunk (x = m + L z never formed)
        return sample_mvn_log_ratio(q, p, rng, size)
    return log_ratio_function(q, p)(q.sample(rng, size), overwrite=True)


def _unbatched_categoricals(q: Distribution, p: Distribution) -> bool:
    return (
        type(q) is Categorical
        and type(p) is Categorical
        and not q.batch_shape
        and not p.batch_shape
        and q.num_categories == p.num_categories
    )


def categorical_tables(
    q: Distribution, p: Distribution
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(cdf, guide, pairs) of q's inverse CDF and of log p - log q with its expm1 per category
    (``Categorical.log_ratio_pairs``), for the engine's compiled Categorical pass; None
    unless q and p are unbatched Categoricals over the same categories (the pass draws
    :func:`sample_log_ratio`'s stream: the same uniforms, categories and log-ratios)."""
    if not _unbatched_categoricals(q, p):
        return None
    assert isinstance(q, Categorical) and isinstance(p, Categorical)
    return q._cdf, q._guide, q.log_ratio_pairs(p)


def _categorical_log_ratios(q: Categorical, p: Categorical) -> np.ndarray:
    """log p[i] - log q[i] for every category, as p.log_prob(i) - q.log_prob(i) gives it
    (kept by q for its last p: the engine asks for it once per block)."""
    return q.log_ratio_table(p)


def log_ratio_function(q: Distribution, p: Distribution) -> LogRatio:
    """A function x -> log p(x) - log q(x) for draws x of q.

    ``f(x, overwrite=True)`` may reuse the memory of ``x`` (the engine's draws are scratch).

    >>> import numpy as np
    >>> f = log_ratio_function(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0))
    >>> f(np.array([0.0, 0.5, 1.0]))
    array([-0.5,  0. ,  0.5])
    """
    if type(q) is Normal and type(p) is Normal:
        return _normal_normal(q, p)
    if type(q) is type(p) and type(q) in _PAIRS:
        specialised = _PAIRS[type(q)](q, p)
        if specialised is not None:
            return specialised
    return _generic(q, p)


def fused_normal_parameters(
    q: Distribution, p: Distribution
) -> tuple[float, float, tuple[float, float, float]] | None:
    """(scale, loc, (a, b, c)) when :func:`sample_log_ratio` of the pair is the compiled
    sampler's fused Gaussian log-ratio ``scaled_normal(rng, m, scale, loc, quadratic=(a, b,
    c))``; None for any other pair (the engine then samples the log-ratio first).

    >>> fused_normal_parameters(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0))
    (1.0, 0.0, (0.0, 1.0, -0.5))
    """
    if type(q) is Normal and type(p) is Normal and _x_polynomial_is_safe(q, p):
        return q.scale, q.loc, _normal_normal_coefficients(q, p)
    return None


# ---- pairs of one family: closed-form differences ---------------------------------------

#: parameters of magnitude within these bounds (or 0) are specialised, for draws |x| < _BIG:
#: no closed-form term ((x - m)² / s², rate x, ...) overflows there
_TINY, _BIG = 1e-50, 1e50


def _tame(*values: Any) -> bool:
    flat = np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in values])
    size = np.abs(flat)
    return bool(np.all((flat == 0.0) | ((size >= _TINY) & (size <= _BIG))))


def _guarded(
    q: Distribution,
    p: Distribution,
    fast: Callable[[np.ndarray], np.ndarray],
    lo: float,
    hi: float = _BIG,
) -> LogRatio:
    """``fast`` where lo < x < hi and its value is finite, the generic difference elsewhere.

    ``fast(x)`` takes a 1-D array and never writes it. A sum per call (and a min or max
    where the bound is finite) decides; only a call with a draw outside (lo, hi) or a
    non-finite value pays for masks and the generic difference (of those draws alone). An
    infinite bound means that fast's value is not finite beyond the support's edge (a log of
    x <= 0) or that the support is the real line, where fast is finite exactly where the
    generic difference is.
    """
    generic = _generic(q, p)

    def log_ratio(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        flat = x.reshape(-1)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if flat.size == 0:
                return fast(flat).reshape(x.shape)
            # (lo, hi) = (-inf, inf): fast's own non-finite values flag every bad draw
            if (lo == -math.inf or lo < flat.min()) and (hi == math.inf or flat.max() < hi):
                out = fast(flat)  # (a NaN fails the comparisons, or makes the sum NaN)
                if math.isfinite(float(np.add.reduce(out))):
                    return out.reshape(x.shape)[()]
            safe = (flat > lo) & (flat < hi)
            out = np.full(flat.shape, np.nan)
            if safe.any():
                out[safe] = fast(flat[safe])
            need = ~np.isfinite(out)  # outside (lo, hi), or not finite there
            if need.any():
                out[need] = generic(flat[need])
            return out.reshape(x.shape)[()]

    return log_ratio


def _log(x: np.ndarray) -> np.ndarray:
    """log x into a new array, by klest's compiled log (``klest.native.log``: within 1 ulp,
    the same bits on every CPU and NumPy build; np.log is vectorised only with AVX-512)."""
    return native_log(np.ascontiguousarray(x), np.empty(x.shape))


def _sum_plus(terms: list[np.ndarray], const: float, shape: tuple[int, ...]) -> np.ndarray:
    """terms[0] + terms[1] + ... + const, into the first term's memory."""
    if not terms:
        return np.full(shape, const)
    out = terms[0]
    for term in terms[1:]:
        out += term
    out += const
    return out


def _gamma_gamma(q: Gamma, p: Gamma) -> LogRatio | None:
    if not _tame(q.shape, q.rate, p.shape, p.rate):
        return None
    # (a_p - a_q) log x - (b_p - b_q) x + const
    log_coefficient, slope = p.shape - q.shape, q.rate - p.rate
    const = float(
        p.shape * math.log(p.rate) - special.gammaln(p.shape)
        - (q.shape * math.log(q.rate) - special.gammaln(q.shape))
    )  # fmt: skip

    def fast(x: np.ndarray) -> np.ndarray:
        if log_coefficient == 0.0:
            out = x * slope
        else:
            out = _log(x)
            out *= log_coefficient
            if slope != 0.0:
                out += x * slope
        out += const
        return out

    # log x flags x <= 0 itself (-inf, or NaN); without it, x <= 0 is excluded by lo = 0
    return _guarded(q, p, fast, -math.inf if log_coefficient else 0.0, _BIG)


def _beta_beta(q: Beta, p: Beta) -> LogRatio | None:
    if not _tame(q.alpha, q.beta, p.alpha, p.beta):
        return None
    # (alpha_p - alpha_q) log x + (beta_p - beta_q) log1p(-x) + const, on 0 < x < 1
    a, b = p.alpha - q.alpha, p.beta - q.beta
    const = float(special.betaln(q.alpha, q.beta) - special.betaln(p.alpha, p.beta))

    def fast(x: np.ndarray) -> np.ndarray:
        terms = []
        if a != 0.0:
            term = _log(x)
            term *= a
            terms.append(term)
        if b != 0.0:
            term = np.negative(x)
            native_log1p(term, term)
            term *= b
            terms.append(term)
        return _sum_plus(terms, const, x.shape)

    # log x flags x <= 0 (-inf or NaN), log1p(-x) flags x >= 1; a zero coefficient skips
    # its log, and then the bound is checked instead
    return _guarded(q, p, fast, -math.inf if a else 0.0, math.inf if b else 1.0)


def _exponential_exponential(q: Exponential, p: Exponential) -> LogRatio | None:
    if not _tame(q.rate, p.rate):
        return None
    slope, const = q.rate - p.rate, math.log(p.rate) - math.log(q.rate)

    def fast(x: np.ndarray) -> np.ndarray:
        out = x * slope
        out += const
        return out

    return _guarded(q, p, fast, -math.ulp(0.0), _BIG)  # x = +-0 is inside the support


def fused_laplace_parameters(
    q: Distribution, p: Distribution
) -> tuple[float, float, tuple[float, float, float, float, float]] | None:
    """(loc, scale, (a, b, c, d, e)) for the engine's compiled Laplace pass: q's draws x and
    the log-ratio (|x - a| b - |x - c| d) + e, the operations of :func:`sample_log_ratio`'s
    Laplace pair in its order, so the same bits. None unless q and p are Laplace
    distributions whose pair takes that fast formula for every draw: tame parameters, draws
    that klest's sampler gives as NumPy's, and a log-ratio bounded far from overflow (a draw
    lies within 37 scales of q's loc: u >= 2^-53 in NumPy's inverse CDF), so that
    ``_guarded`` never sends a draw to the generic difference."""
    if type(q) is not Laplace or type(p) is not Laplace:
        return None
    if not _tame(q.loc, q.scale, p.loc, p.scale) or not family_is_compiled(
        "laplace", q.loc, q.scale
    ):
        return None
    const = _laplace_constant(q, p)
    rq, rp = 1.0 / q.scale, 1.0 / p.scale
    reach = 37.0 * q.scale
    bound = reach * rq + (abs(q.loc - p.loc) + reach) * rp + abs(const)
    if not bound < 1e280:  # (a block's sum of such values stays finite)
        return None
    return q.loc, q.scale, (q.loc, rq, p.loc, rp, const)


def fused_mixture_parameters(
    q: Distribution, p: Distribution
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(cuts, locs, scales, q_terms, p_terms) for the engine's compiled GaussianMixture pass:
    q's cut points, component means and scales (``GaussianMixture._sample``'s draws) and
    both mixtures' terms (:func:`klest.distributions.mixture.mixture_log_ratio`), so the
    same bits. None unless q and p are GaussianMixtures with tame parameters, the pairs
    that take that fast formula. Then ``_guarded`` never sends a draw to the generic
    difference: a draw lies within 14 scales of its component's mean (the ziggurat's largest
    draw), so |x| < 1.5e51 and each squared standardized distance ((x - m) c)^2 < 1e203 (|m|
    <= 1e50, c <= 1e50): every log-ratio, and a block's sum of them, is finite."""
    if type(q) is not GaussianMixture or type(p) is not GaussianMixture:
        return None
    if not _tame(q.locs, q.scales, p.locs, p.scales):
        return None
    return q.cut_points, q.locs, q.scales, q.terms, p.terms


def _laplace_constant(q: Laplace, p: Laplace) -> float:
    return math.log(2.0 * q.scale) - math.log(2.0 * p.scale)


def _laplace_laplace(q: Laplace, p: Laplace) -> LogRatio | None:
    if not _tame(q.loc, q.scale, p.loc, p.scale):
        return None
    # |x - m_q| / s_q - |x - m_p| / s_p + log(s_q / s_p)
    const = _laplace_constant(q, p)

    def distance(x: np.ndarray, d: Laplace) -> np.ndarray:
        # |x - m| / s; loc 0 and scale 1 skip their pass (bit for bit the same: -0 - 0 is
        # -0, whose abs is 0, and x * 1 is x)
        out = np.abs(x) if d.loc == 0.0 else np.abs(x - d.loc)
        if d.scale != 1.0:
            out *= 1.0 / d.scale
        return out

    def fast(x: np.ndarray) -> np.ndarray:
        out = distance(x, q)
        out -= distance(x, p)
        out += const
        return out

    return _guarded(q, p, fast, -math.inf, math.inf)


def _student_student(q: StudentT, p: StudentT) -> LogRatio | None:
    if not _tame(q.df, q.loc, q.scale, p.df, p.loc, p.scale):
        return None
    # c - (nu_p + 1)/2 log1p((x - m_p)² / (s_p² nu_p)) + (nu_q + 1)/2 log1p(...q...)
    const = p._log_norm() - q._log_norm()
    sides = [
        (d.loc, 1.0 / (d.scale * d.scale * d.df), sign * 0.5 * (d.df + 1.0))
        for d, sign in ((p, -1.0), (q, 1.0))
    ]

    def fast(x: np.ndarray) -> np.ndarray:
        terms = []
        for loc, inverse, weight in sides:
            term = x * x if loc == 0.0 else x - loc  # (x - 0)² is x² exactly
            if loc != 0.0:
                term *= term
            term *= inverse
            native_log1p(term, term)
            term *= weight
            terms.append(term)
        return _sum_plus(terms, const, x.shape)

    return _guarded(q, p, fast, -math.inf, math.inf)


def _lognormal_lognormal(q: LogNormal, p: LogNormal) -> LogRatio | None:
    if not _tame(q.loc, q.scale, p.loc, p.scale):
        return None
    # the Normal pair's log-ratio at log x (the Jacobian -log x cancels)
    normal = _normal_normal(Normal(loc=q.loc, scale=q.scale), Normal(loc=p.loc, scale=p.scale))

    def fast(x: np.ndarray) -> np.ndarray:
        return normal(_log(x), overwrite=True)

    return _guarded(q, p, fast, -math.inf, math.inf)  # log x flags x <= 0 and x = inf


def _mixture_mixture(q: GaussianMixture, p: GaussianMixture) -> LogRatio | None:
    if not _tame(q.locs, q.scales, p.locs, p.scales):
        return None
    return _guarded(q, p, lambda x: mixture_log_ratio(q, p, x), -math.inf, math.inf)


def _mvn_mvn(q: MultivariateNormal, p: MultivariateNormal) -> LogRatio:
    def log_ratio(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        return mvn_log_ratio(q, p, x)

    return log_ratio


_PAIRS: dict[type, Callable[[Any, Any], LogRatio | None]] = {
    Gamma: _gamma_gamma,
    Beta: _beta_beta,
    Exponential: _exponential_exponential,
    Laplace: _laplace_laplace,
    StudentT: _student_student,
    LogNormal: _lognormal_lognormal,
    GaussianMixture: _mixture_mixture,
    MultivariateNormal: _mvn_mvn,
}
