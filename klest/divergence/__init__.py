"""True KL divergence: ``kl()`` and its open registry of closed forms (``closed_forms/``,
registered on import), with quadrature / enumeration fallbacks.

Imports ``klest.integrate``, ``klest.distributions`` and the helpers below them.
"""

from klest.divergence import closed_forms as _closed_forms  # noqa: F401  (registers them)
from klest.divergence.registry import (
    METHODS,
    KLResult,
    check_same_space,
    kl,
    kl_result,
    register_kl,
)
from klest.errors import NoKLMethodError

__all__ = [
    "METHODS",
    "KLResult",
    "NoKLMethodError",
    "check_same_space",
    "kl",
    "kl_result",
    "register_kl",
]
