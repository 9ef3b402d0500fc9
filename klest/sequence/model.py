"""A tabular autoregressive model and the exact sequence-level KL by dynamic programming.

A model of order m over a vocabulary of V tokens generates T tokens; token t is drawn from
softmax(logits[c_t]) where the context c_t is the previous m tokens, padded on the left with
a beginning-of-sequence symbol BOS = V. ``logits`` has shape (V+1,)*m + (V,) (rows for
contexts that cannot occur, such as (x, BOS), are never used). Contexts are numbered
c = sum_i c_i (V+1)^(m-1-i); the next context after token x is (c_2, ..., c_m, x).

With ``eos`` set, that token ends the response: a response is the tokens up to and
including the first ``eos`` (at most ``length`` of them), and sampled arrays carry -1 after it
(padding, log-probability 0). Its length T_x is then random, as in a language model.

Because the context is a Markov state, expectations over the V^T sequences reduce to a
forward pass over the (V+1)^m contexts: with d_t(c) = P(c_t = c, the response not yet
ended) under π,

    KL(π‖π_ref) over sequences = Σ_t Σ_c d_t(c) KL(π(·|c) ‖ π_ref(·|c)),

the chain rule of KL, in O(T (V+1)^m V) operations.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import log_softmax

from klest.errors import check_integer

__all__ = ["TabularAR", "conditional_kl", "count_responses", "responses", "sequence_kl"]


@dataclass(frozen=True, eq=False)
class TabularAR:
    """Autoregressive model with conditional logit tables (see the module notes).

    >>> import numpy as np
    >>> m = TabularAR.random(vocab=3, order=1, length=4, rng=np.random.default_rng(0))
    >>> m.sample(np.random.default_rng(1), 2).shape
    (2, 4)
    >>> m.n_states, m.log_probs.shape
    (4, (4, 3))
    """

    logits: np.ndarray
    length: int
    eos: int | None = None
    log_probs: np.ndarray = field(init=False, repr=False)
    _next: np.ndarray = field(init=False, repr=False)

    def __init__(self, *, logits: Any, length: int, eos: int | None = None) -> None:
        table = np.array(logits, dtype=np.float64)
        if table.ndim < 2:
            raise ValueError(f"logits must have shape (V+1,)*order + (V,); got {table.shape}")
        vocab = table.shape[-1]
        if vocab < 2 or any(n != vocab + 1 for n in table.shape[:-1]):
            raise ValueError(
                f"logits must have shape (V+1,)*order + (V,) with V >= 2; got {table.shape}"
            )
        if not np.all(np.isfinite(table)):
            raise ValueError("logits must be finite")
        try:
            check_integer("length", length, minimum=1)
        except ValueError:  # the wording tests pin
            raise ValueError(f"length must be a positive integer; got {length!r}") from None
        if eos is not None:
            if isinstance(eos, bool) or not isinstance(eos, int | np.integer):
                raise ValueError(f"eos must be a token index or None; got {eos!r}")
            if not 0 <= eos < vocab:
                raise ValueError(f"eos must lie in [0, {vocab}); got {eos}")
            eos = int(eos)
        table.setflags(write=False)
        object.__setattr__(self, "logits", table)
        object.__setattr__(self, "length", int(length))
        object.__setattr__(self, "eos", eos)
        flat = log_softmax(table.reshape(-1, vocab), axis=-1)
        flat.setflags(write=False)
        object.__setattr__(self, "log_probs", flat)
        states = np.arange(flat.shape[0])
        shifted = (states % ((vocab + 1) ** (self.order - 1))) * (vocab + 1)
        nxt = shifted[:, None] + np.arange(vocab)[None, :]
        nxt.setflags(write=False)
        object.__setattr__(self, "_next", nxt)

    @classmethod
    def random(
        cls,
        *,
        vocab: int,
        order: int,
        length: int,
        rng: np.random.Generator,
        scale: float = 1.0,
        eos: int | None = None,
    ) -> TabularAR:
        """Logits drawn i.i.d. N(0, scale²) from ``rng``.

        >>> import numpy as np
        >>> TabularAR.random(vocab=4, order=2, length=3, rng=np.random.default_rng(0)).logits.shape
        (5, 5, 4)
        """
        check_integer("vocab", vocab, minimum=2)
        check_integer("order", order, minimum=1)
        if not (scale >= 0 and np.isfinite(scale)):
            raise ValueError(f"scale must be finite and >= 0; got {scale!r}")
        shape = (vocab + 1,) * order + (vocab,)
        return cls(logits=scale * rng.standard_normal(shape), length=length, eos=eos)

    def perturbed(self, rng: np.random.Generator, scale: float) -> TabularAR:
        """The same model with N(0, scale²) noise added to every logit (a nearby policy).

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=3, order=1, length=2, rng=np.random.default_rng(0))
        >>> bool(np.allclose(m.perturbed(np.random.default_rng(1), 0.0).logits, m.logits))
        True
        """
        if not (scale >= 0 and np.isfinite(scale)):
            raise ValueError(f"scale must be finite and >= 0; got {scale!r}")
        noise = scale * rng.standard_normal(self.logits.shape)
        return TabularAR(logits=self.logits + noise, length=self.length, eos=self.eos)

    def with_length(self, length: int) -> TabularAR:
        """The same conditional tables generating ``length`` tokens.

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=2, order=1, length=3, rng=np.random.default_rng(0))
        >>> m.with_length(9)
        TabularAR(vocab=2, order=1, length=9)
        """
        return TabularAR(logits=self.logits, length=length, eos=self.eos)

    @property
    def vocab(self) -> int:
        return self.logits.shape[-1]

    @property
    def order(self) -> int:
        return self.logits.ndim - 1

    @property
    def n_states(self) -> int:
        """Number of contexts, (V+1)^order (including BOS-padded ones)."""
        return self.log_probs.shape[0]

    @property
    def initial_state(self) -> int:
        """The all-BOS context."""
        return self.n_states - 1

    @property
    def next_state(self) -> np.ndarray:
        """next_state[c, x]: the context after emitting x in context c, shape (S, V)."""
        return self._next

    def __repr__(self) -> str:
        eos = "" if self.eos is None else f", eos={self.eos}"
        return f"TabularAR(vocab={self.vocab}, order={self.order}, length={self.length}{eos})"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n sequences of ``length`` tokens, shape (n, T), by inverse-CDF sampling.

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=3, order=2, length=5, rng=np.random.default_rng(0))
        >>> int(m.sample(np.random.default_rng(0), 4).max()) < 3
        True
        """
        n = check_integer("n", n, minimum=1)
        cdf = np.cumsum(np.exp(self.log_probs), axis=-1)
        cdf[:, -1] = 1.0
        tokens = np.full((n, self.length), -1, dtype=np.int64)
        state = np.full(n, self.initial_state)
        alive = np.ones(n, dtype=bool)
        for t in range(self.length):
            u = rng.random(n)  # one draw per response and position, ended or not
            x = (u[:, None] > cdf[state]).sum(axis=1)
            tokens[alive, t] = x[alive]
            state = np.where(alive, self._next[state, x], state)
            if self.eos is not None:
                alive &= x != self.eos
        return tokens

    def lengths(self, tokens: Any) -> np.ndarray:
        """T_x: the number of tokens of each response, its eos included, shape (n,).

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=3, order=1, length=4, rng=np.random.default_rng(0), eos=2)
        >>> m.lengths(np.array([[0, 2, -1, -1], [1, 1, 0, 0]]))
        array([2, 4])
        """
        return (self._check_tokens(tokens) >= 0).sum(axis=1)

    def contexts(self, tokens: Any) -> np.ndarray:
        """The context index c_t before each token, shape (n, T).

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=2, order=1, length=3, rng=np.random.default_rng(0))
        >>> m.contexts(np.array([[1, 0, 1]]))  # BOS = 2, then the previous token
        array([[2, 1, 0]])
        """
        tok = self._check_tokens(tokens)
        out = np.empty_like(tok)
        state = np.full(tok.shape[0], self.initial_state)
        for t in range(tok.shape[1]):
            out[:, t] = state
            state = np.where(tok[:, t] >= 0, self._next[state, np.maximum(tok[:, t], 0)], state)
        return out

    def token_log_probs(self, tokens: Any) -> np.ndarray:
        """log π(x_t | c_t) for each token, shape (n, T) (0 at padding after an eos).

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=2, order=1, length=3, rng=np.random.default_rng(0))
        >>> m.token_log_probs(np.zeros((1, 3), dtype=int)).shape
        (1, 3)
        """
        tok = self._check_tokens(tokens)
        return np.where(tok >= 0, self.log_probs[self.contexts(tok), np.maximum(tok, 0)], 0.0)

    def _check_tokens(self, tokens: Any) -> np.ndarray:
        tok = np.asarray(tokens)
        shape_ok = tok.ndim == 2 and tok.shape[1] == self.length
        if not shape_ok or not np.issubdtype(tok.dtype, np.integer):
            raise ValueError(
                f"tokens must be integers of shape (n, {self.length}); got {tok.shape}"
            )
        if tok.size and (tok.min() < -1 or tok.max() >= self.vocab):
            raise ValueError(f"tokens must lie in [0, {self.vocab}); got {tok.min()}..{tok.max()}")
        pad = tok < 0
        if pad.any():
            if self.eos is None:
                raise ValueError(f"tokens must lie in [0, {self.vocab}); got {tok.min()}")
            ended = np.cumsum(tok == self.eos, axis=1) - (tok == self.eos) > 0
            if not np.array_equal(pad, ended):
                raise ValueError("-1 (padding) must follow an eos, and only an eos")
        return tok

    def state_distributions(self) -> np.ndarray:
        """d_t(c) = P(c_t = c, not yet ended) under this model, shape (T, S), by the forward
        recursion (rows sum to P(T_x > t): 1 without an eos).

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=2, order=2, length=4, rng=np.random.default_rng(0))
        >>> d = m.state_distributions()
        >>> d.shape, bool(np.allclose(d.sum(axis=1), 1.0))
        ((4, 9), True)
        """
        probs = self.continuing_probs()
        d = np.zeros(self.n_states)
        d[self.initial_state] = 1.0
        out = np.empty((self.length, self.n_states))
        for t in range(self.length):
            out[t] = d
            d = np.bincount(
                self._next.ravel(), weights=(d[:, None] * probs).ravel(), minlength=self.n_states
            )
        return out

    def continuing_probs(self) -> np.ndarray:
        """π(x|c) with the eos column set to 0 (the transitions that continue the response).

        >>> import numpy as np
        >>> m = TabularAR.random(vocab=2, order=1, length=2, rng=np.random.default_rng(0), eos=1)
        >>> bool((m.continuing_probs()[:, 1] == 0).all())
        True
        """
        probs = np.exp(self.log_probs)
        if self.eos is not None:
            probs[:, self.eos] = 0.0
        return probs


