"""The log-ratio of two d-dimensional normals from standardized rows, in NumPy: the definition
that ``csrc/mvn.c`` (klest_mvn_ratio_from_standardized) follows operation for operation, and
klest's fallback for it.

For rows y = L_q^{-1}(x - m_q), G = L_p^{-1}(L_q - L_p) (lower triangular), delta =
L_p^{-1}(m_q - m_p) and c = log det L_p - log det L_q, the gap D = y_p - y_q = G y + delta
and log p(x) - log q(x) = (sum_j D_j (D_j + 2 y_j)) * -1/2 - c: no cancellation between two
squared norms when p is close to q. The order of every sum is fixed (below), so the result
does not depend on a BLAS build or the CPU.

>>> y = np.array([[0.0, 0.0], [1.0, -1.0]])
>>> ratio_from_standardized(y, np.zeros((2, 2)), np.zeros(2), 0.0, np.empty(2)).tolist()
[-0.0, -0.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.native.checks import real_scalar, require


def check_mvn_args(y: Any, difference: Any, delta: Any, c: Any, out: Any) -> float:
    """Raise (TypeError / ValueError naming the argument) unless the arguments are what the
    kernel may index blindly: (rows, d) float64 ``y`` with d >= 1, ``difference`` (d, d) and
    ``delta`` (d,) float64 with finite entries, a writable (rows,) ``out``; return ``c`` as a
    finite float."""
    require("y", y, np.float64, (None, None))
    rows, d = y.shape
    if d == 0:
        raise ValueError("y must have at least one column (the dimension d)")
    require("difference", difference, np.float64, (d, d))
    require("delta", delta, np.float64, (d,))
    require("out", out, np.float64, (rows,), writable=True)
    c = real_scalar("c", c)
    for name, value in (("difference", difference), ("delta", delta)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} must be finite, got a non-finite entry")
    if not math.isfinite(c):
        raise ValueError(f"c must be finite, got {c!r}")
    return c


def ratio_from_standardized(
    y: np.ndarray, difference: np.ndarray, delta: np.ndarray, c: float, out: np.ndarray
) -> np.ndarray:
    """``out[i] = (sum_j D_ij (D_ij + 2 y_ij)) * -1/2 - c`` with D_ij = (0 + G[j,0] y_i0 +
    ... + G[j,j] y_ij) + delta_j (``difference`` is G: its entries k <= j are read), every
    sum in index order; return ``out``."""
    c = check_mvn_args(y, difference, delta, c, out)
    rows, d = y.shape
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are values, as in C
        gap = np.zeros((rows, d))
        for k in range(d):  # the term of y_k, added to D_j for every j >= k, in order of k
            gap[:, k:] += y[:, k : k + 1] * difference[k:, k]
        gap += delta
        twice = y + y
        twice += gap
        gap *= twice
        total = np.zeros(rows)
        for j in range(d):
            total += gap[:, j]
    np.multiply(total, -0.5, out=out)
    out -= c
    return out
