"""Monte Carlo check of :func:`~klest.gradients.penalty_gradient`: autograd through the spec.

Tokens (or whole sequences, for a sequence-level weight) are drawn from the behaviour policy
μ with an explicit Generator; each sample gets its own copy of the policy logits, so one
backward pass through :func:`klest.rl.apply_spec` (the code behind ``kl_penalty``) yields
every per-sample gradient:

- loss placement: ∇_z f(a), the penalty differentiated as the framework's loss does;
- reward / advantages: ∇_z [ρ(a) · sg(f(a))] with f computed from log μ (the rollout
  log-probabilities) and ρ = π/μ differentiable, the unclipped policy-gradient surrogate.

Their mean and standard error (:class:`~klest.gradients.MonteCarloGradient`) must agree with
the enumeration within a few standard errors. torch is imported when this is called.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax

from klest.errors import check_integer
from klest.gradients.monte_carlo import MonteCarloGradient
from klest.gradients.offpolicy import behaviour_options, configured_spec
from klest.gradients.softmax import _check_logits
from klest.rl.penalty import apply_spec

__all__ = ["offpolicy_monte_carlo_gradient"]


def _sample(log_mu: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n independent draws per position from softmax rows log_mu (..., V): shape (n, ...)."""
    cdf = np.cumsum(np.exp(log_mu), axis=-1)
    u = rng.random((n, *log_mu.shape[:-1], 1))
    idx = (u * cdf[..., -1:] > cdf).sum(axis=-1)
    return np.minimum(idx, log_mu.shape[-1] - 1)


def offpolicy_monte_carlo_gradient(
    logits: Any,
    ref_logits: Any,
    *,
    framework: str,
    kind: str,
    n: int,
    seed: int,
    behaviour_logits: Any = None,
    placement: str | None = None,
    weighting: str | None = None,
    level: str = "token",
    truncate: float | None = None,
    mask_range: tuple[float, float] | None = None,
    weight_order: str = "before_clamp",
    **options: Any,
) -> MonteCarloGradient:
    """Mean and SE of n per-sample gradients with respect to ``logits`` (same arguments as
    :func:`~klest.gradients.penalty_gradient`; sequence-level weights treat the logits
    (T, V) as one sequence of independent positions).

    >>> import numpy as np
    >>> z, z_ref, z_old = np.array([0.5, 0.0, -1.0]), np.array([0.0, 0.3, 0.1]), np.zeros(3)
    >>> mc = offpolicy_monte_carlo_gradient(z, z_ref, framework="trl", kind="grpo", n=4000,
    ...                                     seed=0, behaviour_logits=z_old)
    >>> mc.mean.shape, mc.n
    ((3,), 4000)
    """
    import torch  # deferred: torch is optional

    check_integer("n", n, minimum=2)
    spec, where = configured_spec(
        framework, kind, placement=placement, weighting=weighting, level=level,
        truncate=truncate, mask_range=mask_range, weight_order=weight_order,
    )  # fmt: skip
    if where == "metric":
        raise ValueError(f"{framework} {kind!r} is a logged metric: it has no gradient")
    z = _check_logits("logits", logits)
    z_ref = _check_logits("ref_logits", ref_logits)
    given = behaviour_logits is not None
    z_mu = _check_logits("behaviour_logits", behaviour_logits) if given else z
    log_mu, log_ref = log_softmax(z_mu, axis=-1), log_softmax(z_ref, axis=-1)
    actions = _sample(log_mu, n, np.random.default_rng(seed))  # (n, ...)
    idx = torch.as_tensor(actions)[..., None]

    zz = torch.tensor(np.broadcast_to(z, (n, *z.shape)).copy(), requires_grad=True)
    lp = torch.log_softmax(zz, dim=-1).gather(-1, idx)[..., 0]

    def pick(table: np.ndarray) -> Any:
        rows = np.broadcast_to(table, (n, *table.shape))
        return torch.as_tensor(np.take_along_axis(rows, actions[..., None], -1)[..., 0])

    lmu = pick(log_mu)
    if not spec.anchor.startswith("ref_logprob"):  # prime-rl: the penalty pulls toward μ
        lref = lmu if given else lp.detach()
    else:
        lref = pick(log_ref)
    # behaviour_options fills the framework's option for μ from the rollout log-probs
    opts = behaviour_options(spec, lmu, given, options)
    if where == "loss":
        surrogate = apply_spec(spec, lp, lref, **opts)
    else:
        value = apply_spec(spec, lmu if given else lp.detach(), lref, **opts).detach()
        surrogate = torch.exp(lp - lmu) * value if given else torch.exp(lp - lp.detach()) * value
    surrogate.sum().backward()
    per_sample = zz.grad.numpy().reshape(n, -1)
    mean = per_sample.mean(axis=0).reshape(z.shape)
    se = (per_sample.std(axis=0, ddof=1) / np.sqrt(n)).reshape(z.shape)
    return MonteCarloGradient(mean=mean, se=se, n=n, backend="torch")