def check_pair(policy: TabularAR, other: TabularAR, name: str) -> None:
    """Raise ValueError unless ``other`` has the policy's vocabulary, order and length."""
    if not isinstance(other, TabularAR):
        raise ValueError(f"{name} must be a TabularAR; got {other!r}")
    shape = (other.vocab, other.order, other.length, other.eos)
    same = shape == (policy.vocab, policy.order, policy.length, policy.eos)
    if not same:
        raise ValueError(f"{name} {other!r} does not match the policy {policy!r}")


def conditional_kl(policy: TabularAR, ref: TabularAR) -> np.ndarray:
    """KL(π(·|c) ‖ π_ref(·|c)) for every context c, shape (S,).

    >>> import numpy as np
    >>> m = TabularAR.random(vocab=3, order=1, length=2, rng=np.random.default_rng(0))
    >>> conditional_kl(m, m)
    array([0., 0., 0., 0.])
    """
    check_pair(policy, ref, "ref")
    lp, lr = policy.log_probs, ref.log_probs
    return np.sum(np.exp(lp) * (lp - lr), axis=-1)


def sequence_kl(policy: TabularAR, ref: TabularAR, *, per_position: bool = False) -> Any:
    """Exact KL(π‖π_ref) between the sequence distributions (float), by the forward DP.

    With ``per_position=True`` returns the T expected per-position conditional KLs instead
    (they sum to the sequence KL).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pi = TabularAR.random(vocab=3, order=2, length=6, rng=rng)
    >>> ref = pi.perturbed(rng, 0.5)
    >>> bool(np.isclose(sequence_kl(pi, ref), sequence_kl(pi, ref, per_position=True).sum()))
    True
    """
    per = policy.state_distributions() @ conditional_kl(policy, ref)
    return per if per_position else float(per.sum())


