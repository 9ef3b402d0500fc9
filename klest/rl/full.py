"""``full_kl``: the exact KL between two softmax policies at every position, from logits.

For logits a (policy π) and b (reference π_ref) of shape (..., V), with p = softmax(a),
r = softmax(b) and u = log p - log r,

    KL(π‖π_ref) = sum_v p_v u_v = sum_v (p_v·k3(-u_v)),   k3(x) = e^x - 1 - x >= 0,

because sum_v p_v (e^{-u_v} - 1) = sum_v (r_v - p_v) = 0. Every term is non-negative, so
near-identical policies give a KL accurate to a few ulp instead of the cancellation left by
sum_v p_v u_v. Where p_v = 0 the term is r_v (0·log 0 = 0 and the r_v of the identity);
where r_v = 0 < p_v it is +inf.

Positions are processed in chunks, each converted to float64 on its own, so the memory used
beyond the inputs is a few float64 arrays of ``chunk_size × V`` whatever the number of
positions. For torch inputs the gradient is computed by a custom autograd function that
recomputes each chunk's softmaxes in the backward pass (nothing of size positions × V is
kept for it): d KL/d a_v = p_v (u_v - KL), d KL/d b_v = r_v - p_v.

Non-finite logits, position by position (a bad row never changes another row's value or
gradient):

- ``-inf`` is a legal logit, a zero-probability entry: p_v = 0 contributes r_v (and a
  gradient 0 with respect to a_v); r_v = 0 < p_v makes the KL ``+inf``. A row that is -inf
  everywhere has no softmax: ValueError naming the argument and position.
- ``NaN`` anywhere in a row of either argument makes that row's KL NaN. ``+inf`` also gives
  NaN: softmax with a +inf logit is inf/inf (the limit would be a point mass for a single
  +inf but is undefined for two, and a +inf logit is an overflow upstream, not a
  distribution), as ``torch.softmax`` gives. ``nonfinite="raise"`` makes either a
  ValueError naming the argument, the position and the vocabulary entry instead.
- Gradients (torch) are finite in every row whose KL is finite. A row whose KL is NaN has
  NaN gradients; a row whose KL is +inf has a NaN gradient with respect to a (the KL is
  +inf for every finite a there: no derivative) and r - p with respect to b (finite: the
  limit of the gradient as the offending b_v goes to -inf). A row whose incoming gradient is
  0 (left out of the loss with ``torch.where`` or boolean indexing) gets gradient 0 whatever
  its logits, so masked padding with NaN logits cannot poison a masked reduction. (Masking
  by multiplication is not masking: NaN · 0 = NaN already in the value.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from klest.errors import check_integer
from klest.rl._backend import NUMPY, TorchOps, get_ops, is_tensor

__all__ = ["DIRECTIONS", "full_kl"]

#: accepted ``direction`` strings -> whether the arguments are swapped (KL(ref||pi))
DIRECTIONS = {
    "KL(pi||ref)": False,
    "KL(q||p)": False,
    "KL(ref||pi)": True,
    "KL(p||q)": True,
}
#: float64 entries per chunk array when ``chunk_size`` is None (8 MB per array)
CHUNK_ELEMENTS = 1 << 20
#: accepted ``nonfinite`` strings
NONFINITE = ("propagate", "raise")
# where u = log p - log r < -30 (r > 1e13 p) a term is computed as (r - p) + p u
_LARGE_RATIO = -30.0
# validates float64 chunks a, b given their row maxima: (a, max a, b, max b, first row)
Check = Callable[[Any, Any, Any, Any, int], None]


def _rows_per_chunk(chunk_size: int | None, vocab: int) -> int:
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // vocab)
    return check_integer("chunk_size", chunk_size, minimum=1)


def _log_softmax(ops: Any, x: Any, m: Any) -> tuple[Any, Any]:
    """(log-softmax, softmax) of float64 rows with maxima ``m`` (validated by ``_validate``)."""
    shifted = x - m
    e = ops.exp(shifted)
    s = ops.sum_last(e)
    return shifted - ops.log(s), e / s


def _kl_rows(ops: Any, a: Any, b: Any, check: Check | None = None, start: int = 0) -> tuple:
    """Per-row KL(softmax a || softmax b) of float64 2-D chunks, plus the pieces for backward.

    The term of entry v is r_v where p_v = 0 (tested as ``p == 0``, False for NaN, so that
    a NaN row stays NaN) and p_v k3(-u_v) otherwise, computed as (r_v - p_v) + p_v u_v
    where u_v < -30 (r_v > 1e13 p_v: no cancellation): e^{-u_v} overflows there for a
    subnormal p_v although the term is about r_v.
    """
    ma, mb = ops.max_last(a), ops.max_last(b)
    if check is not None:
        check(a, ma, b, mb, start)
    la, p = _log_softmax(ops, a, ma)
    lb, r = _log_softmax(ops, b, mb)
    u = la - lb
    terms = p * ops.k3(-u)
    large = u < _LARGE_RATIO
    if bool(large.any()):  # rare: a second full-size expression only when needed
        terms = ops.where(large, (r - p) + p * u, terms)
    terms = ops.where(p == 0, r, terms)
    return ops.sum_last(terms)[..., 0], la, lb, p, r


def _to_numpy(x: Any) -> np.ndarray:
    return x.cpu().numpy() if is_tensor(x) else np.asarray(x)


def _validate(x: Any, m: Any, start: int, lead: tuple[int, ...], name: str, nonfinite: str) -> None:
    """Raise for a row of the 2-D chunk ``x`` (row maxima ``m``, first row at flat position
    ``start``) that is -inf everywhere, and with ``nonfinite="raise"`` for a NaN or +inf
    entry; the message names the argument, the position in the leading shape and the entry."""
    empty = m[..., 0] == -math.inf
    if bool(empty.any()):
        row = start + int(np.flatnonzero(_to_numpy(empty))[0])
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
        pos = tuple(int(i) for i in np.unravel_index(start + row, lead))
        what = "nan" if math.isnan(float(x[row, v])) else "+inf"
        raise ValueError(
            f"full_kl: {name}[{', '.join(map(str, (*pos, v)))}] is {what} (position {pos}, "
            f"vocabulary entry {v}); nonfinite='raise' rejects NaN and +inf logits "
            "(nonfinite='propagate' gives NaN at such positions)"
        )


def _check(logits: Any, ref_logits: Any) -> tuple[tuple[int, ...], int]:
    shape, ref_shape = tuple(np.shape(logits)), tuple(np.shape(ref_logits))
    if shape != ref_shape:
        raise ValueError(
            f"full_kl: logits and ref_logits must have the same shape (..., V), got {shape} "
            f"and {ref_shape}"
        )
    if len(shape) == 0 or shape[-1] == 0:
        raise ValueError(f"full_kl: logits need a non-empty last (vocabulary) axis, got {shape}")
    return shape[:-1], shape[-1]


def _numpy_full_kl(a: np.ndarray, b: np.ndarray, rows: int, check: Check) -> np.ndarray:
    lead, vocab = a.shape[:-1], a.shape[-1]
    a2, b2 = a.reshape(-1, vocab), b.reshape(-1, vocab)
    out = np.empty(a2.shape[0], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for s in range(0, a2.shape[0], rows):
            a64 = np.asarray(a2[s : s + rows], dtype=np.float64)
            b64 = np.asarray(b2[s : s + rows], dtype=np.float64)
            out[s : s + rows] = _kl_rows(NUMPY, a64, b64, check, s)[0]
    return out.reshape(lead)


_FUNCTION: Any = None


def _fix_rows(x: Any, nan_rows: Any, zero_rows: Any) -> Any:
    """Set whole rows of the 2-D tensor ``x`` to NaN, then others to 0 (only those rows)."""
    if bool(nan_rows.any()):
        x[nan_rows] = math.nan
    if bool(zero_rows.any()):
        x[zero_rows] = 0.0
    return x


def _torch_function() -> Any:
    """The autograd function, defined on first use so that torch is imported only then."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch
    from torch.autograd.function import once_differentiable

    class FullKL(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any, b: Any, rows: int, check: Check) -> Any:
            ops = TorchOps(a.device)
            out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
            for s in range(0, a.shape[0], rows):
                a64, b64 = a[s : s + rows].double(), b[s : s + rows].double()
                out[s : s + rows] = _kl_rows(ops, a64, b64, check, s)[0]
            ctx.save_for_backward(a, b, out)
            ctx.rows = rows
            return out

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad: Any) -> Any:
            a, b, kl = ctx.saved_tensors
            need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            ga = torch.empty_like(a) if need_a else None
            gb = torch.empty_like(b) if need_b else None
            ops = TorchOps(a.device)
            for s in range(0, a.shape[0], ctx.rows):
                e = s + ctx.rows
                _, la, lb, p, r = _kl_rows(ops, a[s:e].double(), b[s:e].double())
                g, k = grad[s:e, None].double(), kl[s:e, None]
                # rows outside the loss (incoming gradient 0: masked by where or indexing)
                # get 0 whatever their logits; a NaN KL gives NaN, a +inf KL NaN for `a`
                dead, nan_kl = (g == 0)[:, 0], torch.isnan(k)[:, 0]
                if need_a:  # p (u - KL), 0 where p = 0; in place to keep the chunk's memory small
                    u = la.sub_(lb).sub_(k).mul_(p).masked_fill_(p == 0, 0.0).mul_(g)
                    ga[s:e] = _fix_rows(u, nan_kl | (k[:, 0] == math.inf), dead)
                if need_b:  # r - p: finite also where KL = +inf (its limit there)
                    gb[s:e] = _fix_rows(r.sub_(p).mul_(g), nan_kl, dead)
            return ga, gb, None, None

    _FUNCTION = FullKL
    return FullKL


