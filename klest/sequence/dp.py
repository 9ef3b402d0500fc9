"""Exact moments of sequence functionals by a forward pass over contexts.

Every estimator of :mod:`klest.sequence.compare` is the last entry of a small vector y that
starts at y_0 and is updated at each token by a matrix depending only on (context, token):
y_{t+1} = M(c_t, x_t) y_t. The expectations E[y_T] and E[y_T y_T^T] under a sampling model
with transition kernel K(x|c) then follow from the linear recursions, carried per context:

    m_{t+1}(c') = Σ_{(c,x) -> c'} K(x|c) M(c,x) m_t(c),
    Y_{t+1}(c') = Σ_{(c,x) -> c'} K(x|c) M(c,x) Y_t(c) M(c,x)^T,

in O(T S V d^3) for S contexts and a d-vector (d = 2 for sums and importance weights).
With an ``eos`` token, the responses that emit it stop there: their y leaves the recursion
and is added to the result.
"""

from __future__ import annotations

import numpy as np

from klest.sequence.model import TabularAR

__all__ = ["linear_moments"]


def linear_moments(
    model: TabularAR,
    kernel: np.ndarray,
    matrices: np.ndarray,
    y0: np.ndarray,
    *,
    second: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(E[y_T], E[y_T y_T^T]) for y_{t+1} = M(c_t, x_t) y_t, x_t ~ kernel(·|c_t).

    ``kernel`` has shape (S, V) (each row a distribution; it is ``exp(model.log_probs)`` for
    on-policy sampling), ``matrices`` shape (S, V, d, d), ``y0`` shape (d,). The model
    supplies the context structure (initial context, next context) and the length T. With
    ``second=False`` only the mean is propagated.

    >>> import numpy as np
    >>> m = TabularAR.random(vocab=2, order=1, length=3, rng=np.random.default_rng(0))
    >>> K = np.exp(m.log_probs)
    >>> counts = np.zeros((m.n_states, 2, 2, 2)); counts[..., 0, 0] = 1; counts[..., 1, 1] = 1
    >>> counts[:, 0, 1, 0] = 1.0        # y = (1, number of zeros emitted so far)
    >>> mean, _ = linear_moments(m, K, counts, np.array([1.0, 0.0]), second=False)
    >>> float(mean[0])
    1.0
    """
    states = kernel.shape[0]
    d = len(y0)
    nxt = model.next_state.ravel()
    m = np.zeros((states, d))
    m[model.initial_state] = y0
    Y = None
    if second:
        Y = np.zeros((states, d, d))
        Y[model.initial_state] = np.outer(y0, y0)
    eos = model.eos
    done_m, done_y = np.zeros(d), np.zeros((d, d))
    for _ in range(model.length):
        with np.errstate(over="ignore", invalid="ignore"):
            contrib = kernel[..., None] * np.einsum("svij,sj->svi", matrices, m)
        if eos is not None:
            done_m += contrib[:, eos].sum(axis=0)
            contrib[:, eos] = 0.0
        new_m = np.zeros((states, d))
        np.add.at(new_m, nxt, contrib.reshape(-1, d))
        if second:
            with np.errstate(over="ignore", invalid="ignore"):
                my = np.einsum("svij,sjk->svik", matrices, Y)
                c2 = kernel[..., None, None] * np.einsum("svik,svlk->svil", my, matrices)
            if eos is not None:
                done_y += c2[:, eos].sum(axis=0)
                c2[:, eos] = 0.0
            new_y = np.zeros((states, d, d))
            np.add.at(new_y, nxt, c2.reshape(-1, d, d))
            Y = new_y
        m = new_m
    return m.sum(axis=0) + done_m, (Y.sum(axis=0) + done_y if second else None)
