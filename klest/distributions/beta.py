"""Beta(alpha, beta): the beta distribution on [0, 1]."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from klest.distributions.base import POSITIVE, Distribution, Param, Support
from klest.native.sampler import family_draws

_UNIT = Support(0.0, 1.0)


class Beta(Distribution):
    """The beta distribution with density x^(alpha-1) (1-x)^(beta-1) / B(alpha, beta).

    At an endpoint the density is +inf when the matching parameter is < 1 (``log_prob``
    returns ``inf`` there, as scipy does).

    >>> import numpy as np
    >>> q = Beta(alpha=2.0, beta=2.0)
    >>> round(float(q.log_prob(0.5)), 6)
    0.405465
    >>> float(q.log_prob(1.5))
    -inf
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "beta"
    params = (
        Param("alpha", POSITIVE, (0.5, 10.0), doc="first shape (concentration of 1)"),
        Param("beta", POSITIVE, (0.5, 10.0), doc="second shape (concentration of 0)"),
    )

    alpha: float
    beta: float

    def __init__(self, *, alpha: float, beta: float) -> None:
        self._init_params(alpha=alpha, beta=beta)

    @property
    def support(self) -> Support:
        return _UNIT

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        inside = (x >= 0.0) & (x <= 1.0)
        xs = np.where(inside, x, 0.5)
        lp = (
            special.xlogy(self.alpha - 1.0, xs)
            + special.xlog1py(self.beta - 1.0, -xs)
            - special.betaln(self.alpha, self.beta)
        )
        return np.where(inside, lp, np.where(np.isnan(x), np.nan, -np.inf))

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return family_draws(rng, "beta", size, self.alpha, self.beta)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.beta(a=self.alpha, b=self.beta)

    def quantile(self, u: Any) -> np.ndarray:
        """Inverse CDF by ``scipy.special.betaincinv``, the upper half through 1 - X ~ Beta(β, α).

        (``scipy.stats.beta.ppf`` loses all accuracy in the far lower tail for some shapes,
        e.g. Beta(0.5, 2) at u = 1e-12.)
        """
        u = np.asarray(u, dtype=np.float64)
        upper = u > 0.5
        lower_q = _lower_quantile(self.alpha, self.beta, np.where(upper, 0.5, u))
        upper_q = 1.0 - _lower_quantile(self.beta, self.alpha, np.where(upper, 1.0 - u, 0.5))
        return np.where(upper, upper_q, lower_q)[()]

    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def variance(self) -> float:
        total = self.alpha + self.beta
        return self.alpha * self.beta / (total * total * (total + 1.0))


def _lower_quantile(a: float, b: float, u: np.ndarray) -> np.ndarray:
    """x with I_x(a, b) = u for u <= 1/2.

    ``betaincinv`` returns NaN for extremely small u (e.g. a=2, b=4, u <= 1e-190); there the
    leading term of I_x(a, b) = x^a / (a B(a, b)) (1 + O(x)) gives x to full precision.
    """
    x = special.betaincinv(a, b, u)
    failed = np.isnan(x) & (u > 0.0) & (u < 1.0)
    if np.any(failed):
        log_x = (np.log(u[failed]) + math.log(a) + special.betaln(a, b)) / a
        x = np.where(failed, 0.0, x)
        x[failed] = np.exp(log_x)
    return x
