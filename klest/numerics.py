"""The result type shared by the numerical integrators (quadrature, enumeration, series)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from klest.distributions.base import Distribution

__all__ = ["Expectation", "expect"]

ArrayFn = Callable[[np.ndarray], np.ndarray]


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


def expect(
    q: Distribution,
    g: ArrayFn,
    *,
    log_abs_g: ArrayFn | None = None,
    breaks: Sequence[float] = (),
    level_sets: tuple[ArrayFn, Sequence[float]] | None = None,
) -> Expectation:
    """E_q[g(X)]: exact enumeration (or a series) for discrete q, quadrature for continuous q.

    ``breaks`` and ``level_sets`` only matter to quadrature (see
    :func:`klest.quadrature.expect_continuous`).
    """
    if q.discrete:
        from klest.enumeration import expect_discrete

        return expect_discrete(q, g, log_abs_g=log_abs_g)
    from klest.quadrature import expect_continuous

    return expect_continuous(q, g, log_abs_g=log_abs_g, breaks=breaks, level_sets=level_sets)
