"""MultivariateNormal(mean, cov): the d-dimensional Gaussian, through its Cholesky factor."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular

from klest.distributions.base import REAL, Distribution, Param, Support
from klest.errors import ParameterError
from klest.native import fill_normal, pcg64_state, standard_normal
from klest.native import mvn_ratio_from_standardized as native_mvn_ratio

_LOG_2PI = math.log(2.0 * math.pi)
#: doubles per chunk of the pair log-ratio (rows = this // d): its (rows, d) arrays, 256 KB
#: each, stay in cache instead of streaming (n, d) arrays through memory
CHUNK_VALUES = 1 << 15
#: |cov - cov.T| may be this large relative to max|cov| (rounding from a product A @ A.T);
#: within it the matrix is symmetrised, beyond it the input is rejected.
SYMMETRY_RTOL = 1e-10


class MultivariateNormal(Distribution):
    """The multivariate normal distribution N(mean, cov) on R^d.

    ``cov`` must be symmetric (it is symmetrised when asymmetric only by rounding) and
    positive definite (checked by a Cholesky factorisation, available as ``scale_tril``).
    Because ``mean`` is also the name of the distribution's mean method, the mean vector is
    read with ``q.mean()``; the covariance is ``q.cov`` (or ``q.variance()``).

    >>> import numpy as np
    >>> q = MultivariateNormal(mean=[0.0, 1.0], cov=[[2.0, 0.5], [0.5, 1.0]])
    >>> q.event_shape, q.support.describe()
    ((2,), 'R^2')
    >>> round(float(q.log_prob([0.0, 1.0])), 6)
    -2.117685
    >>> q.sample(np.random.default_rng(0), 5).shape
    (5, 2)
    >>> q.mean()
    array([0., 1.])
    """

    family = "multivariate_normal"
    params = (
        Param("mean", REAL, (-3.0, 3.0), vector=True, doc="mean vector, shape (d,)"),
        Param(
            "cov",
            REAL,
            (0.25, 4.0),
            vector=True,
            doc="covariance matrix, shape (d, d), symmetric positive definite; the typical "
            "range is for the variances on the diagonal (off-diagonal entries: correlations "
            "|rho| <= 0.8 times sqrt(cov_ii * cov_jj))",
        ),
    )

    cov: np.ndarray

    def __init__(self, *, mean: Any, cov: Any) -> None:
        self._init_params(mean=mean, cov=cov)
        # The parameter ``mean`` would shadow the method ``mean()``: the vector stays in
        # ``_params`` (repr, equality, to_dict) and ``q.mean()`` returns it.
        object.__delattr__(self, "mean")

    def _validate(self) -> None:
        mean, cov = self._params["mean"], self._params["cov"]
        if mean.ndim != 1 or mean.shape[0] < 1:
            raise ParameterError(
                "MultivariateNormal",
                "mean",
                f"must be a vector of shape (d,), got shape {mean.shape}",
            )
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ParameterError(
                "MultivariateNormal",
                "cov",
                f"must have shape (d, d) = ({d}, {d}) to match 'mean' of shape ({d},), got 'cov' "
                f"of shape {cov.shape}",
            )
        asym = float(np.max(np.abs(cov - cov.T)))
        scale = float(np.max(np.abs(cov)))
        if asym > SYMMETRY_RTOL * scale:
            i, j = np.unravel_index(int(np.argmax(np.abs(cov - cov.T))), cov.shape)
            raise ParameterError(
                "MultivariateNormal",
                "cov",
                f"must be symmetric, got cov[{i}, {j}] = {float(cov[i, j])!r} but "
                f"cov[{j}, {i}] = {float(cov[j, i])!r}",
            )
        sym = 0.5 * (cov + cov.T)
        try:
            chol = np.linalg.cholesky(sym)
        except np.linalg.LinAlgError:
            smallest = float(np.linalg.eigvalsh(sym)[0])
            raise ParameterError(
                "MultivariateNormal",
                "cov",
                "must be positive definite, got a matrix whose smallest eigenvalue is "
                f"{smallest!r}",
            ) from None
        if not np.all(np.diag(chol) > 0.0):
            raise ParameterError(
                "MultivariateNormal",
                "cov",
                "must be positive definite, got a singular matrix (a zero pivot in its Cholesky "
                "factorisation)",
            )
        sym.flags.writeable = False
        chol.flags.writeable = False
        self._params["cov"] = sym
        object.__setattr__(self, "cov", sym)
        object.__setattr__(self, "_chol", chol)
        object.__setattr__(self, "_half_log_det", float(np.sum(np.log(np.diag(chol)))))

    # ---- properties ------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """The dimension d."""
        return int(self._params["mean"].shape[0])

    @property
    def scale_tril(self) -> np.ndarray:
        """The lower-triangular Cholesky factor L of ``cov`` (cov = L @ L.T), read-only."""
        return self._chol

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def support(self) -> Support:
        return Support(-math.inf, math.inf, dim=self.dim)

    # ---- density and sampling --------------------------------------------------------

    def log_prob(self, x: Any) -> np.ndarray:
        """Log density at ``x`` of shape (..., d); the result has shape (...)."""
        x = np.asarray(x, dtype=np.float64)
        d = self.dim
        if x.ndim == 0 or x.shape[-1] != d:
            raise ValueError(
                f"MultivariateNormal.log_prob: x must have shape (..., {d}), got {x.shape}"
            )
        batch = x.shape[:-1]
        flat = x.reshape(-1, d)
        out = np.full(flat.shape[0], -math.inf)
        ok = np.isfinite(flat).all(axis=1)
        if np.any(ok):
            diff = flat[ok] - self._params["mean"]
            y = solve_triangular(self._chol, diff.T, lower=True, check_finite=False)
            maha = np.einsum("ij,ij->j", y, y)
            out[ok] = -0.5 * maha - self._half_log_det - 0.5 * d * _LOG_2PI
        out[np.isnan(flat).any(axis=1)] = math.nan
        return out.reshape(batch)[()]

    def _sample(self, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        z = standard_normal(rng, (*size, self.dim))  # rng.standard_normal(...), compiled
        return self._params["mean"] + z @ self._chol.T

    # ---- moments ---------------------------------------------------------------------

    def mean(self) -> np.ndarray:  # type: ignore[override]
        """The mean vector (the ``mean`` parameter), shape (d,)."""
        return self._params["mean"]

    def variance(self) -> np.ndarray:
        """The covariance matrix (the ``cov`` parameter, symmetrised), shape (d, d)."""
        return self.cov


def cholesky_difference(a: MultivariateNormal, b: MultivariateNormal) -> np.ndarray:
    """L_b^{-1} (L_a - L_b) = L_b^{-1} L_a - I, for the Cholesky factors L_a, L_b of two
    covariances of one dimension: exactly zero when they are equal and free of cancellation
    when they are close (where L_b^{-1} L_a - I would lose the digits of a small difference).

    >>> a = MultivariateNormal(mean=[0.0, 0.0], cov=[[4.0, 0.0], [0.0, 1.0]])
    >>> cholesky_difference(a, MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))).tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    """
    if same_covariance(a, b):
        return np.zeros((a.dim, a.dim))
    la, lb = a.scale_tril, b.scale_tril
    return solve_triangular(lb, la - lb, lower=True)


def same_covariance(a: MultivariateNormal, b: MultivariateNormal) -> bool:
    """Whether a and b have equal covariances, which then count as one Cholesky factor:
    LAPACK's factor of one matrix is not bit-reproducible on every machine (a CI run got a
    KL of 4.9e-32 for equal arguments), and equal covariances must give exactly zero."""
    return a.cov is b.cov or (a.dim == b.dim and np.array_equal(a.cov, b.cov))


PairTerms = tuple[np.ndarray, np.ndarray, float] | None


def _pair_terms(q: MultivariateNormal, p: MultivariateNormal) -> PairTerms:
    """(G, delta, c): with y_q = L_q^{-1}(x - m_q) and y_p = L_p^{-1}(x - m_p),
    y_p - y_q = G y_q + delta for G = L_p^{-1}(L_q - L_p) (:func:`cholesky_difference`, lower
    triangular) and delta = L_p^{-1}(m_q - m_p); c = log det L_p - log det L_q. None where
    one of them overflows (extreme parameters: every row is then the generic difference)."""
    with np.errstate(over="ignore", invalid="ignore"):
        delta = solve_triangular(p.scale_tril, q.mean() - p.mean(), lower=True)
        difference = np.ascontiguousarray(cholesky_difference(q, p))
    c = 0.0 if same_covariance(q, p) else p._half_log_det - q._half_log_det
    if not (np.isfinite(difference).all() and np.isfinite(delta).all() and math.isfinite(c)):
        return None
    return difference, np.ascontiguousarray(delta), c


def _ratio_from_standardized(y: np.ndarray, terms: PairTerms, out: np.ndarray) -> None:
    """``out[:]`` = -(|y_p|² - |y_q|²)/2 - c for rows y = y_q, as -(D · (D + 2 y))/2 - c with
    D = y_p - y_q: no cancellation between two squared norms when p is close to q
    (:func:`klest.native.mvn_ratio_from_standardized`: compiled, or its NumPy definition;
    every sum in a fixed order, whatever the CPU or BLAS). NaN where ``terms`` is None."""
    if terms is None:
        out.fill(math.nan)
    else:
        native_mvn_ratio(np.ascontiguousarray(y), *terms, out)


def _generic_rows(q: MultivariateNormal, p: MultivariateNormal, x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return p.log_prob(x) - q.log_prob(x)


def mvn_log_ratio(q: MultivariateNormal, p: MultivariateNormal, x: Any) -> np.ndarray:
    """log p(x) - log q(x) for x of shape (..., d): one triangular solve (for y_q) and one
    pass of klest's kernel with G per chunk of rows, not two log_probs. Rows where it is not
    finite (a non-finite x, or a Mahalanobis term beyond the float64 range) are the two
    log_probs' difference, as without the specialisation (NaN for a row with inf or NaN).

    >>> q = MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 0.3], [0.3, 2.0]])
    >>> p = MultivariateNormal(mean=[0.5, 0.0], cov=np.eye(2))
    >>> x = np.array([[0.1, -0.2], [1.0, 2.0]])
    >>> bool(np.allclose(mvn_log_ratio(q, p, x), p.log_prob(x) - q.log_prob(x), rtol=1e-14))
    True
    """
    x = np.asarray(x, dtype=np.float64)
    d = q.dim
    if x.ndim == 0 or x.shape[-1] != d or p.dim != d:
        return _generic_rows(q, p, x)
    flat = x.reshape(-1, d)
    terms = _pair_terms(q, p)
    out = np.empty(flat.shape[0])
    rows = max(1, CHUNK_VALUES // d)
    mean, chol = q.mean(), q.scale_tril
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, flat.shape[0], rows):
            part = flat[start : start + rows] - mean
            y = solve_triangular(chol, part.T, lower=True, check_finite=False).T
            _ratio_from_standardized(y, terms, out[start : start + rows])
    return _finite_or_generic(q, p, out, lambda bad: flat[bad]).reshape(x.shape[:-1])[()]


def sample_mvn_log_ratio(
    q: MultivariateNormal, p: MultivariateNormal, rng: np.random.Generator, size: int
) -> np.ndarray:
    """log p(x) - log q(x) for ``size`` draws x ~ q: the draws of ``q.sample(rng, size)``
    (the same standard normal rows z, drawn chunk by chunk from the one stream), with
    y_q = z (x = m_q + L_q z is never formed: the log-ratio is a function of z alone)."""
    d = q.dim
    terms = _pair_terms(q, p)
    out = np.empty(size)
    rows = max(1, CHUNK_VALUES // d)
    start_state = rng.bit_generator.state
    with np.errstate(over="ignore", invalid="ignore"):
        for start, z in _normal_rows(rng, size, d, rows):
            _ratio_from_standardized(z, terms, out[start : start + z.shape[0]])
    if not math.isfinite(float(np.add.reduce(out))):
        # rare (extreme parameters): the generic difference at x = m_q + z L_q^T, z drawn
        # again from a copy of the generator as it was
        again = np.random.Generator(type(rng.bit_generator)())
        again.bit_generator.state = start_state
        z = standard_normal(again, (size, d))
        return _finite_or_generic(q, p, out, lambda bad: q.mean() + z[bad] @ q.scale_tril.T)
    return out


def _normal_rows(
    rng: np.random.Generator, size: int, d: int, rows: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, z) for the chunks of ``standard_normal(rng, (size, d))``, ``rows`` rows at a
    time, drawn in turn from the one stream (the same draws); for a PCG64 the generator's
    state is opened once for every chunk, and each z reuses one buffer."""
    if type(rng.bit_generator) is not np.random.PCG64 or size == 0:
        for start in range(0, size, rows):
            yield start, standard_normal(rng, (min(rows, size - start), d))
        return
    buffer = np.empty((min(rows, size), d))
    with pcg64_state(rng.bit_generator) as state:
        for start in range(0, size, rows):
            z = buffer[: min(rows, size - start)]
            fill_normal(state, z, 1.0, 0.0)
            yield start, z


def _finite_or_generic(q, p, out: np.ndarray, rows_of) -> np.ndarray:
    """``out``, with its non-finite entries replaced by the generic difference at those
    rows (``rows_of(mask)`` gives them)."""
    if math.isfinite(float(np.add.reduce(out))):
        return out
    bad = ~np.isfinite(out)
    out[bad] = _generic_rows(q, p, rows_of(bad))
    return out
