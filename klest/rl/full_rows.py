"""The row arithmetic of :func:`klest.rl.full_kl` on NumPy or torch (float64 chunks), its
argument checks, and the torch autograd function.

The same formula as the compiled kernel (klest/native/csrc/full_kl.c, which explains it):
with d = b - a (the logit difference, with its rounding error as a second word for float64
inputs) and c = lse(b) - lse(a), the log-ratio is t = d - c and KL = sum p k3(t) - k3(log1p G),
G = sum p expm1(t): the terms come from the logit difference, not from two rounded
log-softmaxes, and the per-row constant's rounding error cancels to second order. Used where
the compiled kernel is not (``KLEST_NATIVE=0``, tensors on an accelerator) and for the
gradients; the two agree to a few ulp, not bit for bit (their sums run in other orders).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from klest.errors import check_integer
from klest.rl._backend import TorchOps, is_tensor

__all__ = ["DIRECTIONS", "kl_rows", "pair_shape", "rows_per_chunk", "torch_function", "validate"]

#: full_kl's ``direction`` strings -> whether the arguments are swapped (KL(ref||pi))
DIRECTIONS = {
    "KL(pi||ref)": False,
    "KL(q||p)": False,
    "KL(ref||pi)": True,
    "KL(p||q)": True,
}


def pair_shape(logits: Any, ref_logits: Any, what: str) -> tuple[tuple[int, ...], int]:
    """(leading shape, V) of two logit arrays of one shape (..., V) with V >= 1; ``what``
    (the calling function's name) opens the error message."""
    shape, ref_shape = tuple(np.shape(logits)), tuple(np.shape(ref_logits))
    if shape != ref_shape:
        raise ValueError(
            f"{what}: logits and ref_logits must have the same shape (..., V), got {shape} "
            f"and {ref_shape}"
        )
    if len(shape) == 0 or shape[-1] == 0:
        raise ValueError(f"{what}: logits need a non-empty last (vocabulary) axis, got {shape}")
    return shape[:-1], shape[-1]


def rows_per_chunk(chunk_size: Any, vocab: int, elements: int) -> int:
    """Positions per chunk: ``chunk_size`` (checked), or as many rows of ``vocab`` entries as
    fit in ``elements`` (at least one)."""
    if chunk_size is None:
        return max(1, elements // vocab)
    return check_integer("chunk_size", chunk_size, minimum=1)


def _expm1(ops: Any, x: Any) -> Any:
    return ops.torch.expm1(x) if ops.name == "torch" else np.expm1(x)


def _log1p_gap(ops: Any, g: Any) -> Any:
    """k3(log1p g) = g - log1p(g) >= 0, by its series where |g| < 1e-3."""
    series = g * g * (0.5 - g * (1.0 / 3.0 - g * (0.25 - g * 0.2)))
    direct = g - (ops.torch.log1p(g) if ops.name == "torch" else np.log1p(g))
    return ops.where(ops.abs(g) < 1e-3, series, direct)


def kl_rows(ops: Any, a: Any, b: Any, two_word: bool, keep: Any = None) -> tuple:
    """(KL, t, p, r) of float64 2-D chunks (rows of logits): KL per row (shape (rows,)),
    the log-ratio t = log r - log p, and the two softmaxes. ``two_word``: the chunks were
    float64 before (b - a is then rounded; its error joins t). ``keep``: a boolean
    (rows or 1, V) array, False entries count as -inf in both rows.

    Where p = 0 the term is r (0 log 0 = 0); where e^t overflows, (r - p) - p t; where
    r = 0 < p, +inf. A NaN or +inf logit makes the row NaN (its maximum is NaN or +inf).
    """
    if keep is not None:
        a = ops.where(keep, a, -math.inf)
        b = ops.where(keep, b, -math.inf)
    ma, mb = ops.max_last(a), ops.max_last(b)
    ea = ops.exp(a - ma)
    sa, eb = ops.sum_last(ea), ops.exp(b - mb)
    sb = ops.sum_last(eb)
    p, r = ea / sa, eb / sb
    c = (mb - ma) + ops.log(sb / sa)
    hi = b - a
    t = hi - c
    if two_word:
        bp = hi + a
        low = (b - bp) + (-a - (hi - bp))
        t = t + ops.where(low == low, low, 0.0)  # hi = +-inf: no second word
    em = _expm1(ops, t)
    usual = (p != 0) & (em != math.inf)
    terms = ops.where(usual, p * ops.k3(t), ops.where(p == 0, r, (r - p) - p * t))
    gap = ops.where(usual, p * em, r - p)
    total, g = ops.sum_last(terms)[..., 0], ops.sum_last(gap)[..., 0]
    kl = ops.where(total < math.inf, total - _log1p_gap(ops, g), total)
    kl = ops.where(kl < 0, 0.0, kl)  # S >= KL >= 0: a rounding below 0 is 0 (NaN stays)
    return kl, t, p, r


def _to_numpy(x: Any) -> np.ndarray:
    return x.cpu().numpy() if is_tensor(x) else np.asarray(x)


def validate(
    x: Any, m: Any, rows: np.ndarray, lead: tuple[int, ...], name: str, nonfinite: str
) -> None:
    """Raise for a row of the 2-D chunk ``x`` (row maxima ``m``; ``rows`` the flat positions
    of its rows) that is -inf everywhere, and with ``nonfinite="raise"`` for a NaN or +inf
    entry; the message names the argument, the position in the leading shape and the entry."""
    empty = m[..., 0] == -math.inf
    if bool(empty.any()):
        row = int(rows[int(np.flatnonzero(_to_numpy(empty))[0])])
        pos = tuple(int(i) for i in np.unravel_index(row, lead))
        raise ValueError(
            f"full_kl: {name} at position {pos} is -inf in every vocabulary entry "
            "(a row of -inf has no softmax)"
        )
    if nonfinite != "raise":
        return
    bad = ~(x < math.inf)  # NaN or +inf
    if bool(bad.any()):
        row, v = (int(i) for i in np.argwhere(_to_numpy(bad))[0])
        pos = tuple(int(i) for i in np.unravel_index(int(rows[row]), lead))
        what = "nan" if math.isnan(float(x[row, v])) else "+inf"
        raise ValueError(
            f"full_kl: {name}[{', '.join(map(str, (*pos, v)))}] is {what} (position {pos}, "
            f"vocabulary entry {v}); nonfinite='raise' rejects NaN and +inf logits "
            "(nonfinite='propagate' gives NaN at such positions)"
        )


_FUNCTION: Any = None


def _fix_rows(x: Any, nan_rows: Any, zero_rows: Any) -> Any:
    """Set whole rows of the 2-D tensor ``x`` to NaN, then others to 0 (only those rows)."""
    if bool(nan_rows.any()):
        x[nan_rows] = math.nan
    if bool(zero_rows.any()):
        x[zero_rows] = 0.0
    return x


def torch_function() -> Any:
    """The autograd function ``FullKL.apply(a, b, forward, chunks)``: ``forward(a, b)`` gives
    the float64 KL of the 2-D tensors a and b; ``chunks()`` yields ``(index, a64, b64, keep)``
    for the backward pass: the rows ``index`` (a slice or an index tensor; rows left out are
    masked positions, gradient 0) as float64 chunks with their vocabulary mask (or None). The
    backward recomputes each chunk's softmaxes (nothing of size positions x V is kept for
    it): d KL/d a = p (u - KL) with u = -t, d KL/d b = r - p. Defined on first use (torch)."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch  # deferred: torch is optional
    from torch.autograd.function import once_differentiable

    class FullKL(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any, b: Any, forward: Any, chunks: Any) -> Any:
            out = forward(a, b)
            ctx.save_for_backward(a, b, out)
            ctx.chunks = chunks
            return out

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad: Any) -> Any:
            a, b, kl = ctx.saved_tensors
            need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            ga = torch.zeros_like(a) if need_a else None
            gb = torch.zeros_like(b) if need_b else None
            ops = TorchOps(a.device)
            for index, a64, b64, keep in ctx.chunks():
                _, t, p, r = kl_rows(ops, a64, b64, True, keep)
                g, k = grad[index, None].double(), kl[index, None].double()
                # rows outside the loss (incoming gradient 0: masked by where, indexing or
                # mask=) get 0 whatever their logits; a NaN KL gives NaN, a +inf KL NaN for a
                dead, nan_kl = (g == 0)[:, 0], torch.isnan(k)[:, 0]
                if need_a:  # p (u - KL) = -p (t + KL), 0 where p = 0, in place (chunk memory)
                    u = t.add_(k).mul_(p).neg_().masked_fill_(p == 0, 0.0).mul_(g)
                    ga[index] = _fix_rows(u, nan_kl | (k[:, 0] == math.inf), dead)
                if need_b:  # r - p: finite also where KL = +inf (its limit there)
                    gb[index] = _fix_rows(r.sub_(p).mul_(g), nan_kl, dead)
            return ga, gb, None, None

    _FUNCTION = FullKL
    return FullKL
