"""Poisson(rate): counts of a Poisson process, on {0, 1, 2, ...}."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from klest.distributions.base import POSITIVE, Distribution, Param, Support

_SUPPORT = Support(0.0, math.inf, discrete=True)


class Poisson(Distribution):
    """The Poisson distribution, P(X = k) = rate^k exp(-rate) / k! for k = 0, 1, 2, ...

    >>> import numpy as np
    >>> q = Poisson(rate=2.0)
    >>> q.log_prob([0, 3, -1, 1.5]).round(6)
    array([-2.      , -1.712318,       -inf,       -inf])
    >>> q.mean(), q.variance()
    (2.0, 2.0)
    >>> q.sample(np.random.default_rng(0), 3).dtype
    dtype('int64')
    """

    family = "poisson"
    discrete = True
    params = (Param("rate", POSITIVE, (0.1, 20.0), doc="mean number of events"),)

    rate: float

    def __init__(self, *, rate: float = 1.0) -> None:
        self._init_params(rate=rate)

    @property
    def support(self) -> Support:
        return _SUPPORT

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(x) & (x >= 0.0) & (x == np.floor(x))
        k = np.where(valid, x, 0.0)
        lp = special.xlogy(k, self.rate) - self.rate - special.gammaln(k + 1.0)
        return np.where(valid, lp, -np.inf)

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.poisson(self.rate, size).astype(np.int64, copy=False)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.poisson(self.rate)

    def mean(self) -> float:
        return self.rate

    def variance(self) -> float:
        return self.rate
