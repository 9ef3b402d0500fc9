"""Closed-form KL divergences between the discrete families (Bernoulli, Categorical, Poisson).

Every form is evaluated as a sum of non-negative terms. With masses a_i, b_i (each summing
to one) and u_i = log(a_i / b_i),

    KL(a||b) = sum_i a_i u_i = sum_i (a_i u_i - a_i + b_i) = sum_i b_i φ(a_i / b_i),

where φ(t) = t log t - t + 1 >= 0. φ is h(v) = e^v - 1 - v in disguise, φ(t) = t·h(-log t),
so for |u_i| < 1/4 a term is a_i·h(-u_i) by :func:`klest._special.expm1_minus` (no
cancellation: near-identical distributions give an accurate KL instead of what is left of
sum a_i u_i); beyond, a_i u_i - a_i + b_i itself cancels little and, unlike h(-u_i), never
exponentiates the rounded u_i (whose error e^|u| would multiply). A term is ``b`` where
a_i = 0 (0·log 0 = 0) and ``inf`` where a_i > 0 = b_i. For Poisson(λ_a)||Poisson(λ_b) the
same identity gives λ_b φ(λ_a / λ_b).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from klest._special import as_float_or_array, expm1_minus, log_ratio
from klest.distributions.bernoulli import Bernoulli
from klest.distributions.categorical import Categorical
from klest.distributions.poisson import Poisson
from klest.divergence.registry import register_kl

__all__ = [
    "kl_bernoulli_bernoulli",
    "kl_bernoulli_categorical",
    "kl_bernoulli_poisson",
    "kl_categorical_bernoulli",
    "kl_categorical_categorical",
    "kl_categorical_poisson",
    "kl_poisson_poisson",
]


#: |log(a_i / b_i)| below which a term is a_i·h(-u_i), above which a_i u_i - a_i + b_i
_NEAR_U = 0.25


def _terms(
    a: np.ndarray, b: np.ndarray, u: np.ndarray, a_zero: np.ndarray, b_zero: np.ndarray
) -> np.ndarray:
    """Elementwise a·u - a + b = b·φ(a/b) = a·h(-u) >= 0, with the conventions for zero masses."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        a, b, u = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, u)))
        out = np.atleast_1d(a * u - a + b)
        near = np.flatnonzero(np.abs(u) < _NEAR_U)  # the series only where it is needed
        out.flat[near] = a.flat[near] * expm1_minus(-u.flat[near])
    return np.where(a_zero, b, np.where(b_zero, np.inf, out.reshape(np.shape(u))))


