"""Uniform(low, high): the continuous uniform distribution on [low, high]."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.distributions.base import REAL, Distribution, Param, Support
from klest.errors import ParameterError


class Uniform(Distribution):
    """The uniform distribution on the interval [low, high], low < high.

    >>> import numpy as np
    >>> q = Uniform(low=0.0, high=2.0)
    >>> round(float(q.log_prob(1.0)), 6)
    -0.693147
    >>> float(q.log_prob(3.0))
    -inf
    >>> q.support.describe()
    '[0, 2]'
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "uniform"
    params = (
        Param("low", REAL, (-3.0, 1.0), doc="lower end"),
        Param("high", REAL, (1.5, 5.0), doc="upper end (> low)"),
    )

    low: float
    high: float

    def __init__(self, *, low: float = 0.0, high: float = 1.0) -> None:
        self._init_params(low=low, high=high)

    def _validate(self) -> None:
        if not self.low < self.high:
            raise ParameterError(
                "Uniform", "low", f"must be < 'high', got low={self.low!r}, high={self.high!r}"
            )
        if not math.isfinite(self.high - self.low):
            raise ValueError(
                f"Uniform: the width high - low must be finite, got low={self.low!r}, "
                f"high={self.high!r}"
            )

    @property
    def support(self) -> Support:
        return Support(self.low, self.high)

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        inside = (x >= self.low) & (x <= self.high)
        outside = np.where(np.isnan(x), np.nan, -np.inf)
        return np.where(inside, -math.log(self.high - self.low), outside)

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.uniform(loc=self.low, scale=self.high - self.low)

    def mean(self) -> float:
        return 0.5 * (self.low + self.high)

    def variance(self) -> float:
        return (self.high - self.low) ** 2 / 12.0
