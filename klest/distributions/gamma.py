"""Gamma(shape, rate): the gamma distribution in the shape-rate parametrisation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from klest.distributions.base import POSITIVE, POSITIVE_HALF_LINE, Distribution, Param, Support
from klest.native.sampler import family_draws


class Gamma(Distribution):
    """The gamma distribution with density rate^shape x^(shape-1) exp(-rate x) / Γ(shape).

    At x = 0 the density is +inf for shape < 1 (``log_prob`` returns ``inf`` there, as
    scipy does); it is ``-inf`` for x < 0 and x = +inf.

    >>> import numpy as np
    >>> q = Gamma(shape=2.0, rate=3.0)
    >>> round(float(q.log_prob(0.5)), 6)
    0.004077
    >>> round(q.mean(), 12), round(q.variance(), 12)
    (0.666666666667, 0.222222222222)
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "gamma"
    params = (
        Param("shape", POSITIVE, (0.5, 10.0), doc="shape α (concentration)"),
        Param("rate", POSITIVE, (0.2, 5.0), doc="rate β (inverse scale)"),
    )

    shape: float
    rate: float

    def __init__(self, *, shape: float, rate: float = 1.0) -> None:
        self._init_params(shape=shape, rate=rate)

    @property
    def support(self) -> Support:
        return POSITIVE_HALF_LINE

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        inside = (x >= 0.0) & (x < np.inf)
        xs = np.where(inside, x, 1.0)
        norm = self.shape * math.log(self.rate) - special.gammaln(self.shape)
        with np.errstate(over="ignore"):  # rate * x = inf gives -inf, as it should
            lp = norm + special.xlogy(self.shape - 1.0, xs) - self.rate * xs
        return np.where(inside, lp, np.where(np.isnan(x), np.nan, -np.inf))

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return family_draws(rng, "gamma", size, self.shape, 1.0 / self.rate)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.gamma(a=self.shape, scale=1.0 / self.rate)

    def mean(self) -> float:
        return self.shape / self.rate

    def variance(self) -> float:
        return self.shape / self.rate**2
