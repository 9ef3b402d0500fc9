"""Figure-ready frames of sequence-level KL gradients, and fixed points on a sequential bandit.

* :func:`sequence_gradient_table` — every configuration (placement × aggregation × estimator)
  of :func:`~klest.sequence.sequence_gradient` at each response length: verdict, cosine and
  relative norm error to ∇KL(π‖π_ref) of the sequence, ‖E[G]‖, tr Cov[G].
* :func:`partial_vs_full_table` — per length, what the token-level loss (k2 in the loss,
  verdict "partial", Tang & Munos's pitfall 2) misses of ∇KL(π‖π_ref): the score-function term
  through the later contexts, E[Σ_t (Σ_{s>t} KL(π‖π_ref)(c_s)) ∇log π(x_t|c_t)].
* :func:`aggregation_table` — seq_mean_token_mean against Dr. GRPO's seq_mean_token_sum_norm,
  with and without an eos (they differ only when the lengths vary).
* :func:`fixed_point` / :func:`fixed_point_table` — a TabularAR policy trained by exact
  expected-gradient descent on −E_π[R] + β·(KL term) for a reward R on whole responses,
  against the KL-regularised optimum π* (:func:`soft_optimum`) and the forward-KL one
  (:func:`forward_optimum`).

The sequential bandit: a reference whose order is ``length − 1``, so that every prefix is its
own context (the model is a tree and represents every response distribution), and one reward
R(x) per response. The optimum of E_π[R] − β KL(π‖π_ref) over response distributions is
π*(x) = π_ref(x) e^{R(x)/β} / Z (the Gibbs variational principle). Its conditional tables follow
by the soft Bellman backward recursion over prefixes h:

    Q(h, v) = R(hv) if hv ends (v = eos or |hv| = T), else V(hv);
    V(h) = β log Σ_v π_ref(v|h) e^{Q(h, v)/β};   π*(v|h) = π_ref(v|h) e^{(Q(h, v) − V(h))/β}.

By induction from the ends, e^{V(h)/β} = Σ_{x ⊒ h} π_ref(x|h) e^{R(x)/β}, so the product of the
conditionals along x is π_ref(x) e^{(R(x) − V(∅))/β}, with V(∅) = β log Z. The forward-KL
optimum (−E_π[R] + β KL(π_ref‖π), convex in π) is π(x) = β π_ref(x) / (λ − R(x)) with λ > max R
set by Σ_x π(x) = 1 (its stationarity condition on the simplex).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> pi = TabularAR.random(vocab=3, order=1, length=1, rng=rng, eos=2)
>>> df = sequence_gradient_table(pi, pi.perturbed(rng, 0.5), [1, 3], placements=["loss"],
...                              aggregations=["seq_mean_token_sum"], estimators=["k2"])
>>> df["verdict"].tolist()
['KL(pi||ref)', 'partial']
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from klest.sequence.gradient import AGGREGATIONS, PLACEMENTS, sequence_gradient
from klest.sequence.model import TabularAR, count_responses, responses, sequence_kl

__all__ = [
    "ESTIMATORS",
    "FixedPoint",
    "aggregation_table",
    "configurations",
    "count_responses",
    "fixed_point",
    "fixed_point_table",
    "forward_optimum",
    "from_response_probs",
    "length_moments",
    "partial_vs_full_table",
    "response_probs",
    "responses",
    "reward_gradient",
    "sequence_gradient_table",
    "soft_optimum",
]

ESTIMATORS = ("k1", "k2", "k3")
#: the estimator label of the Rao–Blackwellised gradient (it uses the exact conditional KLs)
RB = "rb"
#: a fixed point with a probability below this in a reached context is on the boundary
BOUNDARY = 1e-8
#: the token-level loss of Tang & Munos's pitfall 2: k2 in the loss, summed over tokens
PARTIAL = ("loss", "seq_mean_token_sum", "k2")


def configurations(
    placements: Sequence[str] = PLACEMENTS,
    aggregations: Sequence[str] = AGGREGATIONS,
    estimators: Sequence[str] = ESTIMATORS,
) -> list[tuple[str, str, str]]:
    """(placement, aggregation, estimator) triples where meaningful: ``reward_scalar`` is RLOO's
    sum of k1 (k1 only); ``rao_blackwell`` has no estimator (:data:`RB`) and no aggregation
    (a(T) = 1: ``seq_mean_token_sum``).

    >>> configurations(["reward_scalar", "rao_blackwell"], ["token_mean"])
    [('reward_scalar', 'token_mean', 'k1'), ('rao_blackwell', 'seq_mean_token_sum', 'rb')]
    """
    out = []
    for placement in placements:
        if placement == "rao_blackwell":
            out.append((placement, "seq_mean_token_sum", RB))
            continue
        names = [e for e in estimators if placement != "reward_scalar" or e == "k1"]
        if placement == "reward_scalar" and not names:
            names = ["k1"]
        out += [(placement, a, e) for a in aggregations for e in names]
    return out


def length_moments(model: TabularAR) -> tuple[float, float]:
    """(E[T_x], Var[T_x]) of the response length, from P(T_x > t) = Σ_c d_t(c).

    >>> import numpy as np
    >>> m = TabularAR.random(vocab=3, order=1, length=4, rng=np.random.default_rng(0))
    >>> length_moments(m)
    (4.0, 0.0)
    """
    survive = model.state_distributions().sum(axis=1)
    t = np.arange(model.length)
    mean = float(survive.sum())
    return mean, max(float(((2 * t + 1) * survive).sum()) - mean * mean, 0.0)


def _gradient(
    pi: TabularAR, ref: TabularAR, placement: str, aggregation: str, est: str,
    covariance: bool = True,
) -> Any:  # fmt: skip
    options = {} if placement == "rao_blackwell" else {"estimator": est, "aggregation": aggregation}
    return sequence_gradient(pi, ref, placement=placement, covariance=covariance, **options)


def sequence_gradient_table(
    pi: TabularAR,
    ref: TabularAR,
    lengths: Sequence[int],
    *,
    placements: Sequence[str] = PLACEMENTS,
    aggregations: Sequence[str] = AGGREGATIONS,
    estimators: Sequence[str] = ESTIMATORS,
) -> pd.DataFrame:
    """One row per length × :func:`configurations` triple, the models' tables generating
    ``length`` tokens: ``length mean_length length_var sequence_kl placement aggregation
    estimator verdict cosine relative_error norm true_norm missing_norm cov_trace``, where
    ``missing_norm`` = ‖∇KL(π‖π_ref) − E[G]/a‖ = relative_error × true_norm, where a constant
    aggregation factor a (1/E[T_x], Dr. GRPO's 1/T, 1/T without an eos) is divided out as
    :func:`~klest.sequence.sequence_gradient` does for its verdict (a rescaled objective is
    the same objective; ``norm`` = ‖E[G]‖ keeps it), and ``cosine`` is NaN where the verdict is
    "zero" (the direction of rounding noise means nothing)."""
    rows = []
    for length in lengths:
        p, r = pi.with_length(int(length)), ref.with_length(int(length))
        mean, var = length_moments(p)
        kl = sequence_kl(p, r)
        for placement, aggregation, est in configurations(placements, aggregations, estimators):
            g = _gradient(p, r, placement, aggregation, est)
            true = g.true["KL(pi||ref)"]
            rows.append({
                "length": int(length), "mean_length": mean, "length_var": var,
                "sequence_kl": kl, "placement": placement, "aggregation": aggregation,
                "estimator": est, "verdict": g.verdict,
                "cosine": np.nan if g.verdict == "zero" else g.cosine,
                "relative_error": g.relative_error, "norm": float(np.linalg.norm(g.expected)),
                "true_norm": float(np.linalg.norm(true)),
                "missing_norm": g.relative_error * float(np.linalg.norm(true)),
                "cov_trace": g.cov_trace,
            })  # fmt: skip
    return pd.DataFrame(rows)


def partial_vs_full_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per length, the token-level loss (k2 in the loss, seq_mean_token_sum) against
    ∇KL(π‖π_ref): ``length mean_length verdict cosine one_minus_cos relative_error missing_norm
    true_norm``, from the rows of :func:`sequence_gradient_table`.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pi = TabularAR.random(vocab=3, order=1, length=1, rng=rng)
    >>> df = sequence_gradient_table(pi, pi.perturbed(rng, 0.5), [1, 4], placements=["loss"],
    ...                              aggregations=["seq_mean_token_sum"], estimators=["k2"])
    >>> partial_vs_full_table(df)["one_minus_cos"].round(12).tolist()[0]
    0.0
    """
    placement, aggregation, est = PARTIAL
    pick = (frame["placement"] == placement) & (frame["aggregation"] == aggregation)
    rows = frame[pick & (frame["estimator"] == est)].sort_values("length")
    if rows.empty:
        raise ValueError(f"the frame has no {est} {placement} {aggregation} rows")
    out = rows[["length", "mean_length", "verdict", "cosine", "relative_error", "missing_norm",
                "true_norm"]].reset_index(drop=True)  # fmt: skip
    out.insert(4, "one_minus_cos", 1.0 - out["cosine"])
    return out


def aggregation_table(
    pi: TabularAR,
    ref: TabularAR,
    lengths: Sequence[int],
    *,
    configs: Sequence[tuple[str, str]] = (("loss", "k3"), ("loss", "k2"), ("reward_to_go", "k1")),
) -> pd.DataFrame:
    """seq_mean_token_mean (a = 1/T_x) against seq_mean_token_sum_norm (a = 1/T, Dr. GRPO with
    its default constant, the maximum length) for the models as given (``eos`` as set) and
    without an eos (every length T): ``model length length_var placement estimator
    relative_difference cosine``, relative_difference = ‖g_mean − g_norm‖ / ‖g_mean‖."""
    rows = []
    for length in lengths:
        for model, eos in (("eos", pi.eos), ("no eos", None)):
            p = TabularAR(logits=pi.logits, length=int(length), eos=eos)
            r = TabularAR(logits=ref.logits, length=int(length), eos=eos)
            for placement, est in configs:
                a, b = (sequence_gradient(p, r, estimator=est, placement=placement,
                                          aggregation=agg).expected
                        for agg in ("seq_mean_token_mean", "seq_mean_token_sum_norm"))  # fmt: skip
                na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
                rows.append({
                    "model": model, "length": int(length), "length_var": length_moments(p)[1],
                    "placement": placement, "estimator": est,
                    "relative_difference": float(np.linalg.norm(a - b)) / na if na else np.nan,
                    "cosine": float(np.vdot(a, b)) / (na * nb) if na * nb else np.nan,
                })  # fmt: skip
    return pd.DataFrame(rows)


# ---- the sequential bandit ---------------------------------------------------------------


def response_probs(model: TabularAR, x: np.ndarray) -> np.ndarray:
    """P(x) of each response under ``model``."""
    return np.exp(model.token_log_probs(x).sum(axis=1))


def _check_tree(model: TabularAR) -> None:
    if model.length < 2 or model.order < model.length - 1:
        raise ValueError(f"the sequential bandit needs length >= 2 and order >= length - 1 "
                         f"(every prefix its own context); got {model!r}")  # fmt: skip


def _ends(model: TabularAR, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context, token, position) of each response's last token."""
    last = model.lengths(x) - 1
    ctx = model.contexts(x)[np.arange(len(x)), last]
    return ctx, x[np.arange(len(x)), last], last


def soft_optimum(ref: TabularAR, reward: Any, beta: float) -> TabularAR:
    """π* ∝ π_ref e^{R/β} as a TabularAR, by the soft Bellman backward recursion (module notes);
    ``reward`` has one entry per response of :func:`responses`."""
    _check_tree(ref)
    x = responses(ref)
    R = np.asarray(reward, dtype=np.float64)
    if R.shape != (len(x),):
        raise ValueError(f"reward must have one value per response ({len(x)}); got {R.shape}")
    T, S, V = ref.length, ref.n_states, ref.vocab
    end_ctx, end_tok, _ = _ends(ref, x)
    terminal = np.zeros((S, V))
    terminal[end_ctx, end_tok] = R
    reach = ref.state_distributions() > 0  # (T, S): the contexts at each position
    lr = ref.log_probs
    table = np.array(lr)
    value_next = np.zeros(S)
    for t in range(T - 1, -1, -1):
        ends = np.zeros((S, V), dtype=bool) if t < T - 1 else np.ones((S, V), dtype=bool)
        if ref.eos is not None:
            ends[:, ref.eos] = True
        q = np.where(ends, terminal, value_next[ref.next_state])
        value = beta * logsumexp(lr + q / beta, axis=1)
        rows = reach[t]
        table[rows] = lr[rows] + (q[rows] - value[rows, None]) / beta
        value_next = np.where(rows, value, 0.0)
    return TabularAR(logits=table.reshape(ref.logits.shape), length=T, eos=ref.eos)


def from_response_probs(template: TabularAR, x: np.ndarray, probs: Any) -> TabularAR:
    """The tree policy with response distribution ``probs`` over ``x``: π(v|h) = P(hv·)/P(h·)
    (unreached contexts keep the template's logits)."""
    _check_tree(template)
    ctx, valid = template.contexts(x), x >= 0
    S, V = template.n_states, template.vocab
    mass = np.zeros((S, V))
    np.add.at(mass, (ctx[valid], x[valid]), np.broadcast_to(np.asarray(probs)[:, None],
                                                             x.shape)[valid])  # fmt: skip
    total = mass.sum(axis=1, keepdims=True)
    table = np.array(template.log_probs)
    seen = total[:, 0] > 0
    with np.errstate(divide="ignore"):
        table[seen] = np.log(mass[seen] / total[seen])
    return TabularAR(logits=table.reshape(template.logits.shape), length=template.length,
                     eos=template.eos)  # fmt: skip


def forward_optimum(ref: TabularAR, reward: Any, beta: float) -> TabularAR:
    """The minimiser of −E_π[R] + β KL(π_ref‖π): π(x) = β π_ref(x) / (λ − R(x)), Σ π = 1."""
    _check_tree(ref)
    x = responses(ref)
    R, p = np.asarray(reward, dtype=np.float64), response_probs(ref, x)
    top = int(np.argmax(R))
    excess = lambda lam: float(np.sum(beta * p / (lam - R))) - 1.0  # noqa: E731
    # deferred: so that `import klest.sequence` stays light
    from scipy.optimize import brentq

    lam = brentq(excess, R[top] + 0.5 * beta * p[top], R[top] + beta, xtol=1e-15, rtol=1e-15)
    return from_response_probs(ref, x, beta * p / (lam - R))


def reward_gradient(pi: TabularAR, reward: Any) -> np.ndarray:
    """∇_θ E_π[R] = E_π[R(x) Σ_t (e_{x_t} − π(·|c_t))] at rows c_t, by enumeration."""
    x = responses(pi)
    weight = response_probs(pi, x) * np.asarray(reward, dtype=np.float64)
    ctx, valid = pi.contexts(x), x >= 0
    w = np.broadcast_to(weight[:, None], x.shape)[valid]
    out = np.zeros((pi.n_states, pi.vocab))
    np.add.at(out, (ctx[valid], x[valid]), w)
    probs = np.exp(pi.log_probs)
    visits = np.zeros(pi.n_states)
    np.add.at(visits, ctx[valid], w)
    return (out - probs * visits[:, None]).reshape(pi.logits.shape)


@dataclass(frozen=True)
class FixedPoint:
    """Where the training ended: ``policy``; ``status`` "converged" (a root of the field,
    max |F| <= tol, stable), "unstable" (a root the descent is repelled from), "boundary" (a
    probability of a reached context fell below :data:`BOUNDARY`: e.g. no regularisation, the
    policy heads for a deterministic one), "diverged" (the field became non-finite) or "no
    fixed point" (no root found); ``steps`` (field evaluations), ``max_field`` = max |F|
    there and ``min_eigenvalue``, the smallest real part of the eigenvalues of the field's
    Jacobian in the free logits (> 0: stable)."""

    policy: TabularAR
    status: str
    steps: int
    max_field: float
    min_eigenvalue: float


def _free(ref: TabularAR) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays of the free logits: the reached contexts, every token but the last (the
    softmax's shift is fixed; every field row sums to 0)."""
    reached = np.flatnonzero(ref.state_distributions().sum(axis=0) > 0)
    rows, cols = np.meshgrid(reached, np.arange(ref.vocab - 1), indexing="ij")
    return rows.ravel(), cols.ravel()


def fixed_point(
    ref: TabularAR,
    reward: Any,
    beta: float,
    *,
    estimator: str = "k1",
    placement: str = "reward_to_go",
    aggregation: str = "seq_mean_token_sum",
    step: float = 1.0,
    descent_steps: int = 50,
    tol: float = 1e-10,
) -> FixedPoint:
    """Train θ (from the reference's logits) on the field F(θ) = −∇E_π[R] + β E[G] (G: the
    configuration's per-response KL gradient, :func:`~klest.sequence.sequence_gradient`),
    each context's row divided by its visit probability Σ_t d_t(c) under π (a preconditioner:
    the same interior fixed points, without the spurious ones where a context stops being
    visited): ``descent_steps`` of exact expected-gradient descent θ ← θ − step·F, then the
    fixed point F = 0 near there by Powell's hybrid method (scipy ``root``, in the free
    logits), accepted when max |F| <= ``tol`` with every probability of a reached context
    above :data:`BOUNDARY`; its stability is that of small-step descent (the eigenvalues of
    ∂F/∂θ, by central differences).

    >>> import numpy as np
    >>> ref = TabularAR.random(vocab=2, order=1, length=2, rng=np.random.default_rng(0))
    >>> fp = fixed_point(ref, [1.0, 0.0, 0.0, 0.5], 1.0)
    >>> optimum = soft_optimum(ref, [1.0, 0.0, 0.0, 0.5], 1.0)
    >>> # the KL between them is at its rounding floor (~1e-16, of either sign): compare tables
    >>> fp.status, bool(np.allclose(fp.policy.log_probs, optimum.log_probs, rtol=0, atol=1e-12))
    ('converged', True)
    """
    _check_tree(ref)
    rows, cols = _free(ref)
    calls = [0]

    def model(free: np.ndarray) -> TabularAR:
        theta = np.array(ref.log_probs)
        theta[rows, cols] = free
        return TabularAR(logits=theta.reshape(ref.logits.shape), length=ref.length, eos=ref.eos)

    def field(free: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if not np.all(np.isfinite(free)):  # the root search stepped out of the domain
            return np.full(free.shape, 1e6)
        pi = model(free)
        with np.errstate(all="ignore"):
            g = _gradient(pi, ref, placement, aggregation, estimator, covariance=False).expected
            F = (beta * g - reward_gradient(pi, reward)).reshape(ref.n_states, -1)
            visits = pi.state_distributions().sum(axis=0)
        return F[rows, cols] / visits[rows]

    free = np.array(ref.log_probs[rows, cols])
    for _ in range(descent_steps):
        F = field(free)
        if not np.all(np.isfinite(F)):
            break
        free = free - step * F
    # deferred: so that `import klest.sequence` stays light
    from scipy.optimize import root

    F = field(free)
    if np.all(np.isfinite(F)):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = root(
                field, free, method="hybr", options={"xtol": 1e-13, "maxfev": 6 * (free.size + 1)}
            )
        if np.all(np.isfinite(sol.x)):
            free, F = sol.x, field(sol.x)
    worst = float(np.max(np.abs(F))) if np.all(np.isfinite(F)) else np.inf
    eig, least = np.nan, float(np.min(np.exp(model(free).log_probs[rows])))
    if least < BOUNDARY:
        status = "boundary"
    elif worst <= tol:
        h = 1e-6 * np.maximum(1.0, np.abs(free))
        jac = np.column_stack([(field(free + h[i] * e) - field(free - h[i] * e)) / (2 * h[i])
                               for i, e in enumerate(np.eye(free.size))])  # fmt: skip
        eig = float(np.min(np.linalg.eigvals(jac).real))
        status = "converged" if eig > 0 else "unstable"
    else:
        status = "diverged" if not np.isfinite(worst) else "no fixed point"
    return FixedPoint(model(free), status, calls[0], worst, eig)


def fixed_point_table(
    ref: TabularAR,
    reward: Any,
    betas: Sequence[float],
    configs: Sequence[tuple[str, str, str]],
    **options: Any,
) -> pd.DataFrame:
    """:func:`fixed_point` for every β × (placement, aggregation, estimator): ``beta placement
    aggregation estimator status steps max_field min_eigenvalue kl_to_optimum tv_to_optimum
    kl_to_forward tv_to_forward expected_reward verdict``, with kl_* = KL(π_fixed‖π_opt) and
    tv_* the total variation between response distributions; ``verdict`` is the
    configuration's at the fixed point."""
    x = responses(ref)
    R = np.asarray(reward, dtype=np.float64)
    rows = []
    for beta in betas:
        soft, fwd = soft_optimum(ref, R, beta), forward_optimum(ref, R, beta)
        p_soft, p_fwd = response_probs(soft, x), response_probs(fwd, x)
        for placement, aggregation, est in configs:
            fp = fixed_point(ref, R, float(beta), estimator=est, placement=placement,
                             aggregation=aggregation, **options)  # fmt: skip
            p = response_probs(fp.policy, x)
            rows.append({
                "beta": float(beta), "placement": placement, "aggregation": aggregation,
                "estimator": est, "status": fp.status, "steps": fp.steps,
                "max_field": fp.max_field, "min_eigenvalue": fp.min_eigenvalue,
                "kl_to_optimum": sequence_kl(fp.policy, soft),
                "tv_to_optimum": 0.5 * float(np.abs(p - p_soft).sum()),
                "kl_to_forward": sequence_kl(fp.policy, fwd),
                "tv_to_forward": 0.5 * float(np.abs(p - p_fwd).sum()),
                "expected_reward": float(p @ R),
                "verdict": _gradient(fp.policy, ref, placement, aggregation, est, False).verdict,
            })  # fmt: skip
    return pd.DataFrame(rows)
