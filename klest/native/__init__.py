"""The one seam to the compiled kernels (``csrc/``, ctypes): sampler, moment accumulator, k3.

Imports only the helpers; every other klest module reaches compiled code through these names.
"""

from klest.native.bindings import (
    COMPUTED_SERIES,
    FIELDS,
    SIMD_LEVELS,
    TILE,
    accumulate,
    as_real_array,
    best_simd_level,
    checked_int,
    fill_normal,
    inverse_cdf,
    k3_from_expm1,
    merge,
    quadratic_coefficients,
    real_scalar,
    set_simd_level,
)
from klest.native.sampler import MIN_FAST_SIZE, quadratic_in_place, scaled_normal, standard_normal

__all__ = [
    "COMPUTED_SERIES",
    "FIELDS",
    "MIN_FAST_SIZE",
    "SIMD_LEVELS",
    "TILE",
    "accumulate",
    "as_real_array",
    "best_simd_level",
    "checked_int",
    "fill_normal",
    "inverse_cdf",
    "k3_from_expm1",
    "merge",
    "quadratic_coefficients",
    "quadratic_in_place",
    "real_scalar",
    "scaled_normal",
    "set_simd_level",
    "standard_normal",
]
