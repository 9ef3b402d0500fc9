"""Normal(loc, scale): the 1-D Gaussian."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.distributions.base import POSITIVE, REAL, REAL_LINE, Distribution, Param, Support
from klest.native import scaled_normal

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Normal(Distribution):
    """The normal distribution N(loc, scale²).

    >>> import numpy as np
    >>> q = Normal(loc=0.0, scale=1.0)
    >>> round(float(q.log_prob(0.0)), 6)
    -0.918939
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "normal"
    params = (
        Param("loc", REAL, (-3.0, 3.0), doc="mean"),
        Param("scale", POSITIVE, (0.2, 5.0), doc="standard deviation"),
    )

    loc: float
    scale: float

    def __init__(self, *, loc: float = 0.0, scale: float = 1.0) -> None:
        self._init_params(loc=loc, scale=scale)

    @property
    def support(self) -> Support:
        return REAL_LINE

    def log_prob(self, x: Any) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.loc) / self.scale
        return -0.5 * z * z - math.log(self.scale) - _HALF_LOG_2PI

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        # rng.standard_normal(size) * scale + loc, compiled into one pass (klest.native.sampler)
        return scaled_normal(rng, size, self.scale, self.loc)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.norm(loc=self.loc, scale=self.scale)

    def mean(self) -> float:
        return self.loc

    def variance(self) -> float:
        return self.scale**2
