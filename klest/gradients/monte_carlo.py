"""Monte Carlo check of the exact expected gradients: autograd through the frameworks' code.

Actions (or Gaussian draws) are sampled from the policy with an explicit Generator; each
sample gets its own copy of the parameters, so a single backward pass through
:func:`klest.rl.kl_penalty` yields every per-sample gradient, whose mean and standard error
are compared with :func:`~klest.gradients.expected_gradient`. With ``backend="torch"`` the
gradient comes from torch autograd of the framework function that implements the
(estimator, placement) pair (:data:`ROUTES`); with ``backend="numpy"`` from the closed form
c(l) ∇log π (no torch needed, but then only the enumeration is checked, not c).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest.distributions import Normal
from klest.errors import check_integer
from klest.estimators import Estimator
from klest.gradients.coefficients import _resolve, gradient_coefficient
from klest.gradients.softmax import _log_probs
from klest.rl import kl_penalty

__all__ = ["ROUTES", "MonteCarloGradient", "gaussian_monte_carlo_gradient", "monte_carlo_gradient"]

#: (estimator, placement) -> (framework, kind, how the penalty enters the surrogate):
#: "loss" differentiates the value, "score" uses sg(value) * log pi, "ratio" multiplies the
#: value by exp(log pi - sg(log pi)), "old" passes old_logprob = sg(log pi) to the framework.
ROUTES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("k1", "loss"): ("verl", "k1", "loss"),
    ("k2", "loss"): ("verl", "k2", "loss"),
    ("k3", "loss"): ("trl", "grpo", "loss"),
    ("abs", "loss"): ("verl", "abs", "loss"),
    ("low_var_kl", "loss"): ("verl", "low_var_kl", "loss"),
    ("k1", "reward"): ("trl", "k1", "score"),
    ("k2", "reward"): ("trl@0.11.4", "mse", "score"),
    ("k3", "reward"): ("trl", "k3", "score"),
    ("abs", "reward"): ("trl@0.11.4", "abs", "score"),
    ("low_var_kl", "reward"): ("verl", "low_var_kl", "score"),
    ("k1", "loss_is"): ("slime", "k1", "old"),
    ("k2", "loss_is"): ("slime", "k2", "old"),
    ("k3", "loss_is"): ("trl", "grpo", "bias_correction"),
    ("abs", "loss_is"): ("verl", "abs", "ratio"),
    ("low_var_kl", "loss_is"): ("verl", "low_var_kl", "ratio"),
    ("k1", "straight_through"): ("verl", "k1+", "loss"),
    ("k2", "straight_through"): ("verl", "k2+", "loss"),
    # verl's "k3+" is "low_var_kl+"; every "+" kind has k2's gradient whatever the value
    ("k3", "straight_through"): ("verl", "k3+", "loss"),
    ("abs", "straight_through"): ("verl", "abs+", "loss"),
    ("low_var_kl", "straight_through"): ("verl", "low_var_kl+", "loss"),
}


@dataclass(frozen=True)
class MonteCarloGradient:
    """Mean per-sample gradient, its standard error (per component) and the sample count."""

    mean: np.ndarray
    se: np.ndarray
    n: int
    backend: str

    def z_scores(self, exact: Any) -> np.ndarray:
        """(mean − exact) / se per component (0 where both the error and the SE vanish).

        >>> MonteCarloGradient(np.array([1.0, 0.0]), np.array([0.5, 0.0]), 10, "numpy").z_scores(
        ...     [0.0, 0.0])
        array([2., 0.])
        """
        diff = self.mean - np.asarray(exact, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = diff / self.se
        return np.where((diff == 0) & (self.se == 0), 0.0, z)


def _torch_surrogate(lp: Any, ref: Any, estimator: str, placement: str) -> Any:
    """Per-sample surrogate whose autograd gradient is the per-sample penalty gradient."""
    try:
        framework, kind, how = ROUTES[(estimator, placement)]
    except KeyError:
        supported = sorted({e for e, _ in ROUTES})
        raise ValueError(
            f"no framework implements estimator {estimator!r} with placement {placement!r}; "
            f"torch routes exist for {', '.join(supported)} (use backend='numpy' otherwise)"
        ) from None
    if how == "loss":
        return kl_penalty(lp, ref, kind, framework=framework)
    if how == "score":
        value = kl_penalty(lp.detach(), ref, kind, framework=framework).detach()
        return value * lp
    if how == "old":
        return kl_penalty(
            lp, ref, kind, framework=framework, old_logprob=lp.detach(), use_unbiased_kl=True
        )
    if how == "bias_correction":
        return kl_penalty(lp, ref, kind, framework=framework, use_bias_correction_kl=True)
    ratio = (lp - lp.detach()).exp()
    return kl_penalty(lp, ref, kind, framework=framework) * ratio


def _merge(stats: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Chan's pairwise merge of (count, mean, M2) blocks."""
    n, mean, m2 = stats[0]
    for nb, mb, m2b in stats[1:]:
        delta = mb - mean
        total = n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta * delta * (n * nb / total)
        n = total
    return mean, m2, n


def _summarise(blocks: list[np.ndarray], backend: str) -> MonteCarloGradient:
    stats = [(len(g), g.mean(axis=0), ((g - g.mean(axis=0)) ** 2).sum(axis=0)) for g in blocks]
    mean, m2, n = _merge(stats)
    se = np.sqrt(m2 / (n - 1) / n)
    return MonteCarloGradient(mean=mean, se=se, n=n, backend=backend)


