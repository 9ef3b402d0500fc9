"""Exponential(rate): waiting time of a Poisson process."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.distributions.base import POSITIVE, POSITIVE_HALF_LINE, Distribution, Param, Support


class Exponential(Distribution):
    """The exponential distribution with density rate * exp(-rate x) on x >= 0.

    >>> import numpy as np
    >>> q = Exponential(rate=2.0)
    >>> round(float(q.log_prob(0.5)), 6)
    -0.306853
    >>> float(q.log_prob(-0.5))
    -inf
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "exponential"
    params = (Param("rate", POSITIVE, (0.2, 5.0), doc="rate (inverse mean)"),)

    rate: float

    def __init__(self, *, rate: float = 1.0) -> None:
        self._init_params(rate=rate)

    @property
    def support(self) -> Support:
        return POSITIVE_HALF_LINE

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        inside = x >= 0.0
        with np.errstate(over="ignore"):  # rate * x = inf gives -inf, as it should
            lp = math.log(self.rate) - self.rate * np.where(inside, x, 0.0)
        return np.where(inside, lp, np.where(np.isnan(x), np.nan, -np.inf))

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.exponential(1.0 / self.rate, size)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.expon(scale=1.0 / self.rate)

    def mean(self) -> float:
        return 1.0 / self.rate

    def variance(self) -> float:
        return 1.0 / self.rate**2
