"""The engine: plan + seeding, simulate, mergeable moments, truths, results, error bars, pools.
May import klest's exact, divergence, estimators, distributions, native and helpers; none above.
"""

from klest.engine.results import ConvergenceWarning, SimulationResult
from klest.engine.runner import available_cpus, simulate, usable_workers

__all__ = ["ConvergenceWarning", "SimulationResult", "available_cpus", "simulate", "usable_workers"]