def responses(model: TabularAR) -> np.ndarray:
    """Every response, -1-padded after an eos, in sorted order, shape (N, length).

    >>> import numpy as np
    >>> m = TabularAR.random(vocab=2, order=1, length=2, rng=np.random.default_rng(0), eos=1)
    >>> responses(m).tolist()
    [[0, 0], [0, 1], [1, -1]]
    """
    return _responses(model.vocab, model.length, model.eos)


@functools.lru_cache(maxsize=64)
def _responses(vocab: int, length: int, eos: int | None) -> np.ndarray:
    every = itertools.product(range(vocab), repeat=length)
    if eos is None:
        out = np.array(list(every), dtype=np.int64)
    else:
        ends = set()
        for row in every:
            n = row.index(eos) + 1 if eos in row else length
            ends.add(row[:n] + (-1,) * (length - n))
        out = np.array(sorted(ends), dtype=np.int64)
    out.setflags(write=False)  # shared by every caller with these sizes
    return out


def count_responses(model: TabularAR) -> int:
    """How many responses the model has: V^T, or with an eos Σ_{n<T} (V−1)^{n−1} + V (V−1)^{T−1}.

    >>> import numpy as np
    >>> m = TabularAR.random(vocab=3, order=1, length=3, rng=np.random.default_rng(0), eos=2)
    >>> count_responses(m) == len(responses(m))
    True
    """
    V, T = model.vocab, model.length
    if model.eos is None:
        return V**T
    return sum((V - 1) ** (n - 1) for n in range(1, T)) + V * (V - 1) ** (T - 1)