def _torch_full_kl(a: Any, b: Any, rows: int, check: Check) -> Any:
    import torch

    ops = get_ops(a, b)
    if not is_tensor(a):
        a = torch.as_tensor(np.asarray(a), device=ops.device)
    if not is_tensor(b):
        b = torch.as_tensor(np.asarray(b), device=ops.device)
    dtypes = [t.dtype for t in (a, b) if t.is_floating_point()]
    dtype = dtypes[0] if dtypes else torch.get_default_dtype()
    for d in dtypes[1:]:
        dtype = torch.promote_types(dtype, d)
    lead, vocab = tuple(a.shape[:-1]), a.shape[-1]
    out = _torch_function().apply(a.reshape(-1, vocab), b.reshape(-1, vocab), rows, check)
    return out.reshape(lead).to(dtype)


def full_kl(
    logits: Any,
    ref_logits: Any,
    *,
    direction: str = "KL(pi||ref)",
    chunk_size: int | None = None,
    nonfinite: str = "propagate",
) -> Any:
    """Exact KL(π‖π_ref) at every position, from logits of shape (..., V): shape (...).

    ``logits`` are the policy's (π = softmax(logits)), ``ref_logits`` the reference's; any
    shift of a row leaves it unchanged (log-probabilities work as logits). ``direction=
    "KL(ref||pi)"`` gives KL(π_ref‖π) (klest's names ``"KL(q||p)"``/``"KL(p||q)"`` work too,
    q being the policy). Positions are processed ``chunk_size`` at a time (default: as many
    as fit 2**20 float64 entries, 8 MB per working array), each chunk in float64. numpy
    input gives a float64 ndarray; torch input a tensor of the inputs' floating dtype,
    differentiable with respect to both logits (first-order gradients).

    Non-finite logits (details in the module docstring): -inf is a zero-probability entry
    (KL(P‖Q) = +inf where Q has a zero and P has not); a NaN or +inf logit gives NaN at that
    position by default (``nonfinite="propagate"``), or a ValueError naming the argument and
    position with ``nonfinite="raise"``. torch gradients: finite wherever the KL is; NaN in
    a NaN row; in a row where KL(P‖Q) = +inf, NaN with respect to P's logits and
    softmax(Q) - softmax(P) with respect to Q's; 0 in a row whose incoming gradient is 0.

    >>> import numpy as np
    >>> from klest import rl
    >>> a = np.log([[0.5, 0.5], [0.9, 0.1]])
    >>> b = np.log([[0.5, 0.5], [0.5, 0.5]])
    >>> rl.full_kl(a, b).round(6)
    array([0.      , 0.368064])
    >>> rl.full_kl(a, b, direction="KL(ref||pi)").round(6)
    array([0.      , 0.510826])
    >>> rl.full_kl([[0.0, np.nan], [0.0, 1.0]], [[0.0, 0.0], [0.0, -np.inf]]).tolist()
    [nan, inf]
    >>> rl.full_kl([0.0, np.nan], [0.0, 0.0], nonfinite="raise")
    Traceback (most recent call last):
    ...
    ValueError: full_kl: logits[1] is nan (position (), vocabulary entry 1); ...
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    if not isinstance(nonfinite, str) or nonfinite not in NONFINITE:
        raise ValueError(
            f"nonfinite must be one of {', '.join(map(repr, NONFINITE))}; got {nonfinite!r}"
        )
    lead, vocab = _check(logits, ref_logits)
    rows = _rows_per_chunk(chunk_size, vocab)
    swap = DIRECTIONS[direction]
    a, b = (ref_logits, logits) if swap else (logits, ref_logits)
    name_a, name_b = ("ref_logits", "logits") if swap else ("logits", "ref_logits")

    def check(a_chunk: Any, a_max: Any, b_chunk: Any, b_max: Any, start: int) -> None:
        _validate(a_chunk, a_max, start, lead, name_a, nonfinite)
        _validate(b_chunk, b_max, start, lead, name_b, nonfinite)

    if is_tensor(a) or is_tensor(b):
        return _torch_full_kl(a, b, rows, check)
    return _numpy_full_kl(np.asarray(a), np.asarray(b), rows, check)


def penalty_full(
    logprob: Any,
    ref_logprob: Any,
    *,
    logits: Any = None,
    ref_logits: Any = None,
    chunk_size: int | None = None,
    nonfinite: str = "propagate",
) -> Any:
    """The ``full`` kind of ``kl_penalty``: full_kl from ``logits=``/``ref_logits=`` or, when
    they are not given, from ``logprob``/``ref_logprob`` holding the whole vocabulary's
    log-probabilities (shape (..., V), as TRL's legacy ``kl_penalty="full"`` takes them)."""
    if (logits is None) != (ref_logits is None):
        raise ValueError("kind 'full': give both logits= and ref_logits=, or neither")
    if logits is None:
        if logprob is None or ref_logprob is None:
            raise ValueError("kind 'full' needs full-vocabulary logits (logits=, ref_logits=)")
        return full_kl(logprob, ref_logprob, chunk_size=chunk_size, nonfinite=nonfinite)
    for name, x in (("logprob", logprob), ("ref_logprob", ref_logprob)):
        if x is not None and tuple(np.shape(x)) != tuple(np.shape(logits))[:-1]:
            raise ValueError(
                f"kind 'full': {name} has shape {tuple(np.shape(x))} but the logits have "
                f"{tuple(np.shape(logits))}; expected {name} of shape logits.shape[:-1]"
            )
    return full_kl(logits, ref_logits, chunk_size=chunk_size, nonfinite=nonfinite)
