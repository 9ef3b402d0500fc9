"""Top-k KL as distillation frameworks compute it, its exact bias against ``full_kl``, bounds.

Write KL(P‖Q) for the direction asked (``"KL(ref||pi)"``: P = π_ref, the teacher, as in
forward-KL distillation), S for the k selected entries (the top-k logits of ``topk_of``:
the reference's by default, as both frameworks do), T for the other V - k, and

    u_v = log P_v - log Q_v,   ε = P(T),   δ = Q(T),   L = log(ε/δ),   M = max u_v over
    v in T with P_v > 0,   D_T = KL(P(·|T)‖Q(·|T)) >= 0,   F = full_kl (the whole sum).

Forms (values per position; P, Q normalised over the whole vocabulary unless said):

- ``"tail_bucket"``: B = sum_S P_v u_v + ε L, the exact KL of the pair coarsened to the k
  entries of S plus one bucket holding the rest of each distribution's mass.
- ``"verl"``: verl's distillation ``forward_kl_topk`` (v0.9.0,
  verl/trainer/distillation/fsdp/losses.py: ``kl_divergence`` l. 66-72 and
  ``compute_forward_kl_topk`` l. 75-149; the teacher's top-k ids and full-vocabulary log-probs
  come from vLLM's ``prompt_logprobs``, the student's are ``log_softmax(logits).gather`` at
  those ids, l. 122-124), V = max(0, U) with U = sum_S P_v u_v, unnormalised, clamped by
  ``distillation_losses.clamp_min(0.0)`` (verl/trainer/distillation/losses.py l. 365, in
  ``compute_forward_kl_topk`` l. 305-367). verl computes only KL(teacher‖student) =
  ``direction="KL(ref||pi)"`` with ``topk_of="ref"``; its optional ``log_prob_min_clamp``
  (null in the shipped config) is not applied here.
- ``"nemo_rl"``: NeMo-RL's ``DistillationLossFn`` (v0.7.0,
  nemo_rl/algorithms/loss/loss_functions.py l. 1053-1135; inputs from
  ``get_distillation_topk_logprobs_from_logits``, nemo_rl/distributed/model_utils.py
  l. 1803-1967, default ``zero_outside_topk=False``): both logits gathered at the teacher's
  top-k indices and ``log_softmax``-ed over those k entries (l. 1946-1958), R = KL(P̃‖Q̃)
  with P̃ = P(·|S), Q̃ = Q(·|S). ``kl_type="forward"`` is ``direction="KL(ref||pi)"``,
  ``"reverse"`` is ``"KL(pi||ref)"`` (still the teacher's top-k: ``topk_of="ref"``), ``"mixed"``
  (its default, weight w = 0.5) is w·forward + (1 - w)·reverse of the two calls.

Exact biases F - value (``topk_kl_bias`` evaluates them from the tail alone, with
non-negative terms) and their bounds. The chain rule of KL gives F = B + ε D_T, and
B = P(S) R + kb with kb = KL((P(S), ε)‖(Q(S), δ)) the two-point KL; so

    tail_bucket:  F - B = ε D_T                      0 <= F - B <= ε (M - L)
    verl, U >= 0: F - V = ε L + ε D_T                ε L <= F - V <= ε M
    verl, U < 0:  F - V = F (the value is 0)         0 <= F - V <= ε M
    nemo_rl:      F - R = ε D_T + kb - ε R           kb - ε R <= F - R <= kb - ε R + ε (M - L)

Proof. D_T >= 0 is Gibbs' inequality (the data-processing inequality for the coarsening).
D_T = sum_T (P_v/ε)(u_v - L) is an average of u_v - L under P(·|T), so D_T <= M - L.
U = B - ε L gives the verl line when the clamp is inactive; when U < 0,
F = U + ε L + ε D_T < ε M. For R, F - R = (B - R) + ε D_T and B - R = kb - ε R.
Consequences in terms of the tail masses only: ε L >= ε - δ (log x >= 1 - 1/x), so the
unclamped top-k sum underestimates F by at least ε - δ (it overestimates only when the
selected set holds less of Q's mass than of P's); F >= B >= (1 - ε) R + kb, so the
renormalised value overestimates F by at most the factor 1/(1 - ε). No upper bound in the
masses alone exists: with S, ε and δ fixed, moving Q's tail mass onto one entry of T sends
D_T and F to infinity while every top-k value stays the same; M measures that.
Conventions: 0·log 0 = 0 (ε = 0 gives ε L = ε M = ε D_T = 0; k = V gives every bias 0).

Non-finite logits, as ``full_kl``: -inf is a zero-probability entry (a +inf value where Q
has a zero that P has not on S, or on the bucket; F = +inf then too, and the bias is NaN);
a row with a NaN or +inf logit gives NaN; a row that is -inf everywhere is a ValueError. R
is NaN where P or Q has no mass on S (nothing to renormalise). Ties at the k-th largest
logit are broken toward the lower vocabulary index (torch.topk leaves them unspecified).

Memory: positions are processed ``chunk_size`` at a time in float64. torch inputs get a
custom autograd function that recomputes each chunk in the backward pass (autograd inside
one chunk), so nothing of size positions × V is kept; rows whose value is not finite get
NaN gradients, rows whose incoming gradient is 0 get 0 (first-order gradients only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest.errors import check_integer
from klest.rl._backend import NUMPY, TorchOps, get_ops, is_tensor
from klest.rl.full import DIRECTIONS, full_kl
from klest.rl.full_rows import pair_shape, rows_per_chunk

__all__ = ["FORMS", "TOPK_OF", "TopKBias", "topk_kl", "topk_kl_bias"]

#: the forms ``topk_kl`` computes
FORMS = ("verl", "nemo_rl", "tail_bucket")
#: whose top-k logits select the entries: the reference's (the teacher's) or the policy's
TOPK_OF = ("ref", "pi")
#: float64 entries per chunk array when ``chunk_size`` is None (2 MB per working array)
CHUNK_ELEMENTS = 1 << 18
# where u = log P - log Q < -30 a term P k3(-u) is computed as (Q - P) + P u (as full_kl)
_LARGE_RATIO = -30.0


def _terms(ops: Any, u: Any, p: Any, q: Any, zero_q: Any) -> Any:
    """Per-entry P k3(-u) >= 0, u = log P - log Q (sum: KL(P‖Q) when both sum to 1), with
    full_kl's conventions: Q where P = 0 (also where P underflows), +inf where Q is a true
    zero (``zero_q``: log Q = -inf) and P > 0. ``u`` is read only where neither holds, so
    infinite log-probabilities never reach a nonlinear op (NaN-free gradients)."""
    pos_p = p > 0
    u = ops.where(pos_p & ~zero_q, u, 0.0)
    large = u < _LARGE_RATIO
    w = p * ops.k3(-ops.where(large, 0.0, u))
    if bool(large.any()):
        w = ops.where(large, (q - p) + p * u, w)
    w = ops.where(pos_p, w, q)
    return ops.where(pos_p & zero_q, math.inf, w)


def _logsumexp(ops: Any, x: Any) -> Any:
    """log sum exp of float64 rows (shape (rows, 1)): -inf for a row that is -inf everywhere,
    with a finite gradient (0) there."""
    m = ops.max_last(x)
    finite = m > -math.inf
    m = ops.stop_gradient(ops.where(finite, m, 0.0))
    s = ops.sum_last(ops.exp(x - m))
    return ops.where(finite, m + ops.log(ops.where(finite, s, 1.0)), -math.inf)


def _softmax_pair(ops: Any, a: Any, b: Any) -> tuple[Any, ...]:
    """(log P, log Q, P, Q, u) of float64 rows of logits (NaN in a row -inf everywhere).
    u = (a - b) - c with c = lse a - lse b: a - b is kept with its rounding error as a second
    word (two-sum), and c0 = fl(lse a) - fl(lse b) is corrected to c = c0 - log1p(G),
    G = sum p expm1(c0 - (a - b)) = e^(c0 - c) - 1 (in rows where no entry is a zero of one
    side only), c kept as the two words (c0, log1p G): sums over the top k then keep their
    digits for near-identical rows, shifted or not."""
    lse_a, lse_b = _logsumexp(ops, a), _logsumexp(ops, b)
    la, lb = a - lse_a, b - lse_b
    p, q = ops.exp(la), ops.exp(lb)
    fa, fb = a > -math.inf, b > -math.inf
    a0, b0 = ops.where(fa & fb, a, 0.0), ops.where(fa & fb, b, 0.0)
    d = a0 - b0
    z = d - a0  # Knuth's two-sum: d + e = a - b exactly
    e = ops.stop_gradient((a0 - (d - z)) - (b0 + z))
    c0 = lse_a - lse_b
    u0 = (d - c0) + e
    refine = ops.sum_last(fa ^ fb) == 0
    g = ops.sum_last(ops.where(fa & fb, _q_minus_p(ops, u0, p, q), 0.0))
    # u = d - c with c = c0 - log1p(G) kept as two words: d - c0 is exact where d ~ c0
    corr = ops.where(refine, _log1p(ops.where(refine & (g > -0.5), g, 0.0)), 0.0)
    return la, lb, p, q, (d - c0) + (e + corr)


def _q_minus_p(ops: Any, u: Any, p: Any, q: Any) -> Any:
    """Q - P per entry as P expm1(-u) (its digits kept when Q ~ P), where P > 0 and u is
    finite; (Q - P) where u < -30 (expm1 could overflow for a tiny P) or P = 0."""
    ok = p > 0
    large = ok & (u < _LARGE_RATIO)
    v = p * _expm1(ops.where(ok & ~large, -u, 0.0))
    return ops.where(ok & ~large, v, q - p)


def _expm1(x: Any) -> Any:
    return x.expm1() if is_tensor(x) else np.expm1(x)


def _log1p(x: Any) -> Any:
    return x.log1p() if is_tensor(x) else np.log1p(x)


def _select(x: Any, k: int) -> Any:
    """Boolean mask of the k largest entries of each row; ties at the k-th value go to the
    lowest indices (the same set for numpy and torch, for every chunk size)."""
    if is_tensor(x):
        t = x.topk(k, dim=-1).values.amin(dim=-1, keepdim=True)
        gt, eq = x > t, x == t
        need = k - gt.sum(dim=-1, keepdim=True)
        return gt | (eq & (eq.cumsum(dim=-1) <= need))
    t = np.partition(x, x.shape[-1] - k, axis=-1)[:, x.shape[-1] - k, None]
    gt, eq = x > t, x == t
    need = k - gt.sum(axis=-1, keepdims=True)
    return gt | (eq & (np.cumsum(eq, axis=-1) <= need))


def _restricted_kl(ops: Any, a: Any, b: Any, keep: Any) -> Any:
    """KL(P(·|keep)‖Q(·|keep)) per row, the softmaxes taken over the kept entries only."""
    ra, rb = ops.where(keep, a, -math.inf), ops.where(keep, b, -math.inf)
    _, lq, p, q, u = _softmax_pair(ops, ra, rb)
    kl = ops.sum_last(_terms(ops, u, p, q, ~(lq > -math.inf)))
    empty = ~(ops.max_last(ra) > -math.inf) | ~(ops.max_last(rb) > -math.inf)
    return ops.where(empty, math.nan, kl)  # no mass to renormalise: undefined


def _rows(ops: Any, a: Any, b: Any, sel_a: bool, k: int, form: str, analyse: bool = False):
    """The form's value per row of float64 2-D chunks a (P's logits), b (Q's), and with
    ``analyse`` the dict of pieces the bias and bounds are made of (all of shape (rows, 1))."""
    bad = ops.sum_last(ops.nonfinite(a) & (a != -math.inf)) + ops.sum_last(
        ops.nonfinite(b) & (b != -math.inf)
    )
    bad = bad > 0
    if bool(bad.any()):  # NaN / +inf rows: computed on zeros, then reported as NaN
        a, b = ops.where(bad, 0.0, a), ops.where(bad, 0.0, b)
    sel = _select(ops.stop_gradient(a if sel_a else b), k)
    la, lb, p, q, u = _softmax_pair(ops, a, b)
    zero_q = ~(lb > -math.inf)
    w = _terms(ops, u, p, q, zero_q)
    tail = ~sel
    eps, delta = ops.sum_last(ops.where(tail, p, 0.0)), ops.sum_last(ops.where(tail, q, 0.0))
    # y = δ - ε as a sum of accurate per-entry Q - P = P expm1(-u) (not as the difference of
    # the two sums, which keeps no digits for near-identical rows)
    dqp = _q_minus_p(ops, ops.where(zero_q, 0.0, u), ops.where(zero_q, 0.0, p), q)
    y = ops.sum_last(ops.where(tail, ops.where(zero_q, -p, dqp), 0.0))
    w_sel = ops.sum_last(ops.where(sel, w, 0.0))
    out: dict[str, Any] = {}
    if form == "nemo_rl" or analyse:
        out["renormalised"] = out["nemo_rl"] = _restricted_kl(ops, a, b, sel)
    if form != "nemo_rl" or analyse:
        out["unnormalised"] = w_sel + y  # sum_S P u = sum_S w - sum_S (Q - P)
        # log δ - log ε: log1p(y/ε) where |y| < ε/2, else from the log-domain tail masses
        log_eps = _logsumexp(ops, ops.where(tail, la, -math.inf))
        log_delta = _logsumexp(ops, ops.where(tail, lb, -math.inf))
        near = ops.abs(y) < 0.5 * eps
        ratio = ops.where(near, y / ops.where(eps > 0, eps, 1.0), 0.0)
        x_t = ops.where(near, _log1p(ratio), log_delta - log_eps)
        zero_delta = ~(log_delta > -math.inf)
        bucket = _terms(ops, -x_t, eps, delta, zero_delta)
        out["tail_bucket"] = w_sel + bucket
    out["verl"] = ops.clip(out["unnormalised"], 0.0, None) if "unnormalised" in out else None
    value = out[form]
    value = ops.where(bad, math.nan, value)
    if not analyse:
        return value[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        um = np.where(zero_q, math.inf, u)
        m = np.max(np.where(tail & (la > -math.inf), um, -math.inf), axis=-1, keepdims=True)
        has_tail = eps > 0
        d_t = np.where(has_tail, _restricted_kl(ops, a, b, tail), 0.0)
        # the two-point KL of (P(S), ε) against (Q(S), δ); log Q(S) - log P(S) =
        # log1p(-y/P(S)) where |y| < P(S)/2, else the difference of the logs of the sums
        ps, qs = (np.sum(np.where(sel, x, 0.0), axis=-1, keepdims=True) for x in (p, q))
        near_s = np.abs(y) < 0.5 * ps
        x_s = np.where(near_s, np.log1p(-y / ps), np.log(qs) - np.log(ps))
        kb = _terms(ops, -x_s, ps, qs, ~(qs > 0)) + bucket
        out.update(
            value=value,
            full=ops.sum_last(w),
            eps=eps,
            delta=delta,
            eps_d_t=np.where(has_tail, eps * d_t, 0.0),
            eps_l=np.where(has_tail, -eps * x_t, 0.0),
            eps_m=np.where(has_tail, eps * m, 0.0),
            kb=kb,
            bad=bad,
        )
    return out


def _bias_and_bounds(form: str, x: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(bias by the tail formula, lower bound, upper bound) per row of ``_rows(analyse=True)``."""
    eps_d_t, eps_l, eps_m = x["eps_d_t"], x["eps_l"], x["eps_m"]
    with np.errstate(invalid="ignore"):
        if form == "tail_bucket":
            bias, lo, hi = eps_d_t, np.zeros_like(eps_l), eps_m - eps_l
        elif form == "verl":  # clamped (U < 0): the value is 0, the bias F = B + ε D_T
            clamped = x["unnormalised"] < 0
            bias = np.where(clamped, x["tail_bucket"], eps_l) + eps_d_t
            lo, hi = np.where(clamped, 0.0, eps_l), eps_m
        else:
            r = x["renormalised"]
            lo = x["kb"] - x["eps"] * r
            bias, hi = lo + eps_d_t, lo + (eps_m - eps_l)
        # full KL +inf: bias +inf, or NaN (inf - inf) where the value is +inf too
        # (and both bounds +inf: the bias is known exactly there)
        full_inf = x["full"] == math.inf
        inf = np.where(x["value"] == math.inf, math.nan, math.inf)
        bias, lo, hi = (np.where(full_inf, inf, v) for v in (bias, lo, hi))
        nan = x["bad"] | np.isnan(x["value"])
        bias, lo, hi = (np.where(nan, math.nan, v) for v in (bias, lo, hi))
    return bias, lo, hi


def _arguments(logits: Any, ref_logits: Any, k: Any, form: Any, direction: Any, topk_of: Any):
    if not isinstance(form, str) or form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}; got {form!r}")
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    if not isinstance(topk_of, str) or topk_of not in TOPK_OF:
        raise ValueError(f"topk_of must be one of {', '.join(map(repr, TOPK_OF))}; got {topk_of!r}")
    lead, vocab = pair_shape(logits, ref_logits, "topk_kl")
    try:
        k = check_integer("k", k, minimum=1)
    except ValueError:
        k = None
    if k is None or k > vocab:
        raise ValueError(f"k must be an integer in [1, {vocab}] (the vocabulary size); got {k!r}")
    swap = DIRECTIONS[direction]
    a, b = (ref_logits, logits) if swap else (logits, ref_logits)
    names = ("ref_logits", "logits") if swap else ("logits", "ref_logits")
    sel_a = (topk_of == "ref") == swap  # the selecting logits are P's (a) or Q's (b)
    return lead, vocab, k, a, b, names, sel_a


