"""``full_kl``: the exact KL between two softmax policies at every position, from logits.

For logits a (policy π) and b (reference π_ref) of shape (..., V), with p = softmax(a),
r = softmax(b), the logit difference d = b - a and the per-row constant c = lse(b) - lse(a)
(lse: log-sum-exp), the log-ratio is t_v = log r_v - log p_v = d_v - c and

    KL(π‖π_ref) = sum_v p_v k3(t_v),   k3(t) = e^t - 1 - t >= 0,

because sum_v p_v (e^{t_v} - 1) = sum_v (r_v - p_v) = 0. Every term is non-negative, and
t_v comes from the logit difference (exact for float32 and bfloat16 logits; for float64 ones
its rounding error is kept as a second word) minus one constant per row, not from the
difference of two rounded log-softmaxes: near-identical policies keep their digits. The
rounding error e of c changes the sum only at second order: S(c) = sum_v p_v k3(d_v - c) is
convex in c with its minimum KL at the exact c, and S(c) - KL = k3(log1p G) with
G = sum_v p_v expm1(t_v), which is accumulated too and subtracted. The result is within
about 1e-15 relative of the exact KL of the given logits (tests/test_rl_full_kl.py, against
mpmath at 40 digits, V = 50 and V = 1,000, perturbations from 1e-9 to 3, shifted rows).
Where p_v = 0 the term is r_v (0·log 0 = 0 and the r_v of the identity); where r_v = 0 < p_v
it is +inf; where e^{t_v} overflows, (r_v - p_v) - p_v t_v.

The compiled kernel (klest/native/csrc/full_kl.c: three passes per row, klest's own
vectorised exp and expm1 at the CPU's SIMD level, no copy of the inputs) evaluates numpy
arrays and CPU tensors of float64, float32 or bfloat16 as they are (float16 is converted to
float32 chunk by chunk); with ``KLEST_NATIVE=0``, without the compiled library, and for
tensors on an accelerator, :mod:`klest.rl.full_rows` evaluates the same formula chunk by
chunk in float64 with numpy or torch. The two agree to a few ulp (not bit for bit: their
sums run in other orders). Memory beyond the inputs is a few float64 arrays of
``chunk_size x V`` entries (the compiled route: one row), whatever the number of positions.
For torch inputs the gradient is computed by a custom autograd function that recomputes
each chunk's softmaxes in the backward pass (nothing of size positions × V is kept for it):
d KL/d a_v = p_v (u_v - KL) with u = -t, d KL/d b_v = r_v - p_v.

Non-finite logits, position by position (a bad row never changes another row's value or
gradient):

- ``-inf`` is a legal logit, a zero-probability entry: p_v = 0 contributes r_v (and a
  gradient 0 with respect to a_v); r_v = 0 < p_v makes the KL ``+inf``. A row that is -inf
  everywhere (among its kept entries) has no softmax: ValueError naming the argument and
  position (unless the position is masked).
- ``NaN`` anywhere in a row of either argument makes that row's KL NaN. ``+inf`` also gives
  NaN: softmax with a +inf logit is inf/inf (the limit would be a point mass for a single
  +inf but is undefined for two, and a +inf logit is an overflow upstream, not a
  distribution), as ``torch.softmax`` gives. ``nonfinite="raise"`` makes either a
  ValueError naming the argument, the position and the vocabulary entry instead.
- Gradients (torch) are finite in every row whose KL is finite. A row whose KL is NaN has
  NaN gradients; a row whose KL is +inf has a NaN gradient with respect to a (the KL is
  +inf for every finite a there: no derivative) and r - p with respect to b (finite: the
  limit of the gradient as the offending b_v goes to -inf). A row whose incoming gradient is
  0 (left out of the loss with ``torch.where``, boolean indexing or ``mask=``) gets gradient
  0 whatever its logits, so masked padding with NaN logits cannot poison a masked reduction.
  (Masking by multiplication is not masking: NaN · 0 = NaN already in the value.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from klest import native
from klest.rl._backend import NUMPY, TorchOps, get_ops, is_tensor
from klest.rl.emulate import emulated_full_kl
from klest.rl.full_rows import (
    DIRECTIONS,
    kl_rows,
    pair_shape,
    rows_per_chunk,
    torch_function,
    validate,
)

__all__ = ["DIRECTIONS", "full_kl"]

#: float64 entries per chunk array when ``chunk_size`` is None (8 MB per array)
CHUNK_ELEMENTS = 1 << 20
#: accepted ``nonfinite`` strings
NONFINITE = ("propagate", "raise")
#: the compiled row kernel (None with KLEST_NATIVE=0 or without the compiled library)
_NATIVE_ROWS = native.full_kl_rows
_ROW_OK, _ROW_SKIPPED = 0, 4
#: element types the compiled kernel reads as they are
_NATIVE_KINDS = ("float64", "float32", "bfloat16")


class _Masks:
    """``mask=`` as flat kept positions ``rows`` (bool (n,), or None: all) and a vocabulary
    mask ``vocab`` (a broadcast bool view of shape (n, V) or (1, V), or None). A mask with
    the logits' number of dimensions masks entries (and a position whose every entry is
    masked is a masked position); one that broadcasts to the positions masks positions."""

    def __init__(self, mask: Any, lead: tuple[int, ...], vocab: int) -> None:
        self.rows: np.ndarray | None = None
        self.vocab: np.ndarray | None = None
        if mask is None:
            return
        m = mask.detach().cpu().numpy() if is_tensor(mask) else np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"full_kl: mask must be boolean (True: kept), got dtype {m.dtype}")
        n, full = math.prod(lead), (*lead, vocab)
        try:
            if m.ndim == len(full):
                shared = all(d == 1 for d in m.shape[:-1])
                v = m.reshape(1, m.shape[-1]) if shared else m
                v = np.broadcast_to(v, (1, vocab) if shared else full).reshape(-1, vocab)
                self.vocab = v
                self.rows = np.broadcast_to(v.any(axis=-1), (n,))
            else:
                self.rows = np.broadcast_to(m, lead).reshape(n)
        except ValueError:
            raise ValueError(
                f"full_kl: mask of shape {m.shape} broadcasts neither to the positions {lead} "
                f"nor to the logits {full}"
            ) from None
        if bool(self.rows.all()):
            self.rows = None

    def chunk(self, s: int, e: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(the kept rows of [s, e) as offsets from s, or None for all; the vocabulary mask
        of rows s..e (one row if it is shared), or None)"""
        kept = None if self.rows is None else np.flatnonzero(self.rows[s:e])
        v = self.vocab
        return kept, v if v is None or v.shape[0] == 1 else v[s:e]


