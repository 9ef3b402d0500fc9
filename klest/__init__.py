"""klest: Monte Carlo estimators of KL divergence, with the exact truth beside every estimate.

Conventions: ``kl(a, b)`` is KL(a||b), the expectation taken over ``a``. Simulations draw
x ~ q and compare with p; ``log_ratio = log p(x) - log q(x)`` and r = p(x)/q(x).

>>> import klest
>>> q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.1, scale=1.0)
>>> round(klest.kl(q, p), 12)
0.005
>>> round(klest.exact_moments(q, p, "k3").rel_std, 3)
1.417
"""

from klest import _moved, diagnostics, estimators, gradients, rl, sequence  # noqa: F401  (none loads torch)
from klest._version import __version__ as __version__
from klest.diagnostics import diagnose
from klest.distributions import *  # noqa: F403
from klest.distributions import __all__ as _distribution_names
from klest.divergence import KLResult, kl, kl_result, register_kl
from klest.engine import ConvergenceWarning, SimulationResult, simulate
from klest.errors import NoExactMethodError, NoKLMethodError
from klest.exact import ExactMoments, exact_moments

__all__ = [
    "diagnose",
    *_distribution_names,
    "ConvergenceWarning",
    "ExactMoments",
    "KLResult",
    "NoExactMethodError",
    "NoKLMethodError",
    "SimulationResult",
    "estimators",
    "exact_moments",
    "kl",
    "kl_result",
    "register_kl",
    "simulate",
]

# the old flat module paths (klest.plots, klest.results, ...) keep working, with a warning
_moved.install()


def __getattr__(name: str) -> object:
    """``klest.tables`` and the other moved modules, by attribute (DeprecationWarning)."""
    return _moved.attribute(name)