def _from_masses(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return _terms(a, b, log_ratio(a, b), a == 0.0, b == 0.0)


def _from_logs(log_a: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        u = log_a - log_b
    return _terms(np.exp(log_a), np.exp(log_b), u, log_a == -np.inf, log_b == -np.inf)


def _kl_logs(log_a: np.ndarray, log_b: np.ndarray) -> float | np.ndarray:
    """KL between batches of log-mass vectors on {0..K-1} (the shorter one padded with -inf)."""
    k = max(log_a.shape[-1], log_b.shape[-1])

    def pad(x: np.ndarray) -> np.ndarray:
        if x.shape[-1] == k:
            return x
        width = [(0, 0)] * (x.ndim - 1) + [(0, k - x.shape[-1])]
        return np.pad(x, width, constant_values=-np.inf)

    return as_float_or_array(np.sum(_from_logs(pad(log_a), pad(log_b)), axis=-1))


def _bernoulli_logs(d: Bernoulli) -> np.ndarray:
    return np.array(d._log_masses())


def _kl_logs_poisson(log_a: np.ndarray, rate: float) -> float | np.ndarray:
    """KL(a||Poisson(rate)) for log-masses a on {0..K-1}; the Poisson mass at k >= K, where
    a has none, adds P(X >= K) = gammainc(K, rate) (one term b·φ(0) = b per point)."""
    k = log_a.shape[-1]
    support = np.arange(k, dtype=np.float64)
    log_b = special.xlogy(support, rate) - rate - special.gammaln(support + 1.0)
    inside = np.sum(_from_logs(log_a, log_b), axis=-1)
    return as_float_or_array(inside + special.gammainc(k, rate))


@register_kl(Bernoulli, Bernoulli)
def kl_bernoulli_bernoulli(a: Bernoulli, b: Bernoulli) -> float:
    """KL(Bern(p)||Bern(q)) = p log(p/q) + (1-p) log((1-p)/(1-q)); exact at p or q in {0, 1}.

    >>> kl_bernoulli_bernoulli(Bernoulli(probs=0.5), Bernoulli(probs=0.5))
    0.0
    >>> round(kl_bernoulli_bernoulli(Bernoulli(probs=0.0), Bernoulli(probs=0.5)), 12)
    0.693147180560
    >>> kl_bernoulli_bernoulli(Bernoulli(probs=0.5), Bernoulli(probs=1.0))
    inf
    """
    pa, pb = a.probs, b.probs
    return float(np.sum(_from_masses([1.0 - pa, pa], [1.0 - pb, pb])))


@register_kl(Categorical, Categorical)
def kl_categorical_categorical(a: Categorical, b: Categorical) -> float | np.ndarray:
    """sum_k a_k (log a_k - log b_k) from the log-softmaxes, over the broadcast batch shape.

    ``inf`` in a batch entry where a has mass on a category b gives none; a float when
    neither distribution is batched, else an ndarray of the broadcast batch shape.

    >>> import numpy as np
    >>> a = Categorical(probs=[0.5, 0.5])
    >>> b = Categorical(probs=[[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    >>> kl_categorical_categorical(a, b).round(6)
    array([0.      , 0.143841,      inf])
    """
    return _kl_logs(a.log_probs, b.log_probs)


@register_kl(Poisson, Poisson)
def kl_poisson_poisson(a: Poisson, b: Poisson) -> float:
    """KL(Pois(λa)||Pois(λb)) = λa log(λa/λb) - λa + λb, as λb·φ(λa/λb) (no cancellation).

    >>> round(kl_poisson_poisson(Poisson(rate=2.0), Poisson(rate=1.0)), 12)
    0.386294361120
    """
    return float(_from_masses(a.rate, b.rate))


@register_kl(Bernoulli, Categorical)
def kl_bernoulli_categorical(a: Bernoulli, b: Categorical) -> float | np.ndarray:
    """KL(Bern(p)||Cat) with the Bernoulli as the categorical [1-p, p] (b batched or not).

    >>> round(kl_bernoulli_categorical(Bernoulli(probs=0.5), Categorical(probs=[0.25, 0.75])), 6)
    0.143841
    """
    return _kl_logs(_bernoulli_logs(a), b.log_probs)


@register_kl(Categorical, Bernoulli)
def kl_categorical_bernoulli(a: Categorical, b: Bernoulli) -> float | np.ndarray:
    """KL(Cat||Bern(p)) for K <= 2 (a larger K puts mass outside {0, 1}: inf by support).

    >>> round(kl_categorical_bernoulli(Categorical(probs=[0.25, 0.75]), Bernoulli(probs=0.5)), 6)
    0.130812
    """
    return _kl_logs(a.log_probs, _bernoulli_logs(b))


@register_kl(Bernoulli, Poisson)
def kl_bernoulli_poisson(a: Bernoulli, b: Poisson) -> float:
    """KL(Bern(p)||Pois(λ)) = -H(p) + λ - p log λ, summed as non-negative terms.

    >>> round(kl_bernoulli_poisson(Bernoulli(probs=0.0), Poisson(rate=1.0)), 12)
    1.0
    """
    return float(_kl_logs_poisson(_bernoulli_logs(a), b.rate))


@register_kl(Categorical, Poisson)
def kl_categorical_poisson(a: Categorical, b: Poisson) -> float | np.ndarray:
    """KL(Cat||Pois(λ)): the categorical's K outcomes are the counts 0..K-1.

    >>> round(kl_categorical_poisson(Categorical(probs=[1.0]), Poisson(rate=1.0)), 12)
    1.0
    """
    return _kl_logs_poisson(a.log_probs, b.rate)
