"""GaussianMixture(weights, locs, scales): a finite mixture of 1-D normals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, special

from klest.distributions.base import (
    POSITIVE,
    REAL,
    REAL_LINE,
    UNIT_INTERVAL,
    Distribution,
    Param,
    Support,
    _show,
)
from klest.errors import ParameterError

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_WEIGHT_SUM_TOL = 1e-9


class GaussianMixture(Distribution):
    """The mixture sum_i weights[i] * N(locs[i], scales[i]²) on the real line.

    ``weights`` are non-negative and sum to 1 (within 1e-9); the three vectors have equal
    lengths. There is no scipy equivalent, so the mixture has its own ``cdf`` and
    ``quantile`` (bracketing between component quantiles, then Brent's method).

    >>> import numpy as np
    >>> q = GaussianMixture(weights=[0.5, 0.5], locs=[-1.0, 1.0], scales=[1.0, 1.0])
    >>> round(float(q.log_prob(0.0)), 6)
    -1.418939
    >>> float(q.quantile(0.5)), q.mean(), q.variance()
    (0.0, 0.0, 2.0)
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "gaussian_mixture"
    params = (
        Param("weights", UNIT_INTERVAL, (0.05, 1.0), vector=True, doc="mixing weights (sum 1)"),
        Param("locs", REAL, (-3.0, 3.0), vector=True, doc="component means"),
        Param("scales", POSITIVE, (0.3, 3.0), vector=True, doc="component standard deviations"),
    )

    weights: np.ndarray
    locs: np.ndarray
    scales: np.ndarray

    def __init__(self, *, weights: Any, locs: Any, scales: Any) -> None:
        self._init_params(weights=weights, locs=locs, scales=scales)

    def _validate(self) -> None:
        for name in ("weights", "locs", "scales"):
            value = getattr(self, name)
            if np.ndim(value) != 1 or np.size(value) == 0:
                raise ParameterError(
                    "GaussianMixture", name, f"must be a non-empty 1-D sequence, got {_show(value)}"
                )
        lengths = {name: len(getattr(self, name)) for name in ("weights", "locs", "scales")}
        if len(set(lengths.values())) != 1:
            shown = ", ".join(f"len({k})={v}" for k, v in lengths.items())
            raise ValueError(f"GaussianMixture: parameters must have equal lengths, got {shown}")
        total = math.fsum(self.weights)
        if abs(total - 1.0) > _WEIGHT_SUM_TOL:
            raise ParameterError(
                "GaussianMixture",
                "weights",
                f"must sum to 1 (within {_WEIGHT_SUM_TOL:g}), got sum {total!r} for weights "
                f"{_show(self.weights)}",
            )

    @property
    def support(self) -> Support:
        return REAL_LINE

    @property
    def n_components(self) -> int:
        """Number of mixture components."""
        return len(self.weights)

    def _log_weights(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.weights)

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore"):  # huge |x|: z² = inf gives -inf, as it should
            z = (x[..., None] - self.locs) / self.scales
            terms = self._log_weights() - np.log(self.scales) - _HALF_LOG_2PI - 0.5 * z * z
        return special.logsumexp(terms, axis=-1)

    def cdf(self, x: Any) -> np.ndarray:
        """P(X <= x) = sum_i w_i Φ((x - m_i) / s_i).

        >>> float(GaussianMixture(weights=[1.0], locs=[0.0], scales=[1.0]).cdf(0.0))
        0.5
        """
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore"):
            return special.ndtr((x[..., None] - self.locs) / self.scales) @ self.weights

    def sf(self, x: Any) -> np.ndarray:
        """P(X > x), computed directly (no 1 - cdf cancellation in the right tail)."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore"):
            return special.ndtr((self.locs - x[..., None]) / self.scales) @ self.weights

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        cumulative = np.cumsum(self.weights)
        cumulative /= cumulative[-1]
        u = rng.random(size)
        component = np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)
        return self.locs[component] + self.scales[component] * rng.standard_normal(size)

    def quantile(self, u: Any) -> np.ndarray:
        """Inverse CDF: the x with cdf(x) = u; -inf at 0, inf at 1, NaN outside [0, 1].

        The root lies between the smallest and largest component quantile at u (the CDF is
        a convex combination of the component CDFs); Brent's method finds it there.
        """
        u = np.asarray(u, dtype=np.float64)
        out = np.full(u.shape, np.nan)
        out[u == 0.0] = -np.inf
        out[u == 1.0] = np.inf
        interior = (u > 0.0) & (u < 1.0)
        values, inverse = np.unique(u[interior], return_inverse=True)
        active = self.weights > 0.0
        locs, scales = self.locs[active], self.scales[active]
        component_q = locs + scales * special.ndtri(values[:, None])
        roots = np.array(
            [
                self._invert(v, lo, hi)
                for v, lo, hi in zip(
                    values, component_q.min(axis=1), component_q.max(axis=1), strict=True
                )
            ]
        )
        out[interior] = roots[inverse.ravel()] if values.size else roots
        return out[()] if out.ndim == 0 else out

    def _invert(self, u: float, lo: float, hi: float) -> float:
        if u <= 0.5:

            def f(x: float) -> float:
                return float(self.cdf(x)) - u
        else:
            tail = 1.0 - u  # exact in float64 for u > 0.5

            def f(x: float) -> float:
                return tail - float(self.sf(x))

        if lo == hi or f(lo) >= 0.0:
            return lo
        if f(hi) <= 0.0:
            return hi
        xtol = 1e-15 * max(1.0, abs(lo), abs(hi))
        return optimize.brentq(f, lo, hi, xtol=xtol, rtol=4.0 * np.finfo(float).eps)

    def mean(self) -> float:
        return float(self.weights @ self.locs)

    def variance(self) -> float:
        centred = self.locs - self.mean()
        return float(self.weights @ (self.scales**2 + centred**2))
