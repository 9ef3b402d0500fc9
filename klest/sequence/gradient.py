"""What a KL term optimises over whole responses: exact sequence-level expected gradients.

The policy π is a :class:`~klest.sequence.TabularAR` with logit tables θ[c, ·]; a response
x = (x_1, ..., x_{T_x}) is drawn token by token (from π, or from a behaviour policy μ), with
l_t = log π_ref(x_t|c_t) − log π(x_t|c_t) and k_t = k(l_t). The gradient of log π(x_t|c_t)
with respect to θ[c, ·] is 1[c_t = c](e_{x_t} − π(·|c)), so every configuration's per-sample
gradient is Σ_t A_t (e_{x_t} − π(·|c_t)) at row c_t, and

    E[G][c, ·] = Σ_t Σ_v W_t(c, v) (e_v − π(·|c)),   W_t(c, v) = E[A_t ; c_t = c, x_t = v],

computed by a forward pass (the prefix) and a backward pass (the suffix) over contexts:
O(T S V) for S contexts. The configurations (``placement``):

- ``loss``: the per-token estimator differentiated through log π of its own token only,
  A_t = a(T_x) ∂k_t/∂log π(x_t|c_t) (pathwise; the sampling of the response is not
  differentiated, as in the frameworks' KL losses);
- ``reward_sum``: A_t = a(T_x) Σ_s k_s (verl's GRPO broadcast of the sequence sum);
- ``reward_to_go``: A_t = a(T_x) Σ_{s≥t} k_s (REINFORCE++);
- ``reward_token``: A_t = a(T_x) k_t (slime's reinforce++-baseline);
- ``reward_scalar``: RLOO's Σ_t k1_t subtracted from the scalar reward: A_t = a(T_x) Σ_s k1_s
  (the leave-one-out baseline does not change the expectation); the estimator must be k1;
- ``rao_blackwell``: the Rao–Blackwellised gradient of KL(π‖π_ref) (Amini, Vieira &
  Cotterell 2025): Σ_t ∇KL(π(·|c_t)‖π_ref(·|c_t)) + Σ_t (Σ_{s>t} KL_s(c_s)) ∇log π(x_t|c_t).

``aggregation`` sets a(T_x), the loss normalisation of a batch of responses:
``seq_mean_token_sum`` 1; ``seq_mean_token_mean`` 1/T_x; ``seq_mean_token_sum_norm``
1/L (Dr. GRPO, L = ``norm_constant``, default the maximum length); ``token_mean`` 1/E[T_x],
the large-batch limit of Σ_b Σ_t g / Σ_b T_b (the four coincide without an eos, up to the
constant). Sign: gradients of the quantity minimised.

Off-policy (``behaviour=``, μ = π_old): responses are drawn from μ, with ``weighting``
"none", "token_detached" (ρ_t = π/μ at token t, detached), "token_differentiable" (ρ_t
differentiable: the loss's A_t becomes ρ_t (k_t + ∂k_t/∂log π)), "sequence_detached"
(∏_t ρ_t: exactly the on-policy expectation) or "sequence_differentiable" (adds
E_π[(Σ_t a k_t) Σ_u ∇log π_u]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from klest import estimators as _estimators
from klest.sequence.model import (
    TabularAR,
    check_pair,
    conditional_kl,
    count_responses,
    responses,
)

__all__ = ["AGGREGATIONS", "PLACEMENTS", "SequenceGradient", "sequence_gradient"]

PLACEMENTS = (
    "loss",
    "reward_sum",
    "reward_to_go",
    "reward_token",
    "reward_scalar",
    "rao_blackwell",
)
AGGREGATIONS = (
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum",
    "seq_mean_token_sum_norm",
)
WEIGHTINGS = (
    "none",
    "token_detached",
    "token_differentiable",
    "sequence_detached",
    "sequence_differentiable",
)
#: the per-token estimators: value k(l) and ∂k/∂log π as functions of l
_DERIVATIVES = {
    "k1": lambda l: np.ones_like(l),
    "k2": lambda l: -l,
    "k3": lambda l: -np.expm1(l),
    "abs": lambda l: -np.sign(l),
}
#: relative tolerance of the verdicts (the expectations are exact to ~1e-13)
VERDICT_RTOL = 1e-9
#: most responses the covariance trace enumerates
MAX_RESPONSES = 1 << 16


@dataclass(frozen=True)
class SequenceGradient:
    """Exact expectations of one configuration (see the module notes).

    ``expected`` and each of ``true`` have the shape of ``pi.logits``. ``verdict`` is
    "KL(pi||ref)" / "KL(ref||pi)" when ``expected`` equals that true gradient (1e-9
    relative), "zero", "partial" when it is the token-level part of ∇KL(π‖π_ref) (the
    on-policy loss of an estimator whose per-token gradient follows KL(π‖ref): it misses the
    gradient through the later contexts), else "neither". An aggregation factor that is the
    same for every response length (1/E[T_x], Dr. GRPO's 1/L, or 1/T without an eos) is
    divided out first (``relative_error`` and ``cosine`` too, against ∇KL(π‖π_ref)): it
    rescales the objective without changing it. ``cov_trace`` is tr Cov[G] for a batch of
    one response (by enumeration; NaN beyond MAX_RESPONSES responses).
    """

    expected: np.ndarray
    true: dict[str, np.ndarray]
    verdict: str
    relative_error: float
    cosine: float
    cov_trace: float


def _estimator(name: str, placement: str) -> tuple[Any, Any]:
    if placement == "rao_blackwell":
        return None, None
    if placement == "reward_scalar" and name != "k1":
        raise ValueError(f"reward_scalar is RLOO's sequence sum of k1; got estimator {name!r}")
    canonical = _estimators.get(name).name
    if canonical not in _DERIVATIVES:
        raise ValueError(f"estimator must be one of {tuple(_DERIVATIVES)}; got {name!r}")
    return _estimators.get(canonical), _DERIVATIVES[canonical]


def _aggregation(name: str, model: TabularAR, norm_constant: float | None) -> Any:
    """a(T) for T = 1..length, as an array indexed by T; ``model`` is the policy the batch
    is drawn from (its E[T_x] normalises ``token_mean``)."""
    lengths = np.arange(model.length + 1, dtype=np.float64)
    if name == "seq_mean_token_sum":
        return np.ones_like(lengths)
    if name == "seq_mean_token_mean":
        with np.errstate(divide="ignore"):
            return 1.0 / lengths
    if name == "seq_mean_token_sum_norm":
        constant = float(model.length if norm_constant is None else norm_constant)
        if not (constant > 0 and np.isfinite(constant)):
            raise ValueError(f"norm_constant must be a positive number; got {norm_constant!r}")
        return np.full_like(lengths, 1.0 / constant)
    if name == "token_mean":
        d = model.state_distributions()
        return np.full_like(lengths, 1.0 / float(d.sum()))  # E[T_x] = Σ_t P(T_x > t)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}; got {name!r}")


def _passes(model: TabularAR, kernel: np.ndarray, value: np.ndarray, agg: np.ndarray) -> tuple:
    """Forward d_t(c), F_t(c) = E[Σ_{s<t} k_s; c_t = c] and, per (t, c, v), H = E[a(T) | c_t
    = c, x_t = v] and B = E[a(T) Σ_{s>t} k_s | c_t = c, x_t = v], all under ``kernel``."""
    T, S, V = model.length, model.n_states, model.vocab
    nxt = model.next_state
    cont = kernel.copy()
    if model.eos is not None:
        cont[:, model.eos] = 0.0
    d = np.zeros((T, S))
    f = np.zeros((T, S))
    d[0, model.initial_state] = 1.0
    for t in range(T - 1):
        mass = d[t][:, None] * cont
        d[t + 1] = np.bincount(nxt.ravel(), weights=mass.ravel(), minlength=S)
        carry = (f[t][:, None] + d[t][:, None] * value) * cont
        f[t + 1] = np.bincount(nxt.ravel(), weights=carry.ravel(), minlength=S)
    H = np.empty((T, S, V))
    B = np.empty((T, S, V))
    h_next, b_next = None, None
    for t in range(T - 1, -1, -1):
        ends = np.zeros((S, V), dtype=bool) if t < T - 1 else np.ones((S, V), dtype=bool)
        if model.eos is not None:
            ends[:, model.eos] = True
        H[t] = np.where(ends, agg[t + 1], 0.0 if h_next is None else h_next[nxt])
        B[t] = np.where(ends, 0.0, 0.0 if b_next is None else b_next[nxt])
        h_next = np.sum(kernel * H[t], axis=1)
        b_next = np.sum(kernel * (value * H[t] + B[t]), axis=1)
    return d, f, H, B


def _score_rows(policy: TabularAR, weights: np.ndarray) -> np.ndarray:
    """Σ_v W(c, v) (e_v − π(·|c)) for W of shape (S, V), as rows of the logit table."""
    pi = np.exp(policy.log_probs)
    return weights - pi * weights.sum(axis=1, keepdims=True)


def _configuration_weights(
    policy: TabularAR, ref: TabularAR, kernel: np.ndarray, omega: np.ndarray,
    estimator: str, placement: str, agg: np.ndarray, differentiable_token: bool,
) -> np.ndarray:  # fmt: skip
    """Σ_t W_t(c, v) for one placement, shape (S, V)."""
    l = ref.log_probs - policy.log_probs
    if placement == "rao_blackwell":
        kl = np.broadcast_to(conditional_kl(policy, ref)[:, None], l.shape)
        d, _, H, B = _passes(policy, kernel, np.ascontiguousarray(kl), np.ones_like(agg))
        return np.einsum("ts,tsv->sv", d, B) * kernel * omega
    est, deriv = _estimator(estimator, placement)
    with np.errstate(over="ignore", invalid="ignore"):
        k = est(l) if placement != "reward_scalar" else -l
        dk = deriv(l)
    d, f, H, B = _passes(policy, kernel, k, agg)
    dk_kernel = kernel * omega
    if placement == "loss":
        a = k + dk if differentiable_token else dk
        return np.einsum("ts,tsv->sv", d, H) * dk_kernel * a
    if placement == "reward_token":
        return np.einsum("ts,tsv->sv", d, H) * dk_kernel * k
    if placement == "reward_to_go":
        return (np.einsum("ts,tsv->sv", d, H) * k + np.einsum("ts,tsv->sv", d, B)) * dk_kernel
    # reward_sum, reward_scalar: the prefix sum too
    prefix = np.einsum("ts,tsv->sv", f, H)
    return (prefix + np.einsum("ts,tsv->sv", d, H) * k + np.einsum("ts,tsv->sv", d, B)) * (
        dk_kernel
    )


def sequence_true_gradients(policy: TabularAR, ref: TabularAR) -> dict[str, np.ndarray]:
    """∇_θ KL(π‖π_ref) and ∇_θ KL(π_ref‖π) between the response distributions, exact.

    ∇KL(π‖π_ref) = E_π[Σ_t (Σ_{s≥t} k1_s) ∇log π(x_t|c_t)] (reward-to-go of k1);
    ∇KL(π_ref‖π) = −E_{π_ref}[Σ_t ∇log π(x_t|c_t)] = Σ_t d^ref_t(c) (π(·|c) − π_ref(·|c)).

    >>> import numpy as np
    >>> pi = TabularAR.random(vocab=2, order=1, length=3, rng=np.random.default_rng(0))
    >>> {k: v.shape for k, v in sequence_true_gradients(pi, pi).items()}
    {'KL(pi||ref)': (3, 2), 'KL(ref||pi)': (3, 2)}
    """
    check_pair(policy, ref, "ref")
    kernel = np.exp(policy.log_probs)
    ones = np.ones(policy.length + 1)
    k1 = policy.log_probs - ref.log_probs
    d, _, H, B = _passes(policy, kernel, k1, ones)
    w = (np.einsum("ts,tsv->sv", d, H) * k1 + np.einsum("ts,tsv->sv", d, B)) * kernel
    forward = _score_rows(policy, w)
    d_ref = ref.state_distributions().sum(axis=0)
    reverse = d_ref[:, None] * (kernel - np.exp(ref.log_probs))
    shape = policy.logits.shape
    return {"KL(pi||ref)": forward.reshape(shape), "KL(ref||pi)": reverse.reshape(shape)}


def _per_response(policy, ref, drawn, estimator, placement, aggregation, norm, weighting):  # type: ignore[no-untyped-def]
    """(probabilities, per-response gradients (N, S*V)) by enumeration, the responses drawn
    from ``drawn`` with the weighting's ratios (the estimator a batch of one really uses)."""
    x = responses(policy)
    n, T = x.shape
    ctx = policy.contexts(x)
    valid = x >= 0
    tok = np.maximum(x, 0)
    lp = np.where(valid, policy.log_probs[ctx, tok], 0.0)
    lr = np.where(valid, ref.log_probs[ctx, tok], 0.0)
    lm = np.where(valid, drawn.log_probs[ctx, tok], 0.0)
    prob = np.exp(lm.sum(axis=1))
    length = valid.sum(axis=1)
    agg = _aggregation(aggregation, drawn, norm)[length][:, None] * valid
    l = lr - lp
    omega = np.exp(lp - lm) if weighting.startswith("token") else np.ones_like(l)
    if weighting.startswith("sequence"):
        omega = np.broadcast_to(np.exp((lp - lm).sum(axis=1, keepdims=True)), l.shape)
    pi = np.exp(policy.log_probs)
    path = None
    if placement == "rao_blackwell":
        kl_rows = conditional_kl(policy, ref)
        kl_t = np.where(valid, kl_rows[ctx], 0.0)
        after = np.cumsum(kl_t[:, ::-1], axis=1)[:, ::-1] - kl_t
        coef = after * valid
        path = pi * (policy.log_probs - ref.log_probs) - pi * kl_rows[:, None]
    else:
        est, deriv = _estimator(estimator, placement)
        with np.errstate(over="ignore", invalid="ignore"):
            k = np.where(valid, est(l) if placement != "reward_scalar" else -l, 0.0)
            dk = np.where(valid, deriv(l), 0.0)
        total = k.sum(axis=1, keepdims=True)
        to_go = np.cumsum(k[:, ::-1], axis=1)[:, ::-1]
        coef = (
            {
                "loss": (k + dk) if weighting == "token_differentiable" else dk,
                "reward_token": k,
                "reward_to_go": to_go,
                "reward_sum": np.broadcast_to(total, k.shape),
                "reward_scalar": np.broadcast_to(total, k.shape),
            }[placement]
            * agg
            * omega
        )
        if weighting == "sequence_differentiable":  # ∇(W P) = W ∇P + W P Σ_u ∇log π_u
            coef = coef + omega * (agg * k).sum(axis=1, keepdims=True) * valid
    S, V = policy.n_states, policy.vocab
    grads = np.zeros((n, S, V))
    rows = np.arange(n)
    for t in range(T):
        live = valid[:, t]
        c, v = ctx[live, t], tok[live, t]
        g = -coef[live, t][:, None] * pi[c]
        g[np.arange(live.sum()), v] += coef[live, t]
        np.add.at(grads, (rows[live], c), g)
        if path is not None:
            np.add.at(grads, (rows[live], c), path[c])
    return prob, grads.reshape(n, -1)


def _verdict(g: np.ndarray, true: dict[str, np.ndarray], partial: np.ndarray) -> tuple:
    def err(t: np.ndarray) -> float:
        n = float(np.linalg.norm(t))
        return float(np.linalg.norm(g - t)) / n if n > 0 else np.inf

    forward = true["KL(pi||ref)"]
    scale = max(float(np.linalg.norm(t)) for t in true.values())
    if err(forward) <= VERDICT_RTOL:
        verdict = "KL(pi||ref)"
    elif err(true["KL(ref||pi)"]) <= VERDICT_RTOL:
        verdict = "KL(ref||pi)"
    elif float(np.linalg.norm(g)) <= VERDICT_RTOL * scale:
        verdict = "zero"
    elif err(partial) <= VERDICT_RTOL:
        verdict = "partial"
    else:
        verdict = "neither"
    gn, fn = float(np.linalg.norm(g)), float(np.linalg.norm(forward))
    meaningful = gn * fn > 0 and verdict != "zero"  # a zero gradient's direction is noise
    cosine = float(np.vdot(g, forward)) / (gn * fn) if meaningful else np.nan
    return verdict, err(forward), cosine


def check_configuration(
    pi: TabularAR, ref: TabularAR, placement: str, behaviour: TabularAR | None, weighting: str
) -> None:
    """Raise a one-line ValueError for an invalid configuration (shared with Monte Carlo)."""
    check_pair(pi, ref, "ref")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}; got {placement!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
    if behaviour is not None:
        check_pair(pi, behaviour, "behaviour")
    elif weighting != "none":
        raise ValueError(f"weighting={weighting!r} needs behaviour= (the sampling policy)")
    if placement == "rao_blackwell" and behaviour is not None:
        raise ValueError("rao_blackwell is the on-policy Rao-Blackwellised gradient")
    if weighting.endswith("differentiable") and placement != "loss":
        raise ValueError(f"weighting={weighting!r} changes a KL term in the loss")


def sequence_gradient(
    pi: TabularAR,
    ref: TabularAR,
    *,
    estimator: str = "k3",
    placement: str = "loss",
    aggregation: str = "seq_mean_token_sum",
    behaviour: TabularAR | None = None,
    weighting: str = "none",
    norm_constant: float | None = None,
    covariance: bool = True,
) -> SequenceGradient:
    """Exact expected gradient of one KL configuration over whole responses (module notes).

    ``covariance=False`` skips ``cov_trace`` (NaN), the one part computed by enumeration.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pi = TabularAR.random(vocab=3, order=1, length=4, rng=rng)
    >>> ref = pi.perturbed(rng, 0.5)
    >>> sequence_gradient(pi, ref, estimator="k1", placement="reward_to_go").verdict
    'KL(pi||ref)'
    >>> sequence_gradient(pi, ref, estimator="k2", placement="loss").verdict
    'partial'
    >>> sequence_gradient(pi, ref, estimator="k3", placement="loss").verdict
    'neither'
    """
    check_configuration(pi, ref, placement, behaviour, weighting)
    drawn = pi if behaviour is None else behaviour  # the batch's responses come from it
    agg = _aggregation(aggregation, drawn, norm_constant)
    _estimator(estimator, placement)  # validates the name
    on_policy = behaviour is None or weighting.startswith("sequence")
    sampler = pi if on_policy else behaviour
    kernel = np.exp(sampler.log_probs)
    omega = np.exp(pi.log_probs - sampler.log_probs) if weighting.startswith("token") else 1.0
    w = _configuration_weights(pi, ref, kernel, np.broadcast_to(omega, kernel.shape), estimator,
                               placement, agg, weighting == "token_differentiable")  # fmt: skip
    rows = _score_rows(pi, w)
    visits = pi.state_distributions().sum(axis=0)[:, None]
    pi_probs = np.exp(pi.log_probs)
    kl_rows = conditional_kl(pi, ref)[:, None]
    partial = visits * (pi_probs * (pi.log_probs - ref.log_probs) - pi_probs * kl_rows)
    if placement == "rao_blackwell":
        rows = rows + partial
    if weighting == "sequence_differentiable":
        extra = _configuration_weights(pi, ref, kernel, np.ones_like(kernel), estimator,
                                       "reward_sum", agg, False)  # fmt: skip
        rows = rows + _score_rows(pi, extra)
    shape = pi.logits.shape
    expected = rows.reshape(shape)
    true = sequence_true_gradients(pi, ref)
    # a constant aggregation factor (1/E[T_x], 1/L) rescales the objective without changing
    # it: the verdict compares expected / a; a factor that varies with T_x (1/T_x with an eos)
    # changes the objective and is compared as it is
    possible = agg[[pi.length]] if pi.eos is None else agg[1:]
    factor = float(possible[0]) if np.all(possible == possible[0]) else 1.0
    if placement == "rao_blackwell":
        factor = 1.0
    verdict, error, cosine = _verdict(expected / factor, true, partial.reshape(shape))
    trace = np.nan
    if covariance and count_responses(pi) <= MAX_RESPONSES:
        prob, grads = _per_response(pi, ref, drawn, estimator, placement, aggregation,
                                    norm_constant, weighting)  # fmt: skip
        mean = prob @ grads
        trace = max(float(prob @ np.sum(grads * grads, axis=1) - mean @ mean), 0.0)
    return SequenceGradient(expected, true, verdict, error, cosine, trace)
