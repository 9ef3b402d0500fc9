"""Sequence-level KL for a tabular autoregressive model: exact by DP, estimators compared.

Imports ``klest.rl`` and the layers below it; never ``klest.gradients`` (its sibling) or above.

>>> import numpy as np
>>> from klest import sequence
>>> pi, ref, old = sequence.random_models(vocab=3, order=2, length=8,
...                                       rng=np.random.default_rng(0))
>>> kl = sequence.sequence_kl(pi, ref)
>>> mean, var = sequence.exact_estimator_moments(sequence.SequenceEstimator("sum", "k3"), pi, ref)
>>> bool(np.isclose(mean, kl))
True
"""

from klest.sequence.compare import (
    WEIGHTINGS,
    SequenceEstimator,
    compare_sequence_estimators,
    default_estimators,
    estimator_values,
    exact_estimator_moments,
    random_models,
    variance_vs_length,
)
from klest.sequence.dp import linear_moments
from klest.sequence.gradient import SequenceGradient, sequence_gradient, sequence_true_gradients
from klest.sequence.model import (
    TabularAR,
    conditional_kl,
    count_responses,
    responses,
    sequence_kl,
)
from klest.sequence.monte_carlo import SequenceMonteCarlo, monte_carlo_sequence_gradient

__all__ = [
    "WEIGHTINGS",
    "SequenceEstimator",
    "SequenceGradient",
    "SequenceMonteCarlo",
    "TabularAR",
    "compare_sequence_estimators",
    "conditional_kl",
    "count_responses",
    "default_estimators",
    "estimator_values",
    "exact_estimator_moments",
    "linear_moments",
    "monte_carlo_sequence_gradient",
    "random_models",
    "responses",
    "sequence_gradient",
    "sequence_kl",
    "sequence_true_gradients",
    "variance_vs_length",
]
