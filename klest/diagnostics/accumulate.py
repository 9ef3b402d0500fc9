"""Streaming accumulators for :func:`klest.diagnostics.diagnose`: bounded memory per token.

Each accumulator takes one chunk of tokens at a time and keeps only

- :class:`SequenceSums`: per-sequence sums of several per-token series and token counts (the
  only state that grows, with the number of *sequences*; a sequence may span chunks);
- :class:`TailBuffer`: the ``capacity`` largest values of a series and the count ``n`` (what a
  PSIS tail fit needs, see :mod:`klest.diagnostics.tails`);
- :class:`LogSumExp`: log Σ exp(x) and log Σ exp(2x) of a series, overflow-free (the
  effective sample size of weights exp(x));
- :class:`Reservoir`: a uniform sample without replacement of ``size`` tokens (bottom-k of
  one random key per token drawn in token order from one seeded stream, so the sample does
  not depend on how the tokens are chunked), with every series' value at those tokens.

>>> import numpy as np
>>> s = SequenceSums(2)
>>> s.add(np.array([5, 5, 7]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
>>> s.add(np.array([7]), np.array([[1.0, 1.0]]))
>>> ids, counts, sums = s.result()
>>> ids.tolist(), counts.tolist(), sums.tolist()
([5, 7], [2, 2], [[4.0, 6.0], [6.0, 7.0]])
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LogSumExp", "Reservoir", "SequenceSums", "TailBuffer"]


def _group(ids: np.ndarray, values: np.ndarray, counts: np.ndarray | None = None):
    """(unique ids, counts, column sums) of rows grouped by id (sums propagate inf/NaN)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    k = len(uniq)
    if counts is None:
        n = np.bincount(inverse, minlength=k).astype(np.int64)
    else:
        n = np.bincount(inverse, weights=counts, minlength=k).astype(np.int64)
    sums = np.empty((k, values.shape[1]))
    for j in range(values.shape[1]):
        sums[:, j] = np.bincount(inverse, weights=values[:, j], minlength=k)
    return uniq, n, sums


class SequenceSums:
    """Per-sequence token counts and sums of ``width`` series, merged across chunks.

    Each chunk is grouped at once; the groups are merged when the pending ones outgrow the
    merged table (amortised: O(sequences) memory, O(tokens + sequences log) time).
    """

    def __init__(self, width: int) -> None:
        self.width = int(width)
        self._ids = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)
        self._sums = np.empty((0, self.width))
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def add(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Add the tokens of one chunk: ``ids`` (n,), ``values`` (n, width)."""
        if len(ids) == 0:
            return
        values = np.asarray(values, dtype=np.float64).reshape(len(ids), self.width)
        group = _group(np.asarray(ids, dtype=np.int64), values)
        self._pending.append(group)
        self._pending_rows += len(group[0])
        if self._pending_rows > max(len(self._ids), 1 << 16):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self._ids, *(g[0] for g in self._pending)])
        counts = np.concatenate([self._counts, *(g[1] for g in self._pending)])
        sums = np.concatenate([self._sums, *(g[2] for g in self._pending)])
        self._ids, self._counts, self._sums = _group(ids, sums, counts.astype(np.float64))
        self._pending, self._pending_rows = [], 0

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sequence ids sorted, token counts, sums (S, width))."""
        self._merge()
        return self._ids, self._counts, self._sums


class TailBuffer:
    """The ``capacity`` largest finite-or-(-inf) values of a series, and counts.

    ``n`` counts every value added; ``nan`` and ``posinf`` count the NaN and +inf values,
    which are kept out of the buffer (the caller reports them: a tail fit cannot use them).
    ``complete`` is True while the buffer holds every value that is not NaN or +inf.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity = int(capacity)
        self.n = self.nan = self.posinf = 0
        self._values = np.empty(0)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        self.n += x.size
        nan = np.isnan(x)
        pos = x == math.inf
        self.nan += int(nan.sum())
        self.posinf += int(pos.sum())
        keep = ~(nan | pos)
        if len(self._values) >= self.capacity:
            keep &= x > self._values.min()
        cand = x[keep]
        if cand.size == 0:
            return
        merged = np.concatenate([self._values, cand]) if len(self._values) else cand.copy()
        if len(merged) > self.capacity:
            merged = np.partition(merged, len(merged) - self.capacity)[-self.capacity :]
        self._values = merged

    @property
    def complete(self) -> bool:
        return len(self._values) == self.n - self.nan - self.posinf

    def largest(self, m: int | None = None) -> np.ndarray:
        """The largest ``m`` kept values (all of them by default), sorted ascending."""
        v = np.sort(self._values)
        return v if m is None else v[max(len(v) - int(m), 0) :]


class LogSumExp:
    """log Σ exp(x) and log Σ exp(2x) over the finite values added, streaming."""

    def __init__(self) -> None:
        self.n = 0
        self.nonfinite = 0
        self._max = -math.inf
        self._s1 = 0.0  # Σ exp(x - max)
        self._s2 = 0.0  # Σ exp(2 (x - max))

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        self.n += x.size
        ok = np.isfinite(x)
        self.nonfinite += int(x.size - ok.sum())
        x = x[ok]
        if x.size == 0:
            return
        top = float(x.max())
        if top > self._max:
            scale = math.exp(self._max - top) if self._max > -math.inf else 0.0
            self._s1 *= scale
            self._s2 *= scale * scale
            self._max = top
        z = np.exp(x - self._max)
        self._s1 += float(z.sum())
        self._s2 += float((z * z).sum())

    def ess(self) -> float:
        """(Σ w)² / Σ w² for w = exp(x): the effective sample size (NaN with non-finite x)."""
        if self.nonfinite or self.n == 0:
            return math.nan
        return self._s1 * self._s1 / self._s2


class Reservoir:
    """A uniform random sample of ``size`` tokens (without replacement) and their series.

    Token i gets the i-th draw of ``Generator(PCG64(SeedSequence(seed)))``; the sample is the
    ``size`` tokens with the smallest keys, reported in token order: the same tokens whatever
    the chunk sizes (numpy's ``random(n)`` draws consecutive doubles of the stream).
    """

    def __init__(self, size: int, names: tuple[str, ...], seed: int) -> None:
        self.size = int(size)
        self.names = tuple(names)
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
        self._keys = np.empty(0)
        self._index = np.empty(0, dtype=np.int64)
        self._values = np.empty((0, len(self.names)))
        self._seen = 0

    def add(self, values: np.ndarray) -> None:
        """Add the tokens of one chunk: ``values`` (n, len(names)), in token order."""
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if self.size == 0:
            return
        keys = self._rng.random(n)
        index = np.arange(self._seen, self._seen + n, dtype=np.int64)
        self._seen += n
        if len(self._keys) >= self.size:
            take = keys < self._keys.max()
            keys, index, values = keys[take], index[take], values[take]
        if len(keys) == 0:
            return
        keys = np.concatenate([self._keys, keys])
        index = np.concatenate([self._index, index])
        values = np.concatenate([self._values, values])
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size - 1)[: self.size]
            keys, index, values = keys[keep], index[keep], values[keep]
        self._keys, self._index, self._values = keys, index, values

    def samples(self) -> dict[str, np.ndarray]:
        order = np.argsort(self._index, kind="stable")
        return {name: self._values[order, j].copy() for j, name in enumerate(self.names)}