def _check_n(n: int) -> int:
    return check_integer("n", n, minimum=2)


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator or an int seed; got {rng!r}")


def monte_carlo_gradient(
    logits: Any,
    ref_logits: Any,
    *,
    estimator: str | Estimator,
    placement: str,
    n: int,
    rng: np.random.Generator | int,
    backend: str = "torch",
    block: int = 65_536,
) -> MonteCarloGradient:
    """Mean and SE of per-sample penalty gradients w.r.t. 1-D ``logits``, actions a ~ π.

    ``rng`` is a Generator (or an int seed for ``numpy.random.default_rng``); samples are
    drawn in blocks of ``block`` actions, each block's gradients from one backward pass.

    >>> import numpy as np
    >>> z, z_ref = np.array([0.4, 0.0, -0.3]), np.array([0.0, 0.2, 0.1])
    >>> mc = monte_carlo_gradient(z, z_ref, estimator="k3", placement="reward", n=20_000,
    ...                           rng=np.random.default_rng(0), backend="numpy")
    >>> from klest.gradients import expected_gradient
    >>> bool(np.all(np.abs(mc.z_scores(expected_gradient(z, z_ref, estimator="k3",
    ...                                                  placement="reward"))) < 5))
    True
    """
    est, _ = _resolve(estimator, placement)
    n, rng = _check_n(n), _generator(rng)
    log_pi, log_ref = _log_probs(logits, ref_logits)
    if log_pi.ndim != 1:
        raise ValueError(f"logits must be 1-D for monte_carlo_gradient; got shape {log_pi.shape}")
    pi = np.exp(log_pi)
    z = np.asarray(logits, dtype=np.float64)

    def one_block(size: int) -> np.ndarray:
        actions = rng.choice(len(pi), size=size, p=pi / pi.sum())
        if backend == "numpy":
            c = gradient_coefficient(
                log_ref[actions] - log_pi[actions], estimator=est, placement=placement
            )
            return c[:, None] * (np.eye(len(pi))[actions] - pi)
        return _torch_softmax_block(z, log_ref, actions, est.name, placement)

    return _in_blocks(one_block, n, block, backend)


def _in_blocks(
    one_block: Callable[[int], np.ndarray], n: int, block: int, backend: str
) -> MonteCarloGradient:
    """Per-sample gradients of n draws, ``block`` at a time, summarised."""
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'torch' or 'numpy'; got {backend!r}")
    blocks = [one_block(min(block, n - start)) for start in range(0, n, block)]
    return _summarise(blocks, backend)


def _torch_softmax_block(
    z: np.ndarray, log_ref: np.ndarray, actions: np.ndarray, estimator: str, placement: str
) -> np.ndarray:
    import torch

    idx = torch.as_tensor(actions)[:, None]
    params = torch.tensor(z, dtype=torch.float64).expand(len(actions), -1).clone()
    params.requires_grad_(True)
    lp = torch.log_softmax(params, dim=-1).gather(1, idx)[:, 0]
    ref = torch.tensor(log_ref, dtype=torch.float64)[idx[:, 0]]
    _torch_surrogate(lp, ref, estimator, placement).sum().backward()
    return params.grad.numpy().copy()


def gaussian_monte_carlo_gradient(
    policy: Normal,
    ref: Normal,
    *,
    estimator: str | Estimator,
    placement: str,
    n: int,
    rng: np.random.Generator | int,
    backend: str = "torch",
    block: int = 65_536,
) -> MonteCarloGradient:
    """Mean and SE of per-sample gradients w.r.t. (loc, log scale), x ~ policy (not reparam.).

    ``rng`` is a Generator or an int seed, as for :func:`monte_carlo_gradient`.

    >>> import numpy as np
    >>> from klest import Normal
    >>> mc = gaussian_monte_carlo_gradient(Normal(loc=0.2, scale=1.0), Normal(), estimator="k1",
    ...                                    placement="loss", n=1000,
    ...                                    rng=np.random.default_rng(1), backend="numpy")
    >>> mc.mean.shape
    (2,)
    """
    est, _ = _resolve(estimator, placement)
    n, rng = _check_n(n), _generator(rng)

    def one_block(size: int) -> np.ndarray:
        x = policy.sample(rng, size)
        if backend == "numpy":
            zs = (x - policy.loc) / policy.scale
            c = gradient_coefficient(
                ref.log_prob(x) - policy.log_prob(x), estimator=est, placement=placement
            )
            return c[:, None] * np.stack([zs / policy.scale, zs * zs - 1.0], axis=1)
        return _torch_gaussian_block(policy, ref, x, est.name, placement)

    return _in_blocks(one_block, n, block, backend)


def _torch_gaussian_block(
    policy: Normal, ref: Normal, x: np.ndarray, estimator: str, placement: str
) -> np.ndarray:
    import torch

    m = len(x)
    loc = torch.full((m,), policy.loc, dtype=torch.float64, requires_grad=True)
    log_scale = torch.full((m,), math.log(policy.scale), dtype=torch.float64, requires_grad=True)
    xt = torch.as_tensor(x, dtype=torch.float64)
    lp = torch.distributions.Normal(loc, log_scale.exp()).log_prob(xt)
    ref_lp = torch.as_tensor(ref.log_prob(x), dtype=torch.float64)
    _torch_surrogate(lp, ref_lp, estimator, placement).sum().backward()
    return np.stack([loc.grad.numpy(), log_scale.grad.numpy()], axis=1)
