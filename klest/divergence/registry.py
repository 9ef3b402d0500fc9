"""True KL divergence: an open registry of closed forms plus numerical fallbacks.

``kl(a, b)`` is KL(a||b) = E_{x~a}[log a(x) - log b(x)] — the first argument is the one the
expectation is taken over. Closed forms are small pure functions registered with
``@register_kl(A, B)``; pairs on different spaces (continuous vs discrete, different event
shapes) raise a ValueError; pairs on one space whose supports do not nest return ``inf``
deliberately; pairs
without a closed form fall back to quadrature (1-D continuous), enumeration (finite
discrete) or a truncated series with an error bound (countable discrete).
``kl_result`` tells which method produced the number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest._special import as_float_or_array
from klest.distributions.affine import standardized
from klest.distributions.base import Distribution
from klest.distributions.log_ratio import log_ratio_function
from klest.errors import NoKLMethodError
from klest.integrate import expect

__all__ = [
    "METHODS",
    "KLResult",
    "NoKLMethodError",
    "check_same_space",
    "kl",
    "kl_result",
    "register_kl",
]

METHODS = ("auto", "closed_form", "quadrature", "enumeration")

KLFunction = Callable[[Any, Any], Any]
_CLOSED_FORMS: dict[tuple[type, type], KLFunction] = {}


@dataclass(frozen=True)
class KLResult:
    """A KL value with its provenance.

    ``method`` is one of ``closed_form``, ``quadrature``, ``enumeration``, ``series`` or
    ``support`` (infinite because a's support is not contained in b's); ``abs_error`` bounds
    the numerical error (0.0 for closed forms; a rounding bound for enumeration).
    """

    value: float | np.ndarray
    method: str
    abs_error: float | np.ndarray = 0.0


def register_kl(type_a: type, type_b: type) -> Callable[[KLFunction], KLFunction]:
    """Register a closed form for KL(A||B).

    >>> from klest.distributions import Normal
    >>> class Shifted(Normal):
    ...     family = ""  # not a config family, just a subclass for the example
    >>> @register_kl(Shifted, Shifted)
    ... def _kl_shifted(a, b):
    ...     return 0.5 * ((a.loc - b.loc) / a.scale) ** 2
    >>> kl_result(Shifted(loc=0.0, scale=1.0), Shifted(loc=1.0, scale=1.0)).value
    0.5
    """
    if not (isinstance(type_a, type) and isinstance(type_b, type)):
        raise TypeError(f"register_kl needs two classes, got {type_a!r}, {type_b!r}")

    def decorator(fn: KLFunction) -> KLFunction:
        _CLOSED_FORMS[(type_a, type_b)] = fn
        return fn

    return decorator


def _lookup_closed_form(type_a: type, type_b: type) -> KLFunction | None:
    """Most specific registered pair, by MRO distance (as torch.distributions does)."""
    best, best_rank = None, None
    for (ra, rb), fn in _CLOSED_FORMS.items():
        if issubclass(type_a, ra) and issubclass(type_b, rb):
            rank = (type_a.__mro__.index(ra), type_b.__mro__.index(rb))
            if best_rank is None or rank < best_rank:
                best, best_rank = fn, rank
    return best


def _pair(a: Distribution, b: Distribution) -> str:
    return f"({type(a).__name__}, {type(b).__name__})"


def _numerical_method(a: Distribution, b: Distribution) -> str | None:
    sa, sb = a.support, b.support
    if sa.dim != 1 or sb.dim != 1 or a.event_shape or b.event_shape:
        return None
    if not a.discrete and not b.discrete:
        return "quadrature"
    if a.discrete and b.discrete:
        return "enumeration"
    return None


def _numerical(a: Distribution, b: Distribution) -> KLResult:

    # in a's own units (KL is invariant under one affine map of both): at extreme
    # parameters the quadrature can resolve a's bulk and tails only there
    a, b = standardized(a, b)
    log_ratio = log_ratio_function(a, b)  # log b - log a

    def integrand(x: np.ndarray) -> np.ndarray:
        return -log_ratio(x)

    res = expect(a, integrand, breaks=b.breakpoints())
    if not res.finite:
        return KLResult(as_float_or_array(res.value), res.method, res.abs_error)

    # log a(x) - log b(x) is a difference of rounded numbers: its error is a few ulp of
    # |log a| + |log b|, which a KL near zero cannot resolve. Charge that to the bound.
    def magnitude(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.abs(a.log_prob(x)) + np.abs(b.log_prob(x))

    rounding = (
        4.0 * np.finfo(float).eps * np.abs(expect(a, magnitude, breaks=b.breakpoints()).value)
    )
    bound = res.abs_error + rounding
    # KL >= 0: a value below 0 by no more than its error bound is a rounded 0
    with np.errstate(invalid="ignore"):
        value = np.where((res.value < 0.0) & (res.value >= -bound), 0.0, res.value)
    return KLResult(as_float_or_array(value), res.method, bound)


def _space(d: Distribution) -> str:
    if d.event_shape:
        return f"R^{d.support.dim}" if not d.discrete else f"Z^{d.support.dim}"
    return "the integers" if d.discrete else "the real line"


def check_same_space(a: Distribution, b: Distribution, what: str = "KL is") -> None:
    """Raise a one-line ValueError when a and b live on different spaces.

    One rule: distributions on different spaces (continuous vs discrete, or different
    event shapes) are not comparable, whatever their supports; on one space, a support of
    a that is not inside b's makes KL(a||b) = inf (``kl`` returns it, method "support").

    >>> from klest.distributions import Normal, Poisson
    >>> check_same_space(Normal(loc=0.0, scale=1.0), Poisson(rate=1.0))
    Traceback (most recent call last):
    ...
    ValueError: KL is undefined for the pair (Normal, Poisson): they live on different spaces ...
    """
    if a.discrete != b.discrete or a.support.dim != b.support.dim or a.event_shape != b.event_shape:
        kinds = [
            f"{type(d).__name__} on {_space(d)}, {'discrete' if d.discrete else 'continuous'}"
            for d in (a, b)
        ]
        raise ValueError(
            f"{what} undefined for the pair {_pair(a, b)}: they live on different spaces "
            f"({kinds[0]}; {kinds[1]})"
        )


def kl_result(a: Distribution, b: Distribution, method: str = "auto") -> KLResult:
    """KL(a||b) together with the method that produced it (see :func:`kl`)."""
    if not isinstance(a, Distribution) or not isinstance(b, Distribution):
        raise TypeError(
            f"kl needs two klest distributions, got {type(a).__name__} and {type(b).__name__}"
        )
    if method not in METHODS:
        raise ValueError(f"unknown KL method {method!r}; choose one of {', '.join(METHODS)}")

    check_same_space(a, b)
    if not b.support.contains(a.support):
        # a puts mass where b has none: KL(a||b) is +inf by definition, whatever the method.
        shape = np.broadcast_shapes(a.batch_shape, b.batch_shape)
        value = math.inf if not shape else np.full(shape, math.inf)
        return KLResult(value, "support")

    closed = _lookup_closed_form(type(a), type(b))
    numerical = _numerical_method(a, b)
    if method == "auto":
        method = "closed_form" if closed is not None else (numerical or "none")
    if method == "closed_form":
        if closed is None:
            raise NoKLMethodError(f"no closed-form KL registered for the pair {_pair(a, b)}")
        return KLResult(as_float_or_array(closed(a, b)), "closed_form")
    if method in ("quadrature", "enumeration"):
        if numerical != method:
            available = [
                m for m in ("closed_form", numerical) if m and (m != "closed_form" or closed)
            ]
            raise NoKLMethodError(
                f"KL by {method} is not possible for the pair {_pair(a, b)}; "
                f"available: {', '.join(available) or 'none'}"
            )
        return _numerical(a, b)
    raise NoKLMethodError(f"no method computes KL for the pair {_pair(a, b)}")


def kl(a: Distribution, b: Distribution, method: str = "auto") -> float | np.ndarray:
    """KL(a||b) = E_{x~a}[log a(x) - log b(x)].

    ``method="auto"`` uses a registered closed form when there is one, else quadrature for
    1-D continuous pairs and enumeration (a truncated series with an error bound for
    countable supports) for discrete pairs. Forcing ``"closed_form"``, ``"quadrature"`` or
    ``"enumeration"`` raises :class:`NoKLMethodError` naming both types when impossible.
    Use :func:`kl_result` to learn which method was used.

    >>> from klest.distributions import Normal
    >>> q, p = Normal(loc=0.0, scale=1.0), Normal(loc=0.1, scale=1.0)
    >>> round(kl(q, p), 12)
    0.005
    >>> round(kl(q, p, method="quadrature"), 12)
    0.005
    """
    return kl_result(a, b, method).value
