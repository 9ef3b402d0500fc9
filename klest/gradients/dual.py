"""Forward-mode derivatives of a framework's per-token penalty with respect to ``logprob``.

:class:`DualOps` is a backend for :func:`klest.rl.primitives.evaluate` (the operations of
:mod:`klest.rl._backend`) whose arrays carry a value and its derivative with respect to the
policy's log-probability of the sampled token. Evaluating a spec on ``Dual(lp, 1)`` gives the
penalty f and ∂f/∂logprob elementwise, through the same primitives (clamps, weights,
straight-through, detaching) that ``kl_penalty`` applies, in float64 and without torch:

    ∂/∂logprob clamp(x, lo, hi) = ∂x inside [lo, hi] (bounds inclusive, as ``torch.clamp``),
    ∂ k3(x) = expm1(x) ∂x,  ∂ exp(x) = exp(x) ∂x,  ∂ |x| = sign(x) ∂x,
    stop_gradient: derivative 0;  clamp_output: the clamped value, derivative 0 where active.

The derivative carries one trailing axis of tangents: ``Dual(lp, 1.0)`` differentiates each
token's penalty with respect to its own logprob; ``Dual(lp, eye(T))`` for lp of shape
(..., T) differentiates every token's penalty with respect to every logprob of its sequence,
which a sequence-level weight (a sum over the last axis) needs.

>>> import numpy as np
>>> from klest import rl
>>> f, d = evaluate_with_derivative(rl.spec("verl", "k2"), np.log([0.5]), np.log([0.25]), {})
>>> round(float(f[0]), 6), round(float(d[0, 0]), 6)
(0.240227, 0.693147)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from klest._special import expm1_minus
from klest.rl.primitives import PenaltySpec, evaluate

__all__ = ["Dual", "DualOps", "SequenceLevel", "evaluate_with_derivative"]


class SequenceLevel(ValueError):
    """The spec sums over the sequence: differentiate with a tangent per token."""


class Dual:
    """A value v and its derivatives d (shape v.shape + (tangents,)), float64."""

    __array_ufunc__ = None  # numpy defers to the reflected operators below

    def __init__(self, value: Any, deriv: Any) -> None:
        self.v = np.asarray(value, dtype=np.float64)
        d = np.asarray(deriv, dtype=np.float64)
        if d.ndim == 0:
            d = d[None]
        self.d = np.broadcast_to(d, (*self.v.shape, d.shape[-1]))

    def __add__(self, other: Any) -> Dual:
        o = lift(other)
        return Dual(self.v + o.v, self.d + o.d)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Dual:
        o = lift(other)
        return Dual(self.v - o.v, self.d - o.d)

    def __rsub__(self, other: Any) -> Dual:
        return lift(other) - self

    def __mul__(self, other: Any) -> Dual:
        o = lift(other)
        # where a factor is 0 its partner's derivative term is 0, even if the partner is inf
        with np.errstate(invalid="ignore"):
            d = _times(self.d, o.v[..., None]) + _times(self.v[..., None], o.d)
        return Dual(self.v * o.v, d)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Dual:
        o = lift(other)
        ov, sv = o.v[..., None], self.v[..., None]
        return Dual(self.v / o.v, (_times(self.d, ov) - _times(sv, o.d)) / (ov * ov))

    def __neg__(self) -> Dual:
        return Dual(-self.v, -self.d)

    def _compare(self, other: Any, op: Callable[[Any, Any], Any]) -> np.ndarray:
        return op(self.v, lift(other).v)

    def __eq__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        return self._compare(other, np.equal)

    def __lt__(self, other: Any) -> np.ndarray:
        return self._compare(other, np.less)

    def __gt__(self, other: Any) -> np.ndarray:
        return self._compare(other, np.greater)

    __hash__ = None  # type: ignore[assignment]


def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b, 0 where a is 0 (a derivative term that vanishes, even against inf)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(a == 0.0, 0.0, a * b)


def lift(x: Any) -> Dual:
    """A constant (derivative 0), or x itself if it is already a Dual."""
    return x if isinstance(x, Dual) else Dual(x, 0.0)


class DualOps:
    """The operations of :mod:`klest.rl._backend` on :class:`Dual` arrays."""

    name = "dual"

    def asarray(self, x: Any) -> Any:
        return x if isinstance(x, Dual) else np.asarray(x, dtype=np.float64)

    def exp(self, x: Any) -> Dual:
        x = lift(x)
        e = np.exp(x.v)
        return Dual(e, _times(x.d, e[..., None]))

    def abs(self, x: Any) -> Dual:
        x = lift(x)
        return Dual(np.abs(x.v), np.sign(x.v)[..., None] * x.d)

    def clip(self, x: Any, lo: float | None, hi: float | None) -> Any:
        if lo is None and hi is None:
            return x
        x = lift(x)
        inside = np.ones(x.v.shape, bool)
        if lo is not None:
            inside &= x.v >= lo
        if hi is not None:
            inside &= x.v <= hi
        return Dual(np.clip(x.v, lo, hi), np.where(inside[..., None], x.d, 0.0))

    def where(self, cond: Any, a: Any, b: Any) -> Dual:
        a, b = lift(a), lift(b)
        c = np.asarray(cond)
        return Dual(np.where(c, a.v, b.v), np.where(c[..., None], a.d, b.d))

    def stop_gradient(self, x: Any) -> Any:
        return Dual(x.v, np.zeros(x.d.shape[-1])) if isinstance(x, Dual) else x

    def k3(self, x: Any) -> Dual:
        x = lift(x)
        v = np.asarray(expm1_minus(np.atleast_1d(x.v))).reshape(x.v.shape)
        return Dual(v, _times(x.d, np.expm1(x.v)[..., None]))

    def clamp_output(
        self, fn: Callable[..., Any], args: Sequence[Any], lo: float, hi: float
    ) -> Dual:
        out = lift(fn(*args))
        clamped = (out.v > hi) | (out.v < lo)
        return Dual(np.clip(out.v, lo, hi), np.where(clamped[..., None], 0.0, out.d))

    def nan_to_zero(self, x: Any) -> Dual:
        x = lift(x)
        bad = ~np.isfinite(x.v)
        return Dual(np.where(bad, 0.0, x.v), np.where(bad[..., None], 0.0, x.d))

    def nonfinite(self, x: Any) -> np.ndarray:
        return ~np.isfinite(lift(x).v)

    def sum_last(self, x: Any) -> Any:
        if not isinstance(x, Dual):
            return np.sum(x, axis=-1, keepdims=True)
        if x.d.shape[-1] == 1 and x.v.shape[-1] > 1:
            raise SequenceLevel("a sum over the sequence needs one tangent per token")
        return Dual(np.sum(x.v, axis=-1, keepdims=True), np.sum(x.d, axis=-2, keepdims=True))

    def ones_like(self, x: Any) -> np.ndarray:
        return np.ones_like(lift(x).v)


DUAL = DualOps()


def evaluate_with_derivative(
    spec: PenaltySpec, logprob: Any, ref_logprob: Any, opts: dict[str, Any], *, tangents: Any = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(f, ∂f/∂logprob) of a spec, with ``opts`` completed from the spec's defaults (behaviour
    log-probabilities are constants: only logprob varies). With the default ``tangents`` the
    derivative is elementwise, shape f.shape + (1,); ``tangents=np.eye(T)`` for logprob of
    shape (..., T) gives ∂f_t/∂logprob_s, shape (..., T, T)."""
    options = {**spec.options, **opts}
    for k in spec.array_options:
        if options[k] is not None:
            options[k] = np.asarray(options[k], dtype=np.float64)
    lp = np.asarray(logprob, dtype=np.float64)
    ref = np.asarray(ref_logprob, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        out = lift(evaluate(spec, DUAL, Dual(lp, tangents), ref, options))
    shape = np.broadcast_shapes(out.v.shape, lp.shape)
    return np.broadcast_to(out.v, shape), np.broadcast_to(out.d, (*shape, out.d.shape[-1]))
