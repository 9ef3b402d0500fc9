"""The sampling engine: streaming, block-seeded, parallel simulation (``runner``), mergeable
moments (``moments``), results and their error bars, worker pools and Dask.

Imports ``klest.exact``, ``klest.divergence``, ``klest.estimators``, ``klest.distributions``,
``klest.native`` and the helpers; never the studies, RL or report layers.
"""

from klest.engine.results import ConvergenceWarning, SimulationResult
from klest.engine.runner import available_cpus, simulate, usable_workers

__all__ = ["ConvergenceWarning", "SimulationResult", "available_cpus", "simulate", "usable_workers"]
