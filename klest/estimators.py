"""The estimator registry: per-sample KL (and f-divergence) estimators of the log-ratio.

Every estimator is a function of ``log_ratio = log p(x) - log q(x)`` for x ~ q, evaluated
in float64 with numerically stable forms. Each carries metadata: the divergence its mean
targets, whether it is unbiased for it, whether it is non-negative, and where it comes from.

>>> import numpy as np
>>> from klest import estimators
>>> estimators.get("k3")(np.array([-1.0, 0.0, 1.0])).round(6)
array([0.367879, 0.      , 0.718282])
>>> estimators.get("mse").name
'k2'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from klest import native as _native
from klest._special import log_abs_expm1

__all__ = [
    "KL_PQ",
    "KL_QP",
    "Estimator",
    "Target",
    "f_divergence",
    "get",
    "names",
    "register",
    "registry",
]

#: One term ``coef * l**power * exp(rate * l)`` of an estimator written as a finite sum of
#: such terms; exact Gaussian moments use this representation (E[l^j e^{s l}] = M^(j)(s)).
Term = tuple[float, int, float]
ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Target:
    """The divergence an estimator's mean targets under x ~ q.

    ``kind`` is ``"kl_qp"`` (KL(q||p)), ``"kl_pq"`` (KL(p||q)) or ``"f_divergence"``
    (D_f(p||q) = E_q[f(r)], with ``f_of_log_ratio`` giving f(exp(l)) and ``f_terms`` its
    exponential-polynomial form when it has one).
    """

    kind: str
    label: str
    f_of_log_ratio: ArrayFn | None = field(default=None, compare=False)
    f_terms: tuple[Term, ...] | None = None
    #: lim f(t)/t as t -> inf: what each unit of p's mass outside q's support adds to
    #: D_f(p||q) (then E_q[f(r)] alone misses it, and the estimator is biased)
    f_slope_at_infinity: float = math.inf


KL_QP = Target("kl_qp", "KL(q||p)")
KL_PQ = Target("kl_pq", "KL(p||q)")


@dataclass(frozen=True, eq=False)
class Estimator:
    """A named per-sample estimator: ``estimator(log_ratio) -> ndarray`` (float64).

    ``terms`` is the estimator as a sum of ``coef * l**power * exp(rate * l)`` when it has
    that form (used for closed-form exact moments); ``None`` otherwise.
    """

    name: str
    fn: ArrayFn = field(repr=False)
    target: Target
    unbiased: bool
    nonnegative: bool
    source: str
    formula: str
    aliases: tuple[str, ...] = ()
    terms: tuple[Term, ...] | None = field(default=None, repr=False)
    log_abs_fn: ArrayFn | None = field(default=None, repr=False)
    #: log-ratio values where the estimator is not smooth (|l| at 0, clamp edges); exact
    #: quadrature splits its pieces where the log-ratio crosses them
    kinks: tuple[float, ...] = ()
    #: the same values computed from (l, expm1(l)): the engine computes expm1(l) = r - 1 once
    #: per block for the control variate, and estimators built on it reuse it
    given_expm1: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = field(
        default=None, repr=False
    )
    #: a series the engine's compiled accumulator computes itself from l and expm1(l), bit
    #: for bit ``fn``'s values (a key of ``klest.native.COMPUTED_SERIES``): the engine
    #: then never writes this estimator's values to memory
    computed_series: str | None = field(default=None, repr=False)

    def __call__(self, log_ratio: Any) -> np.ndarray:
        lr = _native.as_real_array("log_ratio", log_ratio)  # complex input is an error
        with np.errstate(over="ignore", invalid="ignore"):
            return self.fn(lr)

    def evaluate(self, log_ratio: np.ndarray, expm1_log_ratio: np.ndarray) -> np.ndarray:
        """``self(log_ratio)``, reusing ``expm1_log_ratio`` = expm1(log_ratio) where it can."""
        if self.given_expm1 is None:
            return self(log_ratio)
        with np.errstate(over="ignore", invalid="ignore"):
            return self.given_expm1(log_ratio, expm1_log_ratio)

    def log_abs(self, log_ratio: Any) -> np.ndarray:
        """log|estimator(l)|, finite even where the value itself overflows float64.

        Quadrature multiplies the density q(x) by the estimator in log space, so that
        q(x) * exp(l) stays exact where exp(l) alone would overflow.
        """
        lr = np.asarray(log_ratio, dtype=np.float64)
        if self.log_abs_fn is not None:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                return self.log_abs_fn(lr)
        value = self(lr)
        with np.errstate(divide="ignore"):
            out = np.log(np.abs(value))
        if self.terms is None:
            return out
        over = np.isinf(value) & np.isfinite(lr)
        if np.any(over):
            out = np.array(out, ndmin=1)
            out[over.reshape(out.shape)] = _log_abs_terms(self.terms, lr[over])
            out = out.reshape(np.shape(value))
        return out

    def info(self) -> dict[str, Any]:
        """Metadata as a flat dict (for tables and ``klest list``)."""
        return {
            "name": self.name,
            "aliases": ", ".join(self.aliases),
            "formula": self.formula,
            "target": self.target.label,
            "unbiased": self.unbiased,
            "nonnegative": self.nonnegative,
            "source": self.source,
        }


# --------------------------------------------------------------------------------------
# Stable elementwise forms
# --------------------------------------------------------------------------------------


def k3_given_expm1(l: np.ndarray, expm1_l: np.ndarray) -> np.ndarray:
    """exp(l) - 1 - l from l and expm1(l) (which the engine has already computed), of l's
    shape. Any real dtype and layout is converted to float64; ``expm1_l`` must have l's
    shape (a TypeError or ValueError names the argument otherwise).

    >>> k3_given_expm1([0.0, 1.0], np.expm1([0.0, 1.0])).round(12).tolist()
    [0.0, 0.718281828459]
    """
    l = _native.as_real_array("l", l)
    expm1_l = _native.as_real_array("expm1_l", expm1_l)
    if expm1_l.shape != l.shape:
        raise ValueError(f"expm1_l must have the shape of l {l.shape}, got {expm1_l.shape}")
    flat, expm1_flat = l.reshape(-1), expm1_l.reshape(-1)
    out = np.empty_like(flat)
    # klest._special.expm1_minus's algorithm (its one cut-off and series), compiled
    # (klest/native/csrc/kernels.c): the same bits (tests/test_special.py)
    _native.k3_from_expm1(expm1_flat, flat, out)
    return out.reshape(l.shape)


def expm1_minus_x(l: np.ndarray) -> np.ndarray:
    """exp(l) - 1 - l of an array, by the compiled kernels (klest's own expm1, then k3):
    :func:`klest._special.expm1_minus` (its accuracy is stated there), bit for bit (the k3
    estimator).

    >>> float(expm1_minus_x(np.array([1e-8]))[0])
    5.000000016666667e-17
    """
    l = _native.as_real_array("l", l)
    return k3_given_expm1(l, _native.expm1(l, np.empty_like(l)))


def _k1(l: np.ndarray) -> np.ndarray:
    return -l


def _k2(l: np.ndarray) -> np.ndarray:
    return 0.5 * l * l


def _k3(l: np.ndarray) -> np.ndarray:
    return expm1_minus_x(np.atleast_1d(l)).reshape(np.shape(l))


def _abs(l: np.ndarray) -> np.ndarray:
    return np.abs(l)


# verl's `low_var_kl` (verl/trainer/ppo/core_algos.py, kl_penalty): kl = ref_logprob - logprob
# (= log p - log q) clamped to [-20, 20], k3 = exp(kl) - kl - 1, clamped to [-10, 10].
LOW_VAR_KL_INPUT_CLAMP = 20.0
LOW_VAR_KL_OUTPUT_CLAMP = 10.0


def _low_var_kl(l: np.ndarray) -> np.ndarray:
    clamped = np.clip(l, -LOW_VAR_KL_INPUT_CLAMP, LOW_VAR_KL_INPUT_CLAMP)
    return np.clip(_k3(clamped), -LOW_VAR_KL_OUTPUT_CLAMP, LOW_VAR_KL_OUTPUT_CLAMP)


def _low_var_kl_kinks() -> tuple[float, ...]:
    """The input clamps ±20 and the two log-ratios where k3 reaches the output clamp 10."""

    def over(x: float) -> float:
        return math.expm1(x) - x - LOW_VAR_KL_OUTPUT_CLAMP

    lo = _float_root(over, -LOW_VAR_KL_INPUT_CLAMP, -1.0)
    hi = _float_root(over, 1.0, LOW_VAR_KL_INPUT_CLAMP)
    return (-LOW_VAR_KL_INPUT_CLAMP, lo, hi, LOW_VAR_KL_INPUT_CLAMP)


def _float_root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The float nearest a root of ``f`` in [lo, hi], where f(lo) and f(hi) differ in sign:
    bisection down to two adjacent floats, then the one with the smaller |f| (at import,
    without loading scipy.optimize, whose import alone takes ~0.5 s).

    >>> _float_root(lambda x: math.log(x) + 1.0, 0.1, 1.0) == math.exp(-1.0)
    True
    """
    lo_negative = f(lo) < 0.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return lo if abs(f(lo)) <= abs(f(hi)) else hi
        if (f(mid) < 0.0) == lo_negative:
            lo = mid
        else:
            hi = mid


def _rev_kl(l: np.ndarray) -> np.ndarray:
    # r log r - (r - 1). For l <= 1: l*expm1(l) - (expm1(l) - l): both O(l^2), no cancellation.
    # For l > 1: exp(l) * (l - 1) + 1, which overflows to +inf (never inf - inf = nan).
    shape = np.shape(l)
    l = np.array(l, dtype=np.float64, copy=True, ndmin=1)
    out = np.empty_like(l)
    big = l > 1.0
    out[big] = np.exp(l[big]) * (l[big] - 1.0) + 1.0
    rest = ~big
    lr = l[rest]
    out[rest] = lr * np.expm1(lr) - expm1_minus_x(lr)  # compiled, _special.expm1_minus's bits
    out[np.isneginf(l)] = 1.0  # r = 0: r log r -> 0, -(r - 1) = 1
    return out.reshape(shape)


def _log_abs_terms(terms: tuple[Term, ...], l: np.ndarray) -> np.ndarray:
    """log|sum_i c_i l^j_i exp(s_i l)| in log space (a signed log-sum-exp), so that neither
    exp(s l) nor l^j overflows."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_mag = np.stack([math.log(abs(c)) + j * np.log(np.abs(l)) + s * l for c, j, s in terms])
        signs = np.stack([np.sign(c) * np.sign(l) ** j for c, j, _ in terms])
        top = np.max(np.where(np.isnan(log_mag), -np.inf, log_mag), axis=0)
        safe_top = np.where(np.isfinite(top), top, 0.0)
        total = np.sum(signs * np.exp(log_mag - safe_top), axis=0)
        return safe_top + np.log(np.abs(total))


def _tv_log_abs(l: np.ndarray) -> np.ndarray:
    return log_abs_expm1(l) - math.log(2.0)  # log(|expm1(l)| / 2), never overflows


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------

_REGISTRY: dict[str, Estimator] = {}
_ALIASES: dict[str, str] = {}


def register(estimator: Estimator) -> Estimator:
    """Add an estimator (and its aliases) to the registry; names must be new."""
    for key in (estimator.name, *estimator.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"estimator name {key!r} is already registered")
    _REGISTRY[estimator.name] = estimator
    for alias in estimator.aliases:
        _ALIASES[alias] = estimator.name
    return estimator


def names(include_aliases: bool = False) -> list[str]:
    """Registered estimator names in registration order (aliases appended on request).

    >>> names()[:4]
    ['k1', 'k2', 'k3', 'abs']
    """
    out = list(_REGISTRY)
    return out + list(_ALIASES) if include_aliases else out


def registry() -> dict[str, Estimator]:
    """A copy of the name -> Estimator mapping (canonical names only)."""
    return dict(_REGISTRY)


def get(name: str | Estimator) -> Estimator:
    """The estimator registered under ``name`` or one of its aliases.

    >>> get("k7")
    Traceback (most recent call last):
    ...
    KeyError: "unknown estimator 'k7'; valid names: k1, k2, k3, abs, low_var_kl, rev_kl, ..."
    """
    if isinstance(name, Estimator):
        return name
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in _REGISTRY:
        valid = ", ".join(names(include_aliases=True))
        raise KeyError(f"unknown estimator {name!r}; valid names: {valid}")
    return _REGISTRY[key]


def f_divergence(
    name: str,
    f_of_log_ratio: ArrayFn,
    f_prime_at_1: float,
    *,
    target_label: str,
    formula: str,
    source: str = "f-divergence estimator f(r) - f'(1)(r - 1) (Schulman 2020)",
    f_terms: tuple[Term, ...] | None = None,
    aliases: tuple[str, ...] = (),
    log_abs_fn: ArrayFn | None = None,
    kinks: tuple[float, ...] = (),
    f_slope_at_infinity: float = math.inf,
) -> Estimator:
    """Build the estimator f(r) - f'(1)(r - 1) of D_f(p||q) = E_q[f(r)] (not registered).

    ``f_of_log_ratio(l)`` must return f(exp(l)) for a convex f with f(1) = 0; the estimator is
    then unbiased (E_q[r] = 1) and non-negative (a convex function lies above its tangent).

    >>> import numpy as np
    >>> k3_again = f_divergence("k3_f", lambda l: -l, -1.0,
    ...                         target_label="KL(q||p)", formula="-log r + (r - 1)")
    >>> bool(np.allclose(k3_again(np.linspace(-3, 3, 7)), get("k3")(np.linspace(-3, 3, 7))))
    True
    """
    slope = float(f_prime_at_1)

    def fn(l: np.ndarray) -> np.ndarray:
        fl = f_of_log_ratio(l)
        return fl if slope == 0.0 else fl - slope * np.expm1(l)

    terms = None
    if f_terms is not None:
        terms = (*f_terms, (-slope, 0, 1.0), (slope, 0, 0.0)) if slope else f_terms
    target = Target("f_divergence", target_label, f_of_log_ratio, f_terms, f_slope_at_infinity)
    return Estimator(
        name=name,
        fn=fn,
        target=target,
        unbiased=True,
        nonnegative=True,
        source=source,
        formula=formula,
        aliases=aliases,
        terms=terms,
        log_abs_fn=log_abs_fn,
        kinks=kinks,
    )


SCHULMAN = "Schulman (2020), Approximating KL Divergence"

register(
    Estimator(
        "k1",
        _k1,
        KL_QP,
        unbiased=True,
        nonnegative=False,
        source=SCHULMAN,
        formula="-log r",
        aliases=("kl",),
        terms=((-1.0, 1, 0.0),),
        computed_series="negate",
    )
)
register(
    Estimator(
        "k2",
        _k2,
        KL_QP,
        unbiased=False,
        nonnegative=True,
        source=SCHULMAN,
        formula="(log r)^2 / 2",
        aliases=("mse",),
        terms=((0.5, 2, 0.0),),
        computed_series="half_square",
    )
)
register(
    Estimator(
        "k3",
        _k3,
        KL_QP,
        unbiased=True,
        nonnegative=True,
        source=SCHULMAN,
        formula="(r - 1) - log r",
        terms=((1.0, 0, 1.0), (-1.0, 0, 0.0), (-1.0, 1, 0.0)),
        given_expm1=k3_given_expm1,
        computed_series="k3",
    )
)
register(
    Estimator(
        "abs",
        _abs,
        KL_QP,
        unbiased=False,
        nonnegative=True,
        source="verl kl_penalty 'abs'",
        formula="|log r|",
        kinks=(0.0,),
    )
)
register(
    Estimator(
        "low_var_kl",
        _low_var_kl,
        KL_QP,
        unbiased=False,
        nonnegative=True,
        source="verl kl_penalty 'low_var_kl': k3 with log r clamped to [-20, 20], "
        "result clamped to [-10, 10]",
        formula="clip(k3(clip(log r, -20, 20)), -10, 10)",
        kinks=_low_var_kl_kinks(),
    )
)
register(
    Estimator(
        "rev_kl",
        _rev_kl,
        KL_PQ,
        unbiased=True,
        nonnegative=True,
        source=SCHULMAN + " (estimator of KL(p||q))",
        formula="r log r - (r - 1)",
        terms=((1.0, 1, 1.0), (-1.0, 0, 1.0), (1.0, 0, 0.0)),
    )
)


def _chi2_f(l: np.ndarray) -> np.ndarray:
    return np.square(np.expm1(l))


def _hellinger_f(l: np.ndarray) -> np.ndarray:
    return 0.5 * np.square(np.expm1(0.5 * l))


def _tv_f(l: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(np.expm1(l))


register(
    f_divergence(
        "pearson_chi2",
        _chi2_f,
        0.0,
        target_label="chi2(p||q)",
        formula="(r - 1)^2",
        f_terms=((1.0, 0, 2.0), (-2.0, 0, 1.0), (1.0, 0, 0.0)),
        aliases=("chi2",),
    )
)
register(
    f_divergence(
        "squared_hellinger",
        _hellinger_f,
        0.0,
        target_label="H^2(p,q)",
        formula="(sqrt(r) - 1)^2 / 2",
        f_terms=((0.5, 0, 1.0), (-1.0, 0, 0.5), (0.5, 0, 0.0)),
        aliases=("hellinger",),
        f_slope_at_infinity=0.5,
    )
)
register(
    f_divergence(
        "total_variation",
        _tv_f,
        0.0,
        target_label="TV(p,q)",
        formula="|r - 1| / 2",
        aliases=("tv",),
        f_slope_at_infinity=0.5,
        log_abs_fn=_tv_log_abs,
        kinks=(0.0,),
    )
)
