"""Bernoulli(probs): one coin flip, 1 with probability ``probs``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.distributions.base import UNIT_INTERVAL, Distribution, Param, Support

_SUPPORT = Support(0.0, 1.0, discrete=True)


class Bernoulli(Distribution):
    """The Bernoulli distribution on {0, 1} with P(X = 1) = ``probs``.

    ``probs`` may be 0 or 1 (a point mass); ``log_prob`` is then ``-inf`` at the other point.

    >>> import numpy as np
    >>> q = Bernoulli(probs=0.25)
    >>> q.log_prob([0, 1, 2]).round(6)
    array([-0.287682, -1.386294,       -inf])
    >>> q.mean(), q.variance()
    (0.25, 0.1875)
    >>> q.sample(np.random.default_rng(0), 4).dtype
    dtype('int64')
    """

    family = "bernoulli"
    discrete = True
    params = (Param("probs", UNIT_INTERVAL, (0.05, 0.95), doc="P(X = 1)"),)

    probs: float

    def __init__(self, *, probs: float = 0.5) -> None:
        self._init_params(probs=probs)

    @property
    def support(self) -> Support:
        return _SUPPORT

    def _log_masses(self) -> tuple[float, float]:
        """(log P(X=0), log P(X=1)), -inf for a zero mass."""
        p = self.probs
        log0 = math.log1p(-p) + 0.0 if p < 1.0 else -math.inf  # + 0.0: no -0.0 at p = 0
        log1 = math.log(p) if p > 0.0 else -math.inf
        return log0, log1

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        log0, log1 = self._log_masses()
        return np.where(x == 1.0, log1, np.where(x == 0.0, log0, -np.inf))

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return (rng.random(size) < self.probs).astype(np.int64)

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.bernoulli(self.probs)

    def mean(self) -> float:
        return self.probs

    def variance(self) -> float:
        return self.probs * (1.0 - self.probs)
