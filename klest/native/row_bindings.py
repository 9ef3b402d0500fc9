"""ctypes bindings of klest's per-draw log-ratio kernels: two Gaussian mixtures
(csrc/mixture.c) and two multivariate normals from standardized rows (csrc/mvn.c), in the
library that :mod:`klest.native.bindings` loads (importing this module loads it too).

As there, every wrapper checks its arguments before any reaches the C (with the checks of
the NumPy definitions, :mod:`klest.native.mixture_kernel` and :mod:`klest.native.mvn_kernel`,
which give the same bits): a bad one is a one-line TypeError or ValueError naming it.

>>> import numpy as np
>>> mvn_ratio_from_standardized(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(2), 0.0,
...                             np.empty(2))
Traceback (most recent call last):
    ...
ValueError: delta must have shape (3,), got (2,)
"""

from __future__ import annotations

import ctypes

import numpy as np

from klest.native.bindings import _LIB, _address, _bins, _block_stats_status, _computed_kinds
from klest.native.mixture_kernel import check_mixture_args, check_mixture_block_stats_args
from klest.native.mvn_kernel import check_mvn_args

__all__ = ["mixture_block_stats", "mixture_log_ratio", "mvn_ratio_from_standardized"]

_P, _I64, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_LIB.klest_mixture_log_ratio.argtypes = [_P, _I64, _I64, _P, _I64, _P, _P]
_LIB.klest_mixture_log_ratio.restype = None
_LIB.klest_mixture_block_stats.argtypes = [
    _P, _I64, _P, _I64, _P, _P, _P, _I64, _P, _I64, _P, _P, _I64, _P, _P, _P, _P, _I64, _I64,
    _I64, _F64, _F64,
]  # fmt: skip
_LIB.klest_mixture_block_stats.restype = ctypes.c_int
_LIB.klest_mvn_ratio_from_standardized.argtypes = [
    _P, _I64, _I64, _P, _P, _F64, _P, _P,
]  # fmt: skip
_LIB.klest_mvn_ratio_from_standardized.restype = None
_LIB.klest_mvn_tile_size.argtypes = []
_LIB.klest_mvn_tile_size.restype = _I64
#: rows per tile of the multivariate normal kernel (its work holds d of them)
MVN_TILE = int(_LIB.klest_mvn_tile_size())


def mixture_log_ratio(
    x: np.ndarray, q_terms: np.ndarray, p_terms: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """``out[:] = log p(x) - log q(x)`` for two mixtures of 1-D normals given as their (3, K)
    terms (:func:`klest.native.mixture_kernel.mixture_terms`), and return ``out`` (it may be
    ``x``): klest/native/csrc/mixture.c, the same bits as its NumPy definition."""
    check_mixture_args(x, q_terms, p_terms, out)
    _LIB.klest_mixture_log_ratio(
        _address(x), x.size, q_terms.shape[1], _address(q_terms), p_terms.shape[1],
        _address(p_terms), _address(out),
    )  # fmt: skip
    return out


def mixture_block_stats(
    series: list[str],
    mixture: tuple[np.ndarray, ...],
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """``block_stats`` for blocks of GaussianMixture draws, ``mixture = (states, lengths,
    cuts, locs, scales, q_terms, p_terms)``: block b is the ``lengths[b]`` draws of
    ``GaussianMixture._sample`` (q's cut points, means and scales) from PCG64 state
    ``states[b]`` (advanced in place), with the log-ratio of :func:`mixture_log_ratio`, drawn
    tile by tile in csrc/kernels.c and never written out."""
    check_mixture_block_stats_args(
        series, mixture, stats, joint, comoment, histogram, hist_rows, stride, low, width
    )
    states, lengths, cuts, locs, scales, q_terms, p_terms = mixture
    kinds = _computed_kinds(series)
    status = _LIB.klest_mixture_block_stats(
        _address(states), len(states), _address(lengths), locs.size, _address(cuts),
        _address(locs), _address(scales), q_terms.shape[1], _address(q_terms),
        p_terms.shape[1], _address(p_terms), _address(kinds), len(series), _address(stats),
        _address(joint), _address(comoment), _address(histogram), _bins(histogram), hist_rows,
        stride, low, width,
    )  # fmt: skip
    _block_stats_status("klest_mixture_block_stats", status)


def mvn_ratio_from_standardized(
    y: np.ndarray, difference: np.ndarray, delta: np.ndarray, c: float, out: np.ndarray
) -> np.ndarray:
    """``out[i] = log p(x_i) - log q(x_i)`` from the standardized rows ``y`` (rows, d), G =
    ``difference`` (d, d; its lower triangle read), ``delta`` (d,) and ``c`` (see
    :mod:`klest.native.mvn_kernel`), and return ``out``: klest/native/csrc/mvn.c, the same
    bits as its NumPy definition at every SIMD level."""
    c = check_mvn_args(y, difference, delta, c, out)
    rows, d = y.shape
    work = np.empty(d * MVN_TILE)
    _LIB.klest_mvn_ratio_from_standardized(
        _address(y), rows, d, _address(difference), _address(delta), c, _address(out),
        _address(work),
    )  # fmt: skip
    return out
