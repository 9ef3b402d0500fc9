"""GaussianMixture(weights, locs, scales): a finite mixture of 1-D normals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

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
from klest.native import expm1 as native_expm1
from klest.native import log as native_log
from klest.native import mixture_draws, mixture_log_sum_exp_parts, mixture_terms, standard_normal
from klest.native import mixture_log_ratio as native_mixture_log_ratio

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_WEIGHT_SUM_TOL = 1e-9
#: up to this many components, the component pick is a sum of comparisons (one pass per
#: cut point) instead of ``searchsorted``, which costs ~13 ns per draw even for two


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

    @property
    def terms(self) -> np.ndarray:
        """The (3, K) rows log w - log s, the means and sqrt(1/2) / s over the components of
        positive weight (:func:`klest.native.mixture_terms`; read-only, computed once): how
        the log-density's kernels take the mixture."""
        terms = self.__dict__.get("_terms")
        if terms is None:
            terms = mixture_terms(self.weights, self.locs, self.scales)
            object.__setattr__(self, "_terms", terms)
        return terms

    def log_prob(self, x: Any) -> np.ndarray:
        """log sum_i w_i N(x; m_i, s_i²): a log-sum-exp over the components, one pass per
        component over the draws (no (n, K) array); -inf where every term is -inf.

        >>> q = GaussianMixture(weights=[0.25, 0.75], locs=[0.0, 2.0], scales=[1.0, 0.5])
        >>> float(q.log_prob(np.inf)), bool(np.isnan(q.log_prob(np.nan)))
        (-inf, True)
        """
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            flat = np.ascontiguousarray(x.reshape(-1))
            top, total = mixture_log_sum_exp_parts(flat, self.terms, native_expm1)
            native_log(total, total)  # klest's compiled log (the same bits on every CPU)
            total += top
            total -= _HALF_LOG_2PI
            if not math.isfinite(float(np.add.reduce(top, axis=None))):
                # every term -inf (|x| = inf or z² = inf): the sum is 0, its log -inf
                total[np.isneginf(top)] = -np.inf
        return total.reshape(x.shape)[()]

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
        """The component by the inverse CDF of ``rng.random`` over the cumulative weights
        (the first i with cumulative[i] > u), then loc + scale * a standard normal draw
        (klest's compiled sampler: ``rng.standard_normal``'s values and final state)."""
        u = rng.random(size)
        z = standard_normal(rng, size)
        return mixture_draws(u, z, self.cut_points, self.locs, self.scales)

    @property
    def cut_points(self) -> np.ndarray:
        """The K - 1 cut points that pick a draw's component from its uniform u: the
        cumulative weights (over their total), the last left out; component i of u is the
        number of cut points <= u (they are nondecreasing: :func:`klest.native.mixture_draws`)."""
        cumulative = np.cumsum(self.weights)
        cumulative /= cumulative[-1]
        return cumulative[:-1]

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
        # deferred: scipy.optimize costs ~0.25 s of a cold `import klest`
        from scipy import optimize

        return optimize.brentq(f, lo, hi, xtol=xtol, rtol=4.0 * np.finfo(float).eps)

    def mean(self) -> float:
        return float(self.weights @ self.locs)

    def variance(self) -> float:
        centred = self.locs - self.mean()
        return float(self.weights @ (self.scales**2 + centred**2))


def mixture_log_ratio(q: GaussianMixture, p: GaussianMixture, x: np.ndarray) -> np.ndarray:
    """log p(x) - log q(x) = (top_p - top_q) + log(total_p / total_q) (see
    :func:`klest.native.mixture_log_sum_exp_parts`): one log per draw, the log(2π)/2 of both
    sides cancelled, in klest's compiled kernel (or its NumPy definition: the same bits). NaN
    where both sides are -inf (|x| = inf), as the difference of the two log_probs; the
    caller guards other non-finite draws."""
    x = np.asarray(x, dtype=np.float64)
    flat = np.ascontiguousarray(x.reshape(-1))
    out = native_mixture_log_ratio(flat, q.terms, p.terms, np.empty_like(flat))
    return out.reshape(x.shape)