def _check_rows(chunks: tuple[Any, Any], names: tuple[str, str], start: int, lead: tuple) -> None:
    for x, name in zip(chunks, names, strict=True):
        empty = ~(x > -math.inf).any(-1)  # -inf everywhere (NaN rows are NaN, not empty)
        empty = empty & ~(x != x).any(-1)
        if bool(empty.any()):
            row = start + int(np.flatnonzero(_numpy(empty))[0])
            pos = tuple(int(i) for i in np.unravel_index(row, lead))
            raise ValueError(
                f"topk_kl: {name} at position {pos} is -inf in every vocabulary entry "
                "(a row of -inf has no softmax)"
            )


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


def _chunks(a: Any, b: Any, rows: int, names: tuple[str, str], lead: tuple, to64: Any):
    """Yield (start, a64, b64) over 2-D views of a, b, ``rows`` positions at a time."""
    vocab = a.shape[-1]
    a2, b2 = a.reshape(-1, vocab), b.reshape(-1, vocab)
    for s in range(0, a2.shape[0], rows):
        a64, b64 = to64(a2[s : s + rows]), to64(b2[s : s + rows])
        _check_rows((a64, b64), names, s, lead)
        yield s, a64, b64


_FUNCTION: Any = None


def _torch_function() -> Any:
    """The autograd function, defined on first use so that torch is imported only then."""
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch  # deferred: optional heavy dependency
    from torch.autograd.function import once_differentiable

    class TopKKL(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any, b: Any, rows: int, spec: tuple) -> Any:
            sel_a, k, form, names, lead = spec
            ops = TorchOps(a.device)
            out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
            for s, a64, b64 in _chunks(a, b, rows, names, lead, lambda x: x.double()):
                out[s : s + rows] = _rows(ops, a64, b64, sel_a, k, form)
            ctx.save_for_backward(a, b, out)
            ctx.rows, ctx.spec = rows, spec
            return out

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad: Any) -> Any:
            a, b, value = ctx.saved_tensors
            sel_a, k, form, _, _ = ctx.spec
            ga, gb = torch.zeros_like(a), torch.zeros_like(b)
            ops = TorchOps(a.device)
            for s in range(0, a.shape[0], ctx.rows):
                e = s + ctx.rows
                g = grad[s:e].double()
                live = g != 0
                if not bool(live.any()):
                    continue  # rows outside the loss get 0 whatever their logits
                with torch.enable_grad():
                    a64 = a[s:e].detach().double().requires_grad_()
                    b64 = b[s:e].detach().double().requires_grad_()
                    v = _rows(ops, a64, b64, sel_a, k, form)
                    da, db = torch.autograd.grad(v, (a64, b64), g, allow_unused=True)
                da = torch.zeros_like(a64) if da is None else da
                db = torch.zeros_like(b64) if db is None else db
                broken = (~torch.isfinite(value[s:e]) & live)[:, None]
                dead = ~live[:, None]
                ga[s:e] = da.masked_fill_(broken, math.nan).masked_fill_(dead, 0.0)
                gb[s:e] = db.masked_fill_(broken, math.nan).masked_fill_(dead, 0.0)
            return ga, gb, None, None

    _FUNCTION = TopKKL
    return TopKKL


