"""The result type shared by the numerical integrators (quadrature, enumeration, series)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Expectation"]


@dataclass(frozen=True)
class Expectation:
    """E_q[g(X)] computed numerically, with how it was computed and how far it can be off.

    ``value`` is a float (or an ndarray over a Categorical's batch dimensions).
    ``abs_error`` bounds |value - exact|: the quadrature error estimate, the tail bound of a
    truncated series, or the rounding bound of a finite enumeration. ``finite`` is False when
    the integral diverges (then ``value`` is +inf or -inf and ``reason`` says why).
    """

    value: float | np.ndarray
    abs_error: float | np.ndarray
    method: str
    finite: bool = True
    reason: str = ""
