"""Errors in units in the last place against mpmath, for the kernel-math tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import mpmath
import numpy as np

DPS = 60  # decimal digits of the reference


def ulp_errors(exact_of: Callable, x: np.ndarray, got: np.ndarray) -> np.ndarray:
    """|got - f(x)| in ulps of f(x) (f = ``exact_of``, an mpmath function at DPS digits);
    0 where both are 0, inf where only f(x) is.

    >>> ulp_errors(mpmath.log, np.array([1.0, 2.0]), np.array([0.0, 0.6931471805599453]))
    array([0.        , 0.20888117])
    """
    with mpmath.workdps(DPS):
        return ulp_errors_from([exact_of(mpmath.mpf(a)) for a in x.tolist()], got)


def ulp_errors_from(exact: Sequence, got: np.ndarray) -> np.ndarray:
    """|got - exact| in ulps of exact, for exact values already computed (mpmath numbers, at
    DPS digits or more); 0 where both are 0, inf where only the exact value is."""
    out = np.empty(len(exact))
    with mpmath.workdps(DPS):
        two = mpmath.mpf(2)
        for i, (e, g) in enumerate(zip(exact, got.tolist(), strict=True)):
            if e == 0:
                out[i] = 0.0 if g == 0.0 else math.inf
                continue
            ulp = two ** max(int(mpmath.floor(mpmath.log(abs(e), 2))) - 52, -1074)
            out[i] = float(abs(mpmath.mpf(g) - e) / ulp)
    return out
