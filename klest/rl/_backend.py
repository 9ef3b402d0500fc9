"""Array backends for the RL layer: numpy (float64) and torch (autograd intact).

Each framework's penalty is written once against the small set of operations below.
``NumpyOps`` computes in float64 and has no notion of gradients (``stop_gradient`` is the
identity). ``TorchOps`` upcasts to float64 with differentiable casts, so autograd flows
through every operation, and ``stop_gradient`` is ``Tensor.detach``. torch is never imported
here: a ``TorchOps`` is only built when a tensor has been passed in, i.e. when the caller
has already imported torch.

Two operations need care so that finite inputs never give NaN gradients:

- ``k3(l) = exp(l) - 1 - l`` is :func:`klest._special.expm1_minus`: ``expm1(l) - l``, with
  the entries where that is below its one cut-off (|l| <~ 0.01) replaced (in torch out of
  place, so autograd sees it) by its Taylor series, without cancellation.
- ``clamp_output(fn, args, lo, hi)`` equals ``clamp(fn(*args), lo, hi)`` in value and in
  gradient (zero where the clamp is active, ``fn``'s gradient where it is not, inclusive at
  the bounds as in ``torch.clamp``), but evaluates ``fn`` with differentiable inputs only
  where the clamp is inactive. A plain ``torch.clamp(torch.exp(x) - 1 - x, max=10)`` at
  x = 800 has a NaN gradient (``0 * exp(800)``); this one has 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from klest._special import EXPM1_MINUS_SERIES, EXPM1_MINUS_SWITCH
from klest.estimators import expm1_minus_x

__all__ = ["NUMPY", "NumpyOps", "TorchOps", "get_ops", "is_tensor", "log_ratio_estimator"]


def is_tensor(x: Any) -> bool:
    """True for a torch.Tensor, without importing torch (none can exist if it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class NumpyOps:
    """float64 numpy operations; gradients do not exist, ``stop_gradient`` is the identity."""

    name = "numpy"

    def asarray(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def exp(self, x: np.ndarray) -> np.ndarray:
        return np.exp(x)

    def log(self, x: np.ndarray) -> np.ndarray:
        return np.log(x)

    def abs(self, x: np.ndarray) -> np.ndarray:
        return np.abs(x)

    def clip(self, x: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
        return np.clip(x, lo, hi) if (lo is not None or hi is not None) else x

    def where(self, cond: Any, a: Any, b: Any) -> np.ndarray:
        return np.where(cond, a, b)

    def stop_gradient(self, x: np.ndarray) -> np.ndarray:
        return x

    def k3(self, l: np.ndarray) -> np.ndarray:
        return expm1_minus_x(np.atleast_1d(l)).reshape(np.shape(l))  # compiled, _special's bits

    def clamp_output(
        self, fn: Callable[..., np.ndarray], args: Sequence[Any], lo: float, hi: float
    ) -> np.ndarray:
        return np.clip(fn(*args), lo, hi)

    def nan_to_zero(self, x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def nonfinite(self, x: np.ndarray) -> np.ndarray:
        return ~np.isfinite(x)

    def sum_last(self, x: np.ndarray) -> np.ndarray:
        return np.sum(x, axis=-1, keepdims=True)

    def max_last(self, x: np.ndarray) -> np.ndarray:
        return np.max(x, axis=-1, keepdims=True)

    def ones_like(self, x: np.ndarray) -> np.ndarray:
        return np.ones_like(x)


NUMPY = NumpyOps()


class TorchOps:
    """torch operations in float64 on the inputs' device, differentiable end to end."""

    name = "torch"

    def __init__(self, device: Any = None) -> None:
        import torch  # already imported by the caller: a tensor was passed in

        self.torch = torch
        self.device = device

    def asarray(self, x: Any) -> Any:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(dtype=t.float64)
        return t.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)

    def exp(self, x: Any) -> Any:
        return self.torch.exp(x)

    def log(self, x: Any) -> Any:
        return self.torch.log(x)

    def abs(self, x: Any) -> Any:
        return self.torch.abs(x)

    def clip(self, x: Any, lo: float | None, hi: float | None) -> Any:
        return self.torch.clamp(x, min=lo, max=hi) if (lo is not None or hi is not None) else x

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        t = self.torch
        if not isinstance(a, t.Tensor):
            a = t.as_tensor(a, dtype=t.float64, device=cond.device)
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=t.float64, device=cond.device)
        return t.where(cond, a, b)

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def k3(self, l: Any) -> Any:
        out = self.torch.expm1(l) - l  # finite wherever l is, so no 0 * inf in backward
        small = out.detach() < EXPM1_MINUS_SWITCH  # NaN (l = +inf, NaN) stays as it is
        if bool(small.any()):
            ls = l[small]
            acc = self.torch.full_like(ls, EXPM1_MINUS_SERIES[0])
            for c in EXPM1_MINUS_SERIES[1:]:
                acc = acc * ls + c
            out = out.index_put((small,), acc * ls * ls)  # out of place: autograd intact
        return out

    def clamp_output(
        self, fn: Callable[..., Any], args: Sequence[Any], lo: float, hi: float
    ) -> Any:
        t = self.torch
        with t.no_grad():
            v0 = fn(*[a.detach() if isinstance(a, t.Tensor) else a for a in args])
            clamped = (v0 > hi) | (v0 < lo)
        if not clamped.any():
            return fn(*args)
        zero = t.zeros((), dtype=v0.dtype, device=v0.device)
        safe = [t.where(clamped, zero, a) if isinstance(a, t.Tensor) else a for a in args]
        return t.where(clamped, v0.clamp(lo, hi), fn(*safe))

    def nan_to_zero(self, x: Any) -> Any:
        return self.torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def nonfinite(self, x: Any) -> Any:
        return ~self.torch.isfinite(x)

    def sum_last(self, x: Any) -> Any:
        return x.sum(dim=-1, keepdim=True)

    def max_last(self, x: Any) -> Any:
        return x.amax(dim=-1, keepdim=True)

    def ones_like(self, x: Any) -> Any:
        return self.torch.ones_like(x)


def get_ops(*xs: Any) -> NumpyOps | TorchOps:
    """``TorchOps`` (on the first tensor's device) if any argument is a tensor, else numpy."""
    for x in xs:
        if is_tensor(x):
            return TorchOps(x.device)
    return NUMPY


def _negate(l: Any) -> Any:
    return -l


def _half_square(l: Any) -> Any:
    return 0.5 * (l * l)


def log_ratio_estimator(ops: Any, kind: str) -> Callable[[Any], Any]:
    """The frameworks' per-token k1, k2 or k3 as a function of l = ref_logprob - logprob:
    ``-l``, ``0.5 * (l * l)``, or ``ops.k3`` (stable, with NaN-free gradients)."""
    return {"k1": _negate, "k2": _half_square}.get(kind, ops.k3)
