"""StudentT(df, loc, scale): the location-scale Student t distribution."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from klest.distributions.base import POSITIVE, REAL, REAL_LINE, Distribution, Param, Support
from klest.native.sampler import family_draws


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
            # direct difference of two numbers near x log x keeps none of its digits; and
            # ½ log x - ½ log df = -½ log 2 exactly (not a difference of two numbers ~ 345)
            x = 0.5 * nu
            series = -0.125 / x + 1.0 / (192.0 * x * x * x)
            return series - 0.5 * math.log(2.0 * math.pi) - math.log(self.scale)
        else:
            log_ratio = float(special.gammaln(0.5 * (nu + 1.0)) - special.gammaln(0.5 * nu))
        return log_ratio - 0.5 * (math.log(nu) + math.log(math.pi)) - math.log(self.scale)

    def log_prob(self, x: Any) -> np.ndarray:
        """log density; log(1 + z²/df) in log space where z²/df overflows (x far from loc
        in units of the scale, or a tiny df), so that it stays finite: -(df+1) log|z| + ...

        >>> float(StudentT(df=3.0, loc=0.0, scale=1e-300).log_prob(1.0)) < -1e3
        True
        """
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            diff = x - self.loc  # inf only when |x - loc| exceeds the float64 range
            z = np.where(
                np.isfinite(diff), diff / self.scale, x / self.scale - self.loc / self.scale
            )
            ratio = z * z / self.df
            # log1p(e^u), u = log(z²/df) = 2 log|z| - log df: exact where the ratio overflows
            log_ratio = 2.0 * np.log(np.abs(z)) - math.log(self.df)
            log1p_ratio = np.where(ratio < 1e300, np.log1p(ratio), np.logaddexp(0.0, log_ratio))
            return self._log_norm() - 0.5 * (self.df + 1.0) * log1p_ratio

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        # loc + scale * t, in place (the same bits; a scale of 1 skips its pass exactly)
        draws = np.asarray(family_draws(rng, "standard_t", size, self.df), dtype=np.float64)
        if self.scale != 1.0:
            draws *= self.scale
        draws += self.loc
        return draws if draws.ndim else draws[()]

    def _scipy(self) -> Any:
        # deferred: scipy.stats is most of a cold `import klest`
        from scipy import stats

        return stats.t(df=self.df, loc=self.loc, scale=self.scale)

    def mean(self) -> float:
        return self.loc if self.df > 1.0 else math.nan

    def variance(self) -> float:
        if self.df > 2.0:
            return self.scale**2 * self.df / (self.df - 2.0)
        return math.inf if self.df > 1.0 else math.nan
