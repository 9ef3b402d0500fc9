"""Categorical(probs=... | logits=...): K outcomes 0..K-1, with optional batch dimensions."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np
from scipy import special

from klest import native as _native
from klest._special import as_float_or_array
from klest.distributions import truncation as _truncation
from klest.distributions.base import (
    REAL,
    UNIT_INTERVAL,
    Distribution,
    Param,
    Support,
    _as_float_array,
)
from klest.errors import ParameterError

_SUM_TOL = 1e-6


def _index(idx: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in idx)


def _frozen(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` that nothing can write: a read-only view of a ``bytes`` object
    (NumPy refuses to make it writable again), so that a check of its values stays true
    (``klest.native.checks.cannot_change``: the inverse CDF's tables are checked once)."""
    out = np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)
    if not out.flags.aligned:  # bytes' data is 16-byte aligned in CPython; be safe anyway
        out = array.copy()
        out.flags.writeable = False
    return out


def _restore(
    name: str,
    given: np.ndarray,
    log_probs: np.ndarray,
    cdf: np.ndarray | None,
    guide: np.ndarray | None,
) -> Categorical:
    """Unpickle a Categorical from the arrays it was built from and derived (exact bits),
    without the O(K) checks and log-softmax again; each process checks the inverse CDF's
    tables once, on their first use (``klest.native.checks``)."""
    out = object.__new__(Categorical)
    object.__setattr__(out, "_params", {name: _frozen(np.asarray(given, dtype=np.float64))})
    object.__setattr__(out, "_log_probs", _frozen(np.asarray(log_probs, dtype=np.float64)))
    if cdf is not None and guide is not None:
        out.__dict__["_cdf"] = _frozen(np.asarray(cdf, dtype=np.float64))
        out.__dict__["_guide"] = _frozen(np.asarray(guide, dtype=np.int32))
    return out


