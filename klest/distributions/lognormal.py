"""LogNormal(loc, scale): exp of a Normal(loc, scale)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.distributions.base import (
    POSITIVE,
    POSITIVE_HALF_LINE,
    REAL,
    Distribution,
    Param,
    Support,
)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class LogNormal(Distribution):
    """The log-normal distribution: X = exp(Y) with Y ~ N(loc, scale²).

    ``loc`` and ``scale`` are the mean and standard deviation of log X (torch's convention).

    >>> import numpy as np
    >>> q = LogNormal(loc=0.0, scale=1.0)
    >>> round(float(q.log_prob(1.0)), 6)
    -0.918939
    >>> float(q.log_prob(-1.0))
    -inf
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "lognormal"
    params = (
        Param("loc", REAL, (-1.0, 1.0), doc="mean of log X"),
        Param("scale", POSITIVE, (0.25, 1.0), doc="standard deviation of log X"),
    )

    loc: float
    scale: float

    def __init__(self, *, loc: float = 0.0, scale: float = 1.0) -> None:
        self._init_params(loc=loc, scale=scale)

    @property
    def support(self) -> Support:
        return POSITIVE_HALF_LINE

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        inside = x > 0.0
        log_x = np.log(np.where(inside, x, 1.0))
        z = (log_x - self.loc) / self.scale
        lp = -0.5 * z * z - log_x - math.log(self.scale) - _HALF_LOG_2PI
        return np.where(inside, lp, np.where(np.isnan(x), np.nan, -np.inf))

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.lognormal(self.loc, self.scale, size)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.lognorm(s=self.scale, scale=math.exp(self.loc))

    def mean(self) -> float:
        return math.exp(self.loc + 0.5 * self.scale**2)

    def variance(self) -> float:
        s2 = self.scale**2
        return math.expm1(s2) * math.exp(2.0 * self.loc + s2)
