"""E_q[g(X)] numerically: quadrature (divergence detected) or enumeration / tail-bounded sums.

Imports only ``klest.distributions`` and the layers below it (``native``, the helpers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from klest.integrate.enumeration import expect_discrete
from klest.integrate.quadrature import expect_continuous
from klest.integrate.result import Expectation

if TYPE_CHECKING:
    from klest.distributions.base import Distribution

__all__ = ["Expectation", "expect", "expect_continuous", "expect_discrete"]

ArrayFn = Callable[[np.ndarray], np.ndarray]


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
    :func:`klest.integrate.quadrature.expect_continuous`).
    """
    if q.discrete:
        return expect_discrete(q, g, log_abs_g=log_abs_g)
    return expect_continuous(q, g, log_abs_g=log_abs_g, breaks=breaks, level_sets=level_sets)
