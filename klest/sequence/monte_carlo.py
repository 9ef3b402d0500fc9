"""The Monte Carlo route to :func:`~klest.sequence.sequence_gradient`: torch autograd over
sampled responses.

Responses are drawn from the policy (or from ``behaviour``) with an explicit Generator; each
gets its own copy of the logit tables, so one backward pass through the configuration's
per-response surrogate gives every per-response gradient:

- ``loss``: Σ_t a(T_x) ω_t k_t, differentiated (ω_t = ρ_t detached or differentiable, or 1);
- ``reward_*``: Σ_t sg(a(T_x) ω_t A_t) log π(x_t|c_t), A_t the placement's return;
- ``rao_blackwell``: Σ_t KL(π(·|c_t)‖π_ref(·|c_t)) + Σ_t sg(Σ_{s>t} KL_s) log π(x_t|c_t);
- a sequence-level weight W = Π_t ρ_t multiplies the surrogate (detached or not).

Their mean and standard error must agree with the exact expectation within a few standard
errors. torch is imported when this is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from klest.errors import check_integer
from klest.sequence.gradient import _aggregation, _estimator, check_configuration
from klest.sequence.model import TabularAR

__all__ = ["SequenceMonteCarlo", "monte_carlo_sequence_gradient"]


@dataclass(frozen=True)
class SequenceMonteCarlo:
    """Mean and standard error of n per-response gradients (shape of ``pi.logits``)."""

    mean: np.ndarray
    se: np.ndarray
    n: int

    def z_scores(self, exact: Any) -> np.ndarray:
        """(mean − exact) / se per entry (0 where both the error and the SE vanish)."""
        diff = self.mean - np.asarray(exact, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = diff / self.se
        return np.where((diff == 0) & (self.se == 0), 0.0, z)


def monte_carlo_sequence_gradient(
    pi: TabularAR,
    ref: TabularAR,
    *,
    n: int,
    seed: int,
    estimator: str = "k3",
    placement: str = "loss",
    aggregation: str = "seq_mean_token_sum",
    behaviour: TabularAR | None = None,
    weighting: str = "none",
    norm_constant: float | None = None,
) -> SequenceMonteCarlo:
    """Per-response gradients of ``n`` responses by torch autograd (see the module notes).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pi = TabularAR.random(vocab=3, order=1, length=4, rng=rng, eos=2)
    >>> mc = monte_carlo_sequence_gradient(pi, pi.perturbed(rng, 0.5), n=2000, seed=1)
    >>> mc.mean.shape, mc.n
    ((4, 3), 2000)
    """
    import torch  # deferred: torch is optional

    check_configuration(pi, ref, placement, behaviour, weighting)
    n = check_integer("n", n, minimum=2)
    drawn = pi if behaviour is None else behaviour
    x = drawn.sample(np.random.default_rng(seed), n)
    agg_table = _aggregation(aggregation, drawn, norm_constant)
    est, _ = _estimator(estimator, placement)

    ctx = torch.as_tensor(pi.contexts(x))
    valid = torch.as_tensor(x >= 0)
    tok = torch.as_tensor(np.maximum(x, 0))
    rows = torch.arange(n)[:, None]
    theta = torch.tensor(np.broadcast_to(pi.logits, (n, *pi.logits.shape)).copy(),
                         requires_grad=True)  # fmt: skip
    table = torch.log_softmax(theta.reshape(n, -1, pi.vocab), dim=-1)
    ref_table = torch.log_softmax(torch.tensor(ref.logits).reshape(-1, pi.vocab), dim=-1)
    mu_table = torch.log_softmax(torch.tensor(drawn.logits).reshape(-1, pi.vocab), dim=-1)
    zero = torch.zeros((), dtype=torch.float64)
    lp = torch.where(valid, table[rows, ctx, tok], zero)
    lr = torch.where(valid, ref_table[ctx, tok], zero)
    lm = torch.where(valid, mu_table[ctx, tok], zero)
    a = torch.as_tensor(agg_table[valid.sum(1).numpy()])[:, None] * valid
    rho = torch.exp(lp - lm)
    omega = {"token_detached": rho.detach(), "token_differentiable": rho}.get(
        weighting, torch.ones_like(lp)
    )
    if placement == "rao_blackwell":
        kl_rows = (table.exp() * (table - ref_table)).sum(-1)  # (n, S)
        kl_t = torch.where(valid, kl_rows[rows, ctx], zero)
        after = kl_t.flip(1).cumsum(1).flip(1) - kl_t
        surrogate = kl_t.sum(1) + (after.detach() * lp).sum(1)
    else:
        l = lr - lp
        if placement == "reward_scalar":
            k = -l
        else:
            k = {"k1": -l, "k2": 0.5 * l * l, "k3": torch.expm1(l) - l, "abs": torch.abs(l)}[
                est.name
            ]
        k = torch.where(valid, k, zero)
        if placement == "loss":
            surrogate = (a * omega * k).sum(1)
        else:
            total = k.sum(1, keepdim=True).expand_as(k)
            coef = {
                "reward_token": k,
                "reward_to_go": k.flip(1).cumsum(1).flip(1),
                "reward_sum": total,
                "reward_scalar": total,
            }[placement]
            surrogate = ((a * omega * coef).detach() * lp).sum(1)
    if weighting == "sequence_detached":
        surrogate = rho.prod(1).detach() * surrogate
    elif weighting == "sequence_differentiable":
        surrogate = rho.prod(1) * surrogate
    surrogate.sum().backward()
    per = theta.grad.numpy().reshape(n, -1)
    shape = pi.logits.shape
    mean = per.mean(axis=0).reshape(shape)
    se = (per.std(axis=0, ddof=1) / np.sqrt(n)).reshape(shape)
    return SequenceMonteCarlo(mean=mean, se=se, n=n)
