"""The distribution base class: declared parameters, support, validation, config round-trip.

Every family subclasses :class:`Distribution`, declares its parameters as a tuple of
:class:`Param` (name, domain, typical range) and implements ``log_prob`` and ``_sample``.
Parameters are keyword-only, validated on construction, stored as float64 and read-only.
Sampling always takes an explicit :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from klest.errors import ParameterError

__all__ = [
    "FAMILIES",
    "Distribution",
    "Domain",
    "Param",
    "Support",
    "from_dict",
]


# --------------------------------------------------------------------------------------
# Parameter domains
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """Where a parameter may live: an interval of the reals, applied elementwise.

    ``integer=True`` additionally requires whole numbers. Vector constraints (probabilities
    summing to one, positive-definite matrices) are checked by the family's ``_validate``.
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = True
    high_open: bool = True
    integer: bool = False

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        kind = "integers" if self.integer else "reals"
        if self.low == -math.inf and self.high == math.inf:
            return f"finite {kind}"
        return f"{kind} in {left}{self.low:g}, {self.high:g}{right}"

    def violations(self, value: np.ndarray) -> np.ndarray:
        """Boolean mask of the entries of ``value`` that lie outside the domain."""
        bad = ~np.isfinite(value)
        bad |= (value <= self.low) if self.low_open else (value < self.low)
        bad |= (value >= self.high) if self.high_open else (value > self.high)
        if self.integer:
            bad |= np.isfinite(value) & (value != np.round(value))
        return bad


REAL = Domain()
POSITIVE = Domain(low=0.0)
UNIT_INTERVAL = Domain(low=0.0, high=1.0, low_open=False, high_open=False)


@dataclass(frozen=True)
class Param:
    """A declared parameter: its name, domain and a typical range for drawing test instances.

    ``typical`` is a (low, high) range of scalar entries that keeps every method of the family
    well-conditioned; tests draw parameters from it. ``vector`` marks array-valued parameters
    (Categorical probs, mixture weights, MVN mean/cov).
    """

    name: str
    domain: Domain
    typical: tuple[float, float]
    vector: bool = False
    doc: str = ""


# --------------------------------------------------------------------------------------
# Support
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """The set where a distribution puts mass.

    ``discrete=False``: the real interval [low, high] (``dim`` > 1: all of R^dim).
    ``discrete=True``: the integers low, low+1, ..., high (``high`` may be inf).
    """

    low: float
    high: float
    discrete: bool = False
    dim: int = 1

    @property
    def finite(self) -> bool:
        """True for a discrete support with finitely many points."""
        return self.discrete and math.isfinite(self.high) and math.isfinite(self.low)

    def contains(self, other: Support) -> bool:
        """Whether ``other`` is a subset of this support (up to measure zero)."""
        if self.discrete != other.discrete or self.dim != other.dim:
            return False
        return self.low <= other.low and other.high <= self.high

    def describe(self) -> str:
        if self.dim > 1:
            return f"R^{self.dim}"
        if self.discrete:
            return f"integers {{{self.low:g}, ..., {self.high:g}}}"
        return f"[{self.low:g}, {self.high:g}]"


REAL_LINE = Support(-math.inf, math.inf)
POSITIVE_HALF_LINE = Support(0.0, math.inf)


# --------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------

#: family name -> class, filled by ``Distribution.__init_subclass__``.
FAMILIES: dict[str, type[Distribution]] = {}