def _rows_of(vocab: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray | None:
    """The rows ``rows`` of a chunk's vocabulary mask (a shared one as it is)."""
    if vocab is None or vocab.shape[0] == 1 or rows is None:
        return vocab
    return vocab[rows]


def _native_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """2-D chunks a, b (numpy arrays or CPU tensors) as arrays the compiled kernel reads:
    both float64, float32 or bfloat16 bits as they are; otherwise converted (float16 and
    bfloat16 to float32 exactly, the rest to float64)."""
    names = [str(x.dtype).removeprefix("torch.") if is_tensor(x) else x.dtype.name for x in (a, b)]
    if names[0] == names[1] and names[0] in _NATIVE_KINDS:
        kind = names[0]
    elif all(n in ("float32", "float16", "bfloat16") for n in names):
        kind = "float32"
    else:
        kind = "float64"

    def view(x: Any) -> np.ndarray:
        if is_tensor(x):
            x = x.detach().contiguous()
            if kind == "bfloat16":
                return x.view(_torch().int16).numpy().view(np.uint16)
            return x.to(getattr(_torch(), kind)).numpy()
        return np.ascontiguousarray(x, dtype=kind)

    return view(a), view(b), kind


def _readable(a: Any, b: Any) -> bool:
    """True if the compiled kernel reads a and b without a conversion or a copy."""
    names = [str(x.dtype).removeprefix("torch.") if is_tensor(x) else x.dtype.name for x in (a, b)]
    contiguous = all(x.is_contiguous() if is_tensor(x) else x.flags.c_contiguous for x in (a, b))
    return contiguous and names[0] == names[1] and names[0] in _NATIVE_KINDS


def _as_float64(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "bfloat16":
        return (x.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def _torch() -> Any:
    import torch  # deferred: torch is optional (a tensor was passed in)

    return torch


class _Call:
    """One full_kl call on flat (n, V) inputs: chunks, masks, validation, both routes."""

    def __init__(self, rows: int, lead: tuple, names: tuple, nonfinite: str, masks: _Masks) -> None:
        self.rows, self.lead, self.names = rows, lead, names
        self.nonfinite, self.masks = nonfinite, masks
        self.a: Any = None
        self.b: Any = None

    def check(self, ops: Any, a64: Any, b64: Any, keep: Any, flat: np.ndarray) -> None:
        """Raise for an empty row, or (nonfinite="raise") a NaN / +inf logit: a before b."""
        if keep is not None:
            a64, b64 = ops.where(keep, a64, -math.inf), ops.where(keep, b64, -math.inf)
        validate(a64, ops.max_last(a64), flat, self.lead, self.names[0], self.nonfinite)
        validate(b64, ops.max_last(b64), flat, self.lead, self.names[1], self.nonfinite)

    def chunks(self, ops: Any) -> Iterator[tuple[Any, np.ndarray, Any, Any, Any]]:
        """(index of the kept rows: a slice or an index array / tensor, their flat positions,
        a64, b64, vocabulary mask) for every chunk, converted to float64 by ``ops``."""
        n = self.a.shape[0]
        for s in range(0, n, self.rows):
            e = min(n, s + self.rows)
            kept, vocab = self.masks.chunk(s, e)
            index: Any = slice(s, e)
            if kept is not None:
                if not len(kept):
                    continue
                index = s + kept if ops is NUMPY else ops.torch.as_tensor(s + kept)
                index = index if ops is NUMPY else index.to(self.a.device)
            vocab = _rows_of(vocab, kept)
            if vocab is not None and ops is not NUMPY:
                vocab = ops.torch.as_tensor(np.array(vocab), device=self.a.device)
            flat = np.arange(s, e) if kept is None else s + kept
            yield index, flat, ops.asarray(self.a[index]), ops.asarray(self.b[index]), vocab

    def ops_forward(self, ops: Any) -> Any:
        out = ops.asarray(np.zeros(self.a.shape[0]))
        for index, flat, a64, b64, vocab in self.chunks(ops):
            self.check(ops, a64, b64, vocab, flat)
            out[index] = kl_rows(ops, a64, b64, True, vocab)[0]
        return out

    def native_forward(self) -> np.ndarray:
        n = self.a.shape[0]
        out = np.empty(n, dtype=np.float64)
        # inputs the kernel reads as they are go in one call (it needs one row of memory)
        step = max(1, n) if _readable(self.a, self.b) and self.masks.vocab is None else self.rows
        for s in range(0, n, step):
            e = min(n, s + step)
            kept, vocab = self.masks.chunk(s, e)
            a, b, kind = _native_pair(self.a[s:e], self.b[s:e])
            row_keep = None
            if kept is not None:
                row_keep = np.zeros(e - s, dtype=np.uint8)
                row_keep[kept] = 1
            keep = None if vocab is None else np.ascontiguousarray(vocab).view(np.uint8)
            out[s:e], status = _NATIVE_ROWS(a, b, kind, keep, row_keep)
            if bool(((status != _ROW_OK) & (status != _ROW_SKIPPED)).any()):
                rows = np.arange(e - s) if kept is None else kept
                a64, b64 = _as_float64(a[rows], kind), _as_float64(b[rows], kind)
                self.check(NUMPY, a64, b64, _rows_of(vocab, rows), s + rows)
        return out


def _on_cpu(*xs: Any) -> bool:
    return all(not is_tensor(x) or x.device.type == "cpu" for x in xs)


def _numpy_full_kl(a: np.ndarray, b: np.ndarray, call: _Call) -> np.ndarray:
    vocab = a.shape[-1]
    call.a, call.b = a.reshape(-1, vocab), b.reshape(-1, vocab)
    if _NATIVE_ROWS is not None:
        out = call.native_forward()
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            out = call.ops_forward(NUMPY)
    return out.reshape(a.shape[:-1])


def _torch_full_kl(a: Any, b: Any, call: _Call) -> Any:
    torch = _torch()
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
    call.a, call.b = a.reshape(-1, vocab), b.reshape(-1, vocab)
    ops = TorchOps(a.device)

    def forward(a2: Any, b2: Any) -> Any:
        if _NATIVE_ROWS is not None and _on_cpu(a2, b2):
            return torch.from_numpy(call.native_forward()).to(a2.device)
        return call.ops_forward(ops)

    def chunks() -> Iterator[tuple[Any, Any, Any, Any]]:
        for index, _, a64, b64, vocab in call.chunks(ops):
            yield index, a64, b64, vocab

    out = torch_function().apply(call.a, call.b, forward, chunks)
    return out.reshape(lead).to(dtype)


def full_kl(
    logits: Any,
    ref_logits: Any,
    mask: Any = None,
    *,
    direction: str = "KL(pi||ref)",
    chunk_size: int | None = None,
    nonfinite: str = "propagate",
    emulate: Any = None,
    emulate_chunk: int | None = None,
) -> Any:
    """Exact KL(π‖π_ref) at every position, from logits of shape (..., V): shape (...).

    ``logits`` are the policy's (π = softmax(logits)), ``ref_logits`` the reference's; any
    shift of a row leaves it unchanged (log-probabilities work as logits). ``direction=
    "KL(ref||pi)"`` gives KL(π_ref‖π) (klest's names ``"KL(q||p)"``/``"KL(p||q)"`` work too,
    q being the policy). ``mask`` (boolean, True = kept; numpy or torch): of the positions'
    shape (or broadcasting to it), masked positions give 0 (and gradient 0) whatever their
    logits; of the logits' number of dimensions, (broadcasting to) (..., V), masked
    vocabulary entries are left out of both distributions (both renormalised over the kept
    entries), and a position with no kept entry is a masked position. Positions are
    processed ``chunk_size`` at a time (default: as many as fit 2**20 float64 entries). numpy
    input gives a float64 ndarray; torch input a tensor of the inputs' floating dtype,
    differentiable with respect to both logits (first-order gradients).

    Non-finite logits (details in the module docstring): -inf is a zero-probability entry
    (KL(P‖Q) = +inf where Q has a zero and P has not); a NaN or +inf logit gives NaN at that
    position by default (``nonfinite="propagate"``), or a ValueError naming the argument and
    position with ``nonfinite="raise"``. torch gradients: finite wherever the KL is; NaN in
    a NaN row; in a row where KL(P‖Q) = +inf, NaN with respect to P's logits and
    softmax(Q) - softmax(P) with respect to Q's; 0 in a row whose incoming gradient is 0.

    ``emulate`` (True: the logits' own dtype, or a dtype: "bfloat16", "float16", "float32",
    a torch dtype) evaluates instead what a plain framework formula computes in that dtype
    (log_softmax, then sum p (log p - log r), as TRL's legacy ``full`` kind), with partial
    sums over ``emulate_chunk`` vocabulary entries if given: the rounding a framework adds
    (:func:`klest.rl.emulate.emulated_full_kl`, which has the other formulas; needs torch).
    The result is that dtype's value, as float64 (a tensor for tensors, else an ndarray).

    >>> import numpy as np
    >>> from klest import rl
    >>> a = np.log([[0.5, 0.5], [0.9, 0.1]])
    >>> b = np.log([[0.5, 0.5], [0.5, 0.5]])
    >>> rl.full_kl(a, b).round(6)
    array([0.      , 0.368064])
    >>> rl.full_kl(a, b, direction="KL(ref||pi)").round(6)
    array([0.      , 0.510826])
    >>> rl.full_kl(a, b, mask=np.array([True, False])).round(6)  # a padding position
    array([0., 0.])
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
    lead, vocab = pair_shape(logits, ref_logits, "full_kl")
    rows = rows_per_chunk(chunk_size, vocab, CHUNK_ELEMENTS)
    swap = DIRECTIONS[direction]
    a, b = (ref_logits, logits) if swap else (logits, ref_logits)
    names = ("ref_logits", "logits") if swap else ("logits", "ref_logits")
    if emulate is not None and emulate is not False:
        dtype = emulate
        if emulate is True:
            dtype = logits.dtype if is_tensor(logits) else np.asarray(logits).dtype.name
        out = emulated_full_kl(
            logits, ref_logits, dtype=dtype, chunk=emulate_chunk, direction=direction, mask=mask
        )
        return out if is_tensor(logits) or is_tensor(ref_logits) else out.numpy()
    call = _Call(rows, lead, names, nonfinite, _Masks(mask, lead, vocab))
    if is_tensor(a) or is_tensor(b):
        return _torch_full_kl(a, b, call)
    return _numpy_full_kl(np.asarray(a), np.asarray(b), call)


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
