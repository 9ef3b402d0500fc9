"""StudentT(df, loc, scale): the location-scale Student t distribution."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special, stats

from klest.distributions.base import POSITIVE, REAL, REAL_LINE, Distribution, Param, Support


class StudentT(Distribution):
    """Student's t with ``df`` degrees of freedom, shifted by ``loc`` and scaled by ``scale``.

    The mean exists for df > 1 and the variance for df > 2 (it is inf for 1 < df <= 2);
    the typical range df in (2.5, 30) keeps the variance finite for tests.

    >>> import numpy as np
    >>> q = StudentT(df=3.0, loc=0.0, scale=1.0)
    >>> round(float(q.log_prob(0.0)), 6)
    -1.000889
    >>> round(q.variance(), 12)
    3.0
    >>> q.sample(np.random.default_rng(0), 3).shape
    (3,)
    """

    family = "student_t"
    params = (
        Param("df", POSITIVE, (2.5, 30.0), doc="degrees of freedom"),
        Param("loc", REAL, (-3.0, 3.0), doc="location (the mean when df > 1)"),
        Param("scale", POSITIVE, (0.2, 5.0), doc="scale"),
    )

    df: float
    loc: float
    scale: float

    def __init__(self, *, df: float, loc: float = 0.0, scale: float = 1.0) -> None:
        self._init_params(df=df, loc=loc, scale=scale)

    @property
    def support(self) -> Support:
        return REAL_LINE

    def _log_norm(self) -> float:
        nu = self.df
        if nu > 1e4:
            # lnΓ(x + ½) - lnΓ(x) = ½ log x - 1/(8x) + 1/(192x³) + O(x⁻⁵), x = df/2: the
            # direct difference of two numbers near x log x keeps none of its digits
            x = 0.5 * nu
            log_ratio = 0.5 * math.log(x) - 0.125 / x + 1.0 / (192.0 * x * x * x)
        else:
            log_ratio = float(special.gammaln(0.5 * (nu + 1.0)) - special.gammaln(0.5 * nu))
        return log_ratio - 0.5 * (math.log(nu) + math.log(math.pi)) - math.log(self.scale)

    def log_prob(self, x: Any) -> np.ndarray:
        with np.errstate(over="ignore"):  # huge |x|: z² = inf gives -inf, as it should
            z = (np.asarray(x, dtype=np.float64) - self.loc) / self.scale
            return self._log_norm() - 0.5 * (self.df + 1.0) * np.log1p(z * z / self.df)

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return self.loc + self.scale * rng.standard_t(self.df, size)

    def _scipy(self) -> Any:
        return stats.t(df=self.df, loc=self.loc, scale=self.scale)

    def mean(self) -> float:
        return self.loc if self.df > 1.0 else math.nan

    def variance(self) -> float:
        if self.df > 2.0:
            return self.scale**2 * self.df / (self.df - 2.0)
        return math.inf if self.df > 1.0 else math.nan