class Categorical(Distribution):
    """The categorical distribution over {0, ..., K-1}, batched over leading dimensions.

    Give exactly one of ``probs`` (non-negative, each row summing to 1 within 1e-6; rows are
    renormalised) or ``logits`` (finite or ``-inf``; the log-softmax is taken along the last
    axis). An array of shape ``(..., K)`` is a batch of distributions with
    ``batch_shape = shape[:-1]``; ``log_prob(x)`` broadcasts ``x`` against the batch shape and
    ``sample(rng, size)`` returns int64 indices of shape ``size + batch_shape``, drawn by
    inverse CDF (one uniform per draw; the first category whose cumulative probability
    exceeds it, found with a guide table in compiled code: ``searchsorted``'s answer).
    ``to_dict`` emits whichever parameterisation was given.

    >>> import numpy as np
    >>> q = Categorical(probs=[0.2, 0.3, 0.5])
    >>> q.log_prob([0, 2, 3]).round(6)
    array([-1.609438, -0.693147,      -inf])
    >>> float(q.mean()), float(q.variance())
    (1.3, 0.61)
    >>> b = Categorical(logits=[[0.0, 0.0], [0.0, -np.inf]])
    >>> b.batch_shape, b.probs.tolist()
    ((2,), [[0.5, 0.5], [1.0, 0.0]])
    >>> b.sample(np.random.default_rng(0), 3).shape
    (3, 2)
    """

    family = "categorical"
    discrete = True
    params = (
        Param("probs", UNIT_INTERVAL, (0.02, 1.0), vector=True, doc="probabilities (rows sum 1)"),
        Param("logits", REAL, (-4.0, 4.0), vector=True, doc="unnormalised log-probabilities"),
    )

    def __init__(self, *, probs: Any = None, logits: Any = None) -> None:
        if (probs is None) == (logits is None):
            raise ValueError(
                "Categorical: give exactly one of the parameters 'probs' or 'logits', got "
                + ("neither" if probs is None else "both")
            )
        name = "probs" if probs is not None else "logits"
        arr = _as_float_array(name, "Categorical", probs if probs is not None else logits)
        if arr.ndim == 0 or arr.size == 0:
            raise ParameterError(
                "Categorical",
                name,
                f"must be a non-empty array of shape (..., K), got shape {arr.shape}",
            )
        arr = _frozen(arr)
        log_probs = self._check_probs(arr) if name == "probs" else self._check_logits(arr)
        object.__setattr__(self, "_params", {name: arr})
        object.__setattr__(self, "_log_probs", _frozen(log_probs))

    @staticmethod
    def _check_probs(probs: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(probs) | (probs < 0.0)
        if np.any(bad):
            where = _index(np.argwhere(bad)[0])
            raise ParameterError(
                "Categorical",
                "probs",
                f"must be non-negative and finite, got {probs[where]!r} at index {where}",
            )
        sums = probs.sum(axis=-1)
        off = np.abs(sums - 1.0) > _SUM_TOL
        if np.any(off):
            where = _index(np.argwhere(off)[0]) if sums.ndim else ()
            raise ParameterError(
                "Categorical",
                "probs",
                f"must sum to 1 along the last axis (within {_SUM_TOL:g}), got sum "
                f"{float(sums[where])!r} at batch index {where}",
            )
        with np.errstate(divide="ignore"):
            log_probs = np.log(probs)
        if np.any(sums != 1.0):
            log_probs -= np.log(sums)[..., None]
        return log_probs

    @staticmethod
    def _check_logits(logits: np.ndarray) -> np.ndarray:
        bad = np.isnan(logits) | (logits == math.inf)
        if np.any(bad):
            where = _index(np.argwhere(bad)[0])
            raise ParameterError(
                "Categorical",
                "logits",
                f"must be finite or -inf, got {logits[where]!r} at index {where}",
            )
        empty = np.all(logits == -math.inf, axis=-1)
        if np.any(empty):
            where = _index(np.argwhere(empty)[0]) if empty.ndim else ()
            raise ParameterError(
                "Categorical",
                "logits",
                f"must have a finite entry in every row, got all -inf at batch index {where}",
            )
        return special.log_softmax(logits, axis=-1)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Categorical is immutable: cannot set {name!r}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # the arrays themselves (and the inverse CDF's tables, when built), not to_dict()'s
        # lists: a process pool pickles the run plan for every task
        ((name, given),) = self._params.items()
        tables = self.__dict__.get("_cdf"), self.__dict__.get("_guide")
        return _restore, (name, given, self._log_probs, *tables)

    @classmethod
    def constructor_keys(cls) -> set[str]:
        """Config keys ``from_dict`` accepts: either parameterisation."""
        return {"probs", "logits"}

    # ---- parameters ------------------------------------------------------------------

    @property
    def log_probs(self) -> np.ndarray:
        """Normalised log-probabilities, shape ``batch_shape + (K,)`` (-inf for zero mass)."""
        return self._log_probs

    @cached_property
    def probs(self) -> np.ndarray:
        """Normalised probabilities, shape ``batch_shape + (K,)``."""
        given = self._params.get("probs")
        if given is not None and np.all(given.sum(axis=-1) == 1.0):
            return given
        return _frozen(np.exp(self._log_probs))

    @property
    def logits(self) -> np.ndarray:
        """The logits as given, or log(probs) when probs were given."""
        given = self._params.get("logits")
        return given if given is not None else self._log_probs

    @property
    def num_categories(self) -> int:
        """K, the number of outcomes."""
        return self._log_probs.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._log_probs.shape[:-1]

    @property
    def support(self) -> Support:
        return Support(0.0, float(self.num_categories - 1), discrete=True)

    def truncated(
        self,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        temperature: float = 1.0,
        *,
        convention: str = _truncation.DEFAULT_CONVENTION,
        ties: str = "keep",
        min_tokens_to_keep: int = 1,
    ) -> Categorical:
        """The distribution an inference engine samples from with these settings: each row
        tempered (softmax(log p / T)), truncated by min-p / top-k / top-p in the engine's
        order, renormalised; zeros outside the kept set, same batch shape.
        ``convention="vllm"`` (default) or ``"hf"`` (Hugging Face ``generate``), ``ties``
        and ``min_tokens_to_keep`` (HF only) as in :mod:`klest.distributions.truncation`,
        which documents each rule, its boundary and where the engines differ.

        >>> q = Categorical(probs=[0.5, 0.25, 0.125, 0.125])
        >>> q.truncated(top_p=0.75).probs.tolist()  # the mass before the 3rd entry is 0.75
        [0.6666666666666666, 0.3333333333333333, 0.0, 0.0]
        >>> q.truncated(top_k=3).probs.tolist()  # the tie at the 3rd value is kept
        [0.5, 0.25, 0.125, 0.125]
        >>> q.truncated(min_p=0.5, top_p=0.6).probs.tolist()  # vLLM: min-p first
        [1.0, 0.0, 0.0, 0.0]
        >>> q.truncated(min_p=0.5, top_p=0.6, convention="hf").probs.round(4).tolist()
        [0.6667, 0.3333, 0.0, 0.0]
        """
        out = _truncation.truncate(
            self._log_probs, top_k=top_k, top_p=top_p, min_p=min_p, temperature=temperature,
            convention=convention, ties=ties, min_tokens_to_keep=min_tokens_to_keep,
            probs=self.probs,
        )  # fmt: skip
        return Categorical(logits=out.log_probs)

    # ---- log mass, sampling, moments -------------------------------------------------

    def log_prob(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        k = self.num_categories
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(x) & (x >= 0.0) & (x <= k - 1) & (x == np.floor(x))
        idx = np.where(valid, x, 0.0).astype(np.int64)
        batch = self.batch_shape
        if not batch:
            out = self._log_probs[idx]
        else:
            try:
                shape = np.broadcast_shapes(idx.shape, batch)
            except ValueError:
                raise ValueError(
                    f"Categorical.log_prob: x of shape {idx.shape} does not broadcast against "
                    f"batch_shape {batch}"
                ) from None
            rows = np.arange(math.prod(batch), dtype=np.int64).reshape(batch) * k
            out = self._log_probs.reshape(-1)[rows + idx]
            valid = np.broadcast_to(valid, shape)
        return np.where(valid, out, -np.inf)

    @cached_property
    def _cdf(self) -> np.ndarray:
        cdf = np.cumsum(self.probs, axis=-1)
        cdf /= cdf[..., -1:]
        return _frozen(cdf)

    @cached_property
    def _guide(self) -> np.ndarray:
        """Guide table of the inverse CDF (unbatched): guide[b] = first i with
        cdf[i] > b / g for b < g, guide[g] = K - 1; g = the power of two >= K (about one
        category per bucket: at K = 131,072 the draws are 1.6x as fast as with K / 4, the
        guide 4 bytes per category beside the CDF's 8)."""
        k = self.num_categories
        g = 1 << max(0, (k - 1).bit_length())
        guide = np.searchsorted(self._cdf, np.arange(g) / g, side="right")
        return _frozen(np.append(guide, k - 1).astype(np.int32))

    def log_ratio_table(self, p: Categorical) -> np.ndarray:
        """log p[i] - log q[i] for every category i of this q (unbatched, p with as many
        categories), as ``p.log_prob(i) - q.log_prob(i)`` gives it (NaN where both are
        -inf); read-only. The table of the last p asked for is kept (the engine asks once per
        block): a Categorical's log-probabilities cannot change, so it stays right.

        >>> q, p = Categorical(probs=[0.5, 0.5]), Categorical(probs=[0.25, 0.75])
        >>> q.log_ratio_table(p).round(6).tolist()
        [-0.693147, 0.405465]
        """
        if type(p) is not Categorical or self.batch_shape or p.batch_shape:
            raise ValueError("log_ratio_table needs two unbatched Categoricals")
        if p.num_categories != self.num_categories:
            raise ValueError(
                f"log_ratio_table: p has {p.num_categories} categories, q {self.num_categories}"
            )
        kept = self.__dict__.get("_ratio_table")
        if kept is not None and kept[0] is p._log_probs:
            return kept[1]
        with np.errstate(invalid="ignore"):
            table = _frozen(p._log_probs - self._log_probs)
        self.__dict__["_ratio_table"] = (p._log_probs, table)
        return table

    def log_ratio_pairs(self, p: Categorical) -> np.ndarray:
        """(K, 2): :meth:`log_ratio_table` and its expm1 (klest's, ``klest.native.expm1``)
        for every category: the engine's compiled Categorical pass looks both up by the
        drawn category instead of taking expm1 draw by draw (the same bits). Read-only; the
        pairs of the last p asked for are kept.

        >>> q, p = Categorical(probs=[0.5, 0.5]), Categorical(probs=[0.25, 0.75])
        >>> q.log_ratio_pairs(p).round(6).tolist()
        [[-0.693147, -0.5], [0.405465, 0.5]]
        """
        table = self.log_ratio_table(p)
        kept = self.__dict__.get("_ratio_pairs")
        if kept is not None and kept[0] is table:
            return kept[1]
        pairs = np.empty((table.size, 2))
        pairs[:, 0] = table
        pairs[:, 1] = _native.expm1(np.ascontiguousarray(table), np.empty(table.size))
        pairs = _frozen(pairs)
        self.__dict__["_ratio_pairs"] = (table, pairs)
        return pairs

    def inverse_cdf(self, u: Any, table: Any = None) -> np.ndarray:
        """The category of each uniform u in [0, 1): the first i with cdf[i] > u (the
        sampler's inverse CDF; unbatched), an int64 array of u's shape. With ``table``
        (length K), ``table`` at those categories instead (float64), in the same compiled
        pass. Any real dtype and layout of u and table is converted to float64; a u outside
        [0, 1) (NaN included) is a ValueError naming its index.

        >>> q = Categorical(probs=[0.25, 0.25, 0.5])
        >>> q.inverse_cdf([0.0, 0.25, 0.5, 0.99]).tolist()
        [0, 1, 2, 2]
        >>> q.inverse_cdf([0.3, 1.0])
        Traceback (most recent call last):
            ...
        ValueError: u must lie in [0, 1), got 1.0 at index 1
        """
        if self.batch_shape:
            raise ValueError("inverse_cdf needs an unbatched Categorical")
        u = _native.as_real_array("u", u)
        if table is not None:
            table = _native.as_real_array("table", table)
            if table.shape != (self.num_categories,):
                raise ValueError(
                    f"table must have {self.num_categories} entries, got shape {table.shape}"
                )
        return _native.inverse_cdf(self._cdf, self._guide, u, table)

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        batch = self.batch_shape
        u = rng.random(size + batch)
        last = self.num_categories - 1
        if not batch:  # searchsorted(cdf, u, side="right"), by guide table (klest/native/csrc)
            return self.inverse_cdf(u).reshape(size)
        cdf = self._cdf.reshape(-1, last + 1)
        flat_u = u.reshape(-1, cdf.shape[0])
        out = np.empty(flat_u.shape, dtype=np.int64)
        for row in range(cdf.shape[0]):  # one vectorised search per batch row
            out[:, row] = np.searchsorted(cdf[row], flat_u[:, row], side="right")
        return np.minimum(out, last).reshape(size + batch)

    def mean(self) -> float | np.ndarray:
        """E[X] of the index, shape ``batch_shape`` (a float when there is no batch)."""
        out = self.probs @ np.arange(self.num_categories, dtype=np.float64)
        return as_float_or_array(out)

    def variance(self) -> float | np.ndarray:
        """Var[X] of the index, computed as E[(X - E X)²]."""
        centred = (
            np.arange(self.num_categories, dtype=np.float64) - np.asarray(self.mean())[..., None]
        )
        out = np.sum(self.probs * centred * centred, axis=-1)
        return as_float_or_array(out)