def topk_kl(
    logits: Any,
    ref_logits: Any,
    k: int,
    *,
    form: str,
    direction: str,
    topk_of: str = "ref",
    chunk_size: int | None = None,
) -> Any:
    """Top-k KL at every position from logits of shape (..., V), as ``form`` computes it:
    ``"verl"`` (unnormalised, clamped at 0), ``"nemo_rl"`` (renormalised over the top k),
    ``"tail_bucket"`` (top k plus one bucket for the rest: a lower bound of ``full_kl``).

    ``direction`` is ``"KL(ref||pi)"`` (forward-KL distillation, teacher = reference) or
    ``"KL(pi||ref)"`` (klest's ``"KL(p||q)"``/``"KL(q||p)"`` work too); the k entries are the
    largest ``ref_logits`` (``topk_of="ref"``, the frameworks' choice) or ``logits``
    (``"pi"``). Exact biases against ``full_kl`` and their proven bounds: module docstring
    and :func:`topk_kl_bias`. numpy input gives float64; torch input a tensor of the inputs'
    floating dtype, differentiable (first order), in memory per chunk.

    >>> import numpy as np
    >>> from klest import rl
    >>> from klest.rl.topk import topk_kl
    >>> pi, ref = np.log([[0.5, 0.3, 0.2]]), np.log([[0.7, 0.2, 0.1]])
    >>> kw = dict(direction="KL(ref||pi)")  # the top 2 of ref: entries 0 and 1
    >>> topk_kl(pi, ref, 2, form="verl", **kw).round(6)  # .7 ln(.7/.5) + .2 ln(.2/.3)
    array([0.154438])
    >>> topk_kl(pi, ref, 2, form="nemo_rl", **kw).round(6)  # (7/9, 2/9) vs (5/8, 3/8)
    array([0.053814])
    >>> topk_kl(pi, ref, 1, form="tail_bucket", **kw).round(6)  # (.7, .3) vs (.5, .5)
    array([0.082283])
    >>> rl.full_kl(pi, ref, **kw).round(6)
    array([0.085123])
    """
    lead, vocab, k, a, b, names, sel_a = _arguments(logits, ref_logits, k, form, direction, topk_of)
    rows = rows_per_chunk(chunk_size, vocab, CHUNK_ELEMENTS)
    if is_tensor(a) or is_tensor(b):
        import torch  # deferred: optional heavy dependency (already imported by the caller)

        device = get_ops(a, b).device
        a, b = (
            x if is_tensor(x) else torch.as_tensor(np.asarray(x), device=device) for x in (a, b)
        )
        dtypes = [t.dtype for t in (a, b) if t.is_floating_point()]
        dtype = dtypes[0] if dtypes else torch.get_default_dtype()
        for d in dtypes[1:]:
            dtype = torch.promote_types(dtype, d)
        spec = (sel_a, k, form, names, lead)
        a, b = a.reshape(-1, vocab), b.reshape(-1, vocab)
        out = _torch_function().apply(a, b, rows, spec)
        return out.reshape(lead).to(dtype)
    a, b = np.asarray(a), np.asarray(b)
    out = np.empty(int(np.prod(lead, dtype=np.int64)), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for s, a64, b64 in _chunks(a, b, rows, names, lead, _float64):
            out[s : s + rows] = _rows(NUMPY, a64, b64, sel_a, k, form)
    return out.reshape(lead)


def _float64(x: Any) -> np.ndarray:
    if is_tensor(x):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class TopKBias:
    """``topk_kl_bias``'s result, float64 arrays of shape (...): ``value`` (the form's),
    ``full`` (``rl.full_kl``), ``bias`` (full - value by the exact tail formula of the module
    docstring), ``lower`` <= bias <= ``upper`` (the proven bounds), ``tail_mass_pi`` and
    ``tail_mass_ref`` (each policy's mass outside the k selected entries). Where full_kl is
    +inf and the value finite, bias and bounds are +inf; where the value is +inf or NaN, NaN."""

    value: np.ndarray
    full: np.ndarray
    bias: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    tail_mass_pi: np.ndarray
    tail_mass_ref: np.ndarray


def topk_kl_bias(
    logits: Any,
    ref_logits: Any,
    k: int,
    *,
    form: str,
    direction: str,
    topk_of: str = "ref",
    chunk_size: int | None = None,
) -> TopKBias:
    """The exact bias ``full_kl - topk_kl`` of ``form`` at every position, computed from the
    tail (not as that difference), its proven bounds and the tail masses: a
    :class:`TopKBias` of float64 arrays (no gradients). Arguments as :func:`topk_kl`.

    >>> import numpy as np
    >>> from klest.rl.topk import topk_kl_bias
    >>> pi, ref = np.log([[0.5, 0.3, 0.2]]), np.log([[0.7, 0.2, 0.1]])
    >>> r = topk_kl_bias(pi, ref, 1, form="tail_bucket", direction="KL(ref||pi)")
    >>> r.bias.round(6), r.full.round(6) - r.value.round(6), r.lower, r.upper.round(6)
    (array([0.00284]), array([0.00284]), array([0.]), array([0.031608]))
    >>> r.tail_mass_ref, r.tail_mass_pi
    (array([0.3]), array([0.5]))
    """
    lead, vocab, k, a, b, names, sel_a = _arguments(logits, ref_logits, k, form, direction, topk_of)
    rows = rows_per_chunk(chunk_size, vocab, CHUNK_ELEMENTS)
    n = int(np.prod(lead, dtype=np.int64))
    fields = {name: np.empty(n) for name in ("value", "bias", "lower", "upper", "eps", "delta")}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for s, a64, b64 in _chunks(a, b, rows, names, lead, _float64):
            x = _rows(NUMPY, a64, b64, sel_a, k, form, analyse=True)
            bias, lo, hi = _bias_and_bounds(form, x)
            for name, v in zip(
                fields, (x["value"], bias, lo, hi, x["eps"], x["delta"]), strict=True
            ):
                fields[name][s : s + rows] = v[:, 0]
    full = _float64(full_kl(logits, ref_logits, direction=direction, chunk_size=chunk_size))
    pi_is_p = not DIRECTIONS[direction]
    eps, delta = fields.pop("eps"), fields.pop("delta")
    tails = (eps, delta) if pi_is_p else (delta, eps)
    return TopKBias(
        full=full.reshape(lead),
        tail_mass_pi=tails[0].reshape(lead),
        tail_mass_ref=tails[1].reshape(lead),
        **{name: v.reshape(lead) for name, v in fields.items()},
    )
