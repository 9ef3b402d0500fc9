"""The exception types that several layers raise or catch, and the one integer check.

Bottom layer: imports nothing of klest.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["NoExactMethodError", "NoKLMethodError", "ParameterError", "check_integer"]


class NoKLMethodError(NotImplementedError):
    """Raised when KL(a||b) cannot be computed by the requested (or any) method."""


class NoExactMethodError(NotImplementedError):
    """No exact method computes the requested moments for this pair and estimator."""


class ParameterError(ValueError):
    """An invalid constructor parameter: ``owner`` (e.g. ``"Normal"``) got a bad ``parameter``,
    and ``problem`` says what is wrong. Callers that point at a config key read these fields.

    >>> err = ParameterError("Normal", "scale", "must be > 0, got -1.0")
    >>> str(err), err.parameter
    ("Normal: parameter 'scale' must be > 0, got -1.0", 'scale')
    """

    def __init__(self, owner: str, parameter: str, problem: str) -> None:
        super().__init__(f"{owner}: parameter {parameter!r} {problem}")
        self.owner, self.parameter, self.problem = owner, parameter, problem

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return type(self), (self.owner, self.parameter, self.problem)


def check_integer(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int when it is an integer (a Python or NumPy integer, not a bool or a
    float) of at least ``minimum``; otherwise a one-line ValueError naming ``name``.

    >>> check_integer("n", 10, minimum=1)
    10
    >>> check_integer("n", 2.0, minimum=1)
    Traceback (most recent call last):
        ...
    ValueError: n must be an integer >= 1, got 2.0
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number
