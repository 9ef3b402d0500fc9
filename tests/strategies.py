"""Hypothesis strategies that draw valid distributions from each family's declared typical ranges.

``instances(cls)`` works for every family whose parameters are scalars (each parameter is drawn
from ``Param.typical``; integer domains give integers); vector families have dedicated
strategies (``mixtures()`` for GaussianMixture, which ``instances`` also dispatches to).

    from strategies import instances
    @given(instances(Gamma), instances(Exponential))
    def test_something(a, b): ...
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

from klest.distributions import GaussianMixture, Uniform
from klest.distributions.base import Distribution, Param

__all__ = ["instances", "mixtures", "param_values", "uniforms_containing", "uniforms_within"]


def param_values(spec: Param) -> st.SearchStrategy[float]:
    """Scalar values of one declared parameter, from its typical range."""
    low, high = spec.typical
    if spec.domain.integer:
        return st.integers(math.ceil(low), math.floor(high)).map(float)
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def _constructible(cls: type[Distribution]) -> Any:
    def check(kwargs: dict[str, float]) -> bool:
        try:
            cls(**kwargs)
        except ValueError:
            return False
        return True

    return check


def instances(cls: type[Distribution]) -> st.SearchStrategy[Distribution]:
    """Valid instances of ``cls`` with every parameter drawn from its typical range.

    Cross-parameter constraints (``_validate``) are respected by filtering; the typical
    ranges are chosen so that the filter rarely rejects.
    """
    if issubclass(cls, GaussianMixture):
        return mixtures()
    vector = [p.name for p in cls.params if p.vector]
    if vector:
        raise TypeError(
            f"instances() draws scalar-parameter families only; {cls.__name__} has vector "
            f"parameters {vector} and needs a dedicated strategy"
        )
    fields = {spec.name: param_values(spec) for spec in cls.params}
    return st.fixed_dictionaries(fields).filter(_constructible(cls)).map(lambda kw: cls(**kw))


@st.composite
def mixtures(draw: Any, max_components: int = 4) -> GaussianMixture:
    """GaussianMixture with 1..max_components components from the declared typical ranges.

    Raw weights are drawn from the ``weights`` typical range and normalised to sum to 1.
    """
    specs = {p.name: p for p in GaussianMixture.params}
    k = draw(st.integers(1, max_components))

    def vector(name: str) -> np.ndarray:
        values = draw(st.lists(param_values(specs[name]), min_size=k, max_size=k))
        return np.array(values, dtype=np.float64)

    raw = vector("weights")
    return GaussianMixture(weights=raw / raw.sum(), locs=vector("locs"), scales=vector("scales"))


@st.composite
def uniforms_within(draw: Any, low: float, high: float, max_width: float = 5.0) -> Uniform:
    """Uniform(l, h) with low <= l < h <= high (an infinite end is replaced by a finite window).

    Endpoints may coincide with ``low``/``high`` exactly, which exercises support edges.
    """
    if math.isinf(low) and math.isinf(high):
        low, high = -max_width, max_width
    elif math.isinf(low):
        low = high - max_width
    elif math.isinf(high):
        high = low + max_width
    width = high - low
    t = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2)))
    if t[1] - t[0] < 0.02:  # keep the interval from collapsing to a point
        t = [max(0.0, t[0] - 0.01), min(1.0, t[0] + 0.01)]
    a = low + t[0] * width
    b = high if t[1] == 1.0 else low + t[1] * width
    return Uniform(low=a, high=b)


@st.composite
def uniforms_containing(draw: Any, low: float, high: float, max_margin: float = 2.0) -> Uniform:
    """Uniform(l, h) with l <= low and high <= h (margins up to ``max_margin``, possibly 0)."""
    left, right = draw(st.lists(st.floats(0.0, max_margin), min_size=2, max_size=2))
    return Uniform(low=low - left, high=high + right)
