"""True KL: ``kl()`` and its registry (``registry``), closed forms (``closed_forms/``), fallbacks.

Imports ``klest.estimators``, ``klest.integrate``, ``klest.distributions`` and the layers below.
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
