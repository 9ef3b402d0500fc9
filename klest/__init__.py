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

import importlib

from klest import _moved, estimators
from klest._version import __version__ as __version__
from klest.distributions import *  # noqa: F403
from klest.distributions import __all__ as _distribution_names
from klest.divergence import KLResult, kl, kl_result, register_kl
from klest.engine import ConvergenceWarning, SimulationResult, simulate
from klest.errors import NoExactMethodError, NoKLMethodError
from klest.exact import ExactMoments, exact_moments

__all__ = [
    "diagnose",  # noqa: F405  (served lazily by __getattr__)
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


#: subpackages imported on first use (``klest.rl``, ...), so that ``import klest`` stays light:
#: the engine's processes never load pandas, pyarrow or arviz-stats for them
LAZY_SUBPACKAGES = ("diagnostics", "gradients", "rl", "sequence")


def __getattr__(name: str) -> object:
    """The lazy subpackages, ``klest.diagnose``, and ``klest.tables`` and the other moved
    modules, by attribute (DeprecationWarning)."""
    if name in LAZY_SUBPACKAGES:
        return importlib.import_module(f"klest.{name}")
    if name == "diagnose":
        return importlib.import_module("klest.diagnostics").diagnose
    return _moved.attribute(name)


def __dir__() -> list[str]:
    """The module's names and the lazy ones (tab completion shows ``klest.rl`` before use)."""
    return sorted({*globals(), *LAZY_SUBPACKAGES, "diagnose"})
