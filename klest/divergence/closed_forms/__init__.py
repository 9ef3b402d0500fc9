"""Closed-form KL divergences, registered with ``klest.divergence.registry.register_kl`` on import.

One module per group of families; importing this package registers them all.
"""

from klest.divergence.closed_forms import (
    continuous,  # noqa: F401
    cross_entropy,  # noqa: F401
    discrete,  # noqa: F401
    gaussian,  # noqa: F401
    normal,  # noqa: F401
)