def _as_float_array(name: str, family: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(family, name, f"must be numeric, got {value!r}") from None
    return arr


def _show(value: Any) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(float(arr))
    if arr.size <= 6:
        return np.array2string(arr, separator=", ")
    return f"array(shape={arr.shape})"


class Distribution:
    """Base class of every klest distribution.

    Subclasses set ``family`` (the config name), ``params`` and ``discrete``, call
    :meth:`_init_params` from a keyword-only ``__init__``, and implement ``log_prob``,
    ``_sample`` and ``support``. Continuous 1-D families also implement ``_scipy`` (a frozen
    scipy.stats distribution used for quantiles and quadrature break points) or override
    :meth:`quantile`.
    """

    family: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    discrete: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            if cls.family in FAMILIES:
                raise TypeError(f"family name {cls.family!r} is registered twice")
            FAMILIES[cls.family] = cls

    # ---- construction ----------------------------------------------------------------

    def _init_params(self, **values: Any) -> None:
        """Convert to float64, check each value against its declared domain, then ``_validate``."""
        stored: dict[str, Any] = {}
        for spec in self.params:
            if spec.name not in values:
                raise TypeError(f"{type(self).__name__}: missing parameter {spec.name!r}")
            arr = _as_float_array(spec.name, type(self).__name__, values[spec.name])
            if not spec.vector and arr.ndim != 0:
                raise ParameterError(
                    type(self).__name__, spec.name, f"must be a scalar, got shape {arr.shape}"
                )
            bad = spec.domain.violations(arr)
            if np.any(bad):
                offending = arr[bad].ravel()[0] if arr.ndim else arr
                raise ParameterError(
                    type(self).__name__,
                    spec.name,
                    f"must be {spec.domain.describe()}, got {_show(offending)}",
                )
            if arr.ndim == 0:
                stored[spec.name] = float(arr)
            else:
                arr = arr.copy()
                arr.flags.writeable = False
                stored[spec.name] = arr
        object.__setattr__(self, "_params", stored)
        for name, value in stored.items():
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        """Cross-parameter checks (raise ValueError naming the parameter and the value)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in getattr(self, "_params", {}):
            raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")
        object.__setattr__(self, name, value)

    # ---- interface implemented by families -------------------------------------------

    @property
    def support(self) -> Support:
        raise NotImplementedError

    def log_prob(self, x: Any) -> np.ndarray:
        """Log density (continuous) or log mass (discrete) at ``x``; ``-inf`` off the support."""
        raise NotImplementedError

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def _scipy(self) -> Any:
        """A frozen scipy.stats distribution with the same law (1-D families)."""
        raise NotImplementedError(f"{type(self).__name__} has no scipy equivalent")

    # ---- shared behaviour ------------------------------------------------------------

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one draw (``()`` for scalar families, ``(d,)`` for MultivariateNormal)."""
        return ()

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dimensions (only Categorical has them)."""
        return ()

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...] | None = None):
        """Draw ``size`` samples with the explicit generator ``rng``.

        The result has shape ``size + batch_shape + event_shape``; float64 for continuous
        families, int64 for discrete ones.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"{type(self).__name__}.sample needs a numpy.random.Generator "
                f"(np.random.default_rng(seed)), got {type(rng).__name__}"
            )
        if size is None:
            shape: tuple[int, ...] = ()
        elif isinstance(size, int | np.integer):
            shape = (int(size),)
        else:
            shape = tuple(int(s) for s in size)
        if any(s < 0 for s in shape):
            raise ValueError(f"sample size must be non-negative, got {size!r}")
        return self._sample(rng, shape)

    def breakpoints(self) -> tuple[float, ...]:
        """Points where ``log_prob`` is not smooth (finite support ends; Laplace adds its loc).

        Quadrature splits its pieces there so that a kink never hides between two nodes.
        """
        support = self.support
        return tuple(v for v in (support.low, support.high) if math.isfinite(v))

    def scipy_law(self) -> Any:
        """:meth:`_scipy`'s frozen scipy.stats distribution, made once per instance (a
        distribution cannot change, and freezing one costs ~1 ms: quadrature asks for its
        quantiles thousands of times); not pickled with the distribution.

        >>> from klest.distributions.normal import Normal
        >>> q = Normal(loc=0.0, scale=2.0)
        >>> q.scipy_law() is q.scipy_law(), float(q.scipy_law().std())
        (True, 2.0)
        """
        law = self.__dict__.get("_scipy_law")
        if law is None:
            law = self._scipy()
            object.__setattr__(self, "_scipy_law", law)
        return law

    def quantile(self, u: Any) -> np.ndarray:
        """Inverse CDF at ``u`` in [0, 1] (1-D families)."""
        return np.asarray(self.scipy_law().ppf(u), dtype=np.float64)

    def mean(self) -> Any:
        """The distribution's mean."""
        return self.scipy_law().mean()

    def variance(self) -> Any:
        """The distribution's variance."""
        return self.scipy_law().var()

    # ---- config round trip, repr, equality -------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """``{"family": ..., <param>: <value>}``, plain Python types, for configs."""
        out: dict[str, Any] = {"family": self.family}
        for name, value in self._params.items():
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Distribution:
        """Inverse of :meth:`to_dict`; ``Distribution.from_dict`` dispatches on ``family``."""
        return from_dict(config) if cls is Distribution else _build(cls, config)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={_show(value)}" for name, value in self._params.items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        mine, theirs = self._params, other._params  # type: ignore[attr-defined]
        return mine.keys() == theirs.keys() and all(
            np.array_equal(mine[k], theirs[k]) for k in mine
        )

    def __hash__(self) -> int:
        return hash(
            (
                type(self).__name__,
                tuple(
                    (k, v.tobytes() if isinstance(v, np.ndarray) else v)
                    for k, v in self._params.items()
                ),
            )
        )

    def __reduce__(self) -> tuple[Callable[..., Distribution], tuple[dict[str, Any]]]:
        return (from_dict, (self.to_dict(),))


def _build(cls: type[Distribution], config: dict[str, Any]) -> Distribution:
    kwargs = {k: v for k, v in config.items() if k != "family"}
    expected = cls.constructor_keys() if hasattr(cls, "constructor_keys") else None
    if expected is None:
        expected = {p.name for p in cls.params}
    unknown = sorted(set(kwargs) - set(expected))
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown parameter {unknown[0]!r}; "
            f"expected {', '.join(sorted(expected))}"
        )
    return cls(**kwargs)


def from_dict(config: dict[str, Any]) -> Distribution:
    """Build a distribution from ``{"family": name, **params}``.

    >>> from_dict({"family": "normal", "loc": 0.0, "scale": 2.0})
    Normal(loc=0.0, scale=2.0)
    """
    if not isinstance(config, dict):
        raise ValueError(f"a distribution config must be a table/dict, got {config!r}")
    family = config.get("family")
    if family not in FAMILIES:
        raise ValueError(
            f"unknown distribution family {family!r}; known families: {', '.join(sorted(FAMILIES))}"
        )
    return _build(FAMILIES[family], config)
