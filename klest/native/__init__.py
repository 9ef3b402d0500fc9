"""The one seam to the compiled kernels (``csrc/``, ctypes): sampler, moment accumulator, k3,
expm1, inverse CDF, the log-ratios of two Gaussian mixtures (``mixture_log_ratio``) and of
two multivariate normals (``mvn_ratio_from_standardized``) -- or to their pure-NumPy
fallback, which gives the same draws and bits;
and the full-vocabulary KL rows of ``klest.rl.full_kl`` (compiled only: ``full_kl_rows`` is
None in the fallback, where full_kl evaluates the same formula with NumPy), and NumPy's
laplace, gamma, standard_t and beta draws (compiled only: ``fill_family`` is None in the
fallback, where :func:`family_draws` calls NumPy's own methods, the same draws).

``KLEST_NATIVE=0`` selects the fallback (:mod:`klest.native.fallback`, ``fallback_sampler``,
``fallback_kernels``); ``KLEST_NATIVE=1`` requires the compiled library (an ImportError says
why it cannot be loaded); unset, the compiled library when it loads, else the fallback, with
one :class:`FallbackWarning` at import. :data:`BACKEND` is "compiled" or "numpy". Imports only
the helpers; every other klest module reaches compiled code through these names, and none
needs to know which backend is in use.
"""

import warnings

import numpy as np

from klest.native import fallback as _fallback
from klest.native import fallback_kernels as _fallback_kernels
from klest.native import fallback_sampler as _fallback_sampler
from klest.native import mixture_kernel as _mixture_kernel
from klest.native.checks import (
    COMPUTED_SERIES,
    FIELDS,
    SIMD_LEVELS,
    as_real_array,
    checked_int,
    quadratic_coefficients,
    real_scalar,
)
from klest.native.fallback import BACKEND, TILE, FallbackWarning
from klest.native.mixture_kernel import log_sum_exp_parts as mixture_log_sum_exp_parts
from klest.native.mixture_kernel import mixture_draws, mixture_terms
from klest.native.mvn_kernel import ratio_from_standardized as _fallback_mvn_ratio
from klest.native.sampler import (
    family_draws,
    pcg64_state,
    pcg64_states,
    quadratic_in_place,
    scaled_normal,
    standard_normal,
)

if _fallback.COMPILED is None:
    from klest.native.fallback import (
        best_simd_level,
        expm1,
        inverse_cdf,
        k3_from_expm1,
        log,
        log1p,
        set_simd_level,
    )

    accumulate, merge = _fallback_kernels.accumulate, _fallback_kernels.merge
    block_stats = _fallback_kernels.block_stats
    categorical_block_stats = _fallback_kernels.categorical_block_stats
    laplace_block_stats = _fallback_kernels.laplace_block_stats
    mixture_block_stats = _fallback_kernels.mixture_block_stats
    fill_normal = _fallback_sampler.fill_normal

    def mixture_log_ratio(
        x: np.ndarray, q_terms: np.ndarray, p_terms: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """row_bindings.mixture_log_ratio in NumPy: klest.native.mixture_kernel's definition,
        with klest._special's expm1 and log."""
        return _mixture_kernel.mixture_log_ratio(
            x, q_terms, p_terms, out, _fallback.expm1, _fallback.log
        )

    mvn_ratio_from_standardized = _fallback_mvn_ratio

    fill_family = None  # family_draws calls NumPy's own methods instead
    full_kl_rows = None  # klest.rl.full_kl evaluates its NumPy / torch formula instead
    if _fallback.WARN:
        warnings.warn(
            f"klest: the compiled kernels are not available ({_fallback.REASON}); using the "
            "pure-NumPy engine (the same draws and statistics, slower). Set KLEST_NATIVE=0 to "
            "choose it without this warning.",
            FallbackWarning,
            stacklevel=2,
        )
else:
    from klest.native.bindings import (
        accumulate,
        best_simd_level,
        block_stats,
        categorical_block_stats,
        expm1,
        fill_family,
        fill_normal,
        full_kl_rows,
        inverse_cdf,
        k3_from_expm1,
        laplace_block_stats,
        log,
        log1p,
        merge,
        set_simd_level,
    )
    from klest.native.row_bindings import (
        mixture_block_stats,
        mixture_log_ratio,
        mvn_ratio_from_standardized,
    )

__all__ = [
    "BACKEND",
    "COMPUTED_SERIES",
    "FIELDS",
    "SIMD_LEVELS",
    "TILE",
    "FallbackWarning",
    "accumulate",
    "as_real_array",
    "best_simd_level",
    "block_stats",
    "categorical_block_stats",
    "checked_int",
    "expm1",
    "family_draws",
    "fill_family",
    "fill_normal",
    "full_kl_rows",
    "inverse_cdf",
    "k3_from_expm1",
    "laplace_block_stats",
    "log",
    "log1p",
    "merge",
    "mixture_block_stats",
    "mixture_draws",
    "mixture_log_ratio",
    "mixture_log_sum_exp_parts",
    "mixture_terms",
    "mvn_ratio_from_standardized",
    "pcg64_state",
    "pcg64_states",
    "quadratic_coefficients",
    "quadratic_in_place",
    "real_scalar",
    "scaled_normal",
    "set_simd_level",
    "standard_normal",
]
