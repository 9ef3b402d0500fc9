"""Laplace(loc, scale): the double-exponential distribution."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.distributions.base import POSITIVE, REAL, REAL_LINE, Distribution, Param, Support
from klest.native.sampler import family_draws


class Laplace(Distribution):
    """The Laplace distribution with density exp(-|x - loc| / scale) / (2 scale).

    >>> import numpy as np
    >>> q = Laplace(loc=0.0, scale=1.0)
    >>> round(float(q.log_prob(1.0)), 6)
    -1.693147
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "laplace"
    params = (
        Param("loc", REAL, (-3.0, 3.0), doc="location (mean and median)"),
        Param("scale", POSITIVE, (0.2, 5.0), doc="scale b; the variance is 2 b²"),
    )

    loc: float
    scale: float

    def __init__(self, *, loc: float = 0.0, scale: float = 1.0) -> None:
        self._init_params(loc=loc, scale=scale)

    @property
    def support(self) -> Support:
        return REAL_LINE

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore"):  # |x| near the float64 limit: -inf, as it should be
            return -np.abs(x - self.loc) / self.scale - math.log(2.0 * self.scale)

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return family_draws(rng, "laplace", size, self.loc, self.scale)

    def breakpoints(self) -> tuple[float, ...]:
        return (self.loc,)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.laplace(loc=self.loc, scale=self.scale)

    def mean(self) -> float:
        return self.loc

    def variance(self) -> float:
        return 2.0 * self.scale**2
