"""Distribution families (one module each), their base class and log_ratio; explicit-rng sampling.

Imports only ``klest.native`` and the helpers (``_special``, ``errors``); nothing above.
"""

from klest.distributions.base import FAMILIES, Distribution, Domain, Param, Support, from_dict
from klest.distributions.bernoulli import Bernoulli
from klest.distributions.beta import Beta
from klest.distributions.categorical import Categorical
from klest.distributions.exponential import Exponential
from klest.distributions.gamma import Gamma
from klest.distributions.laplace import Laplace
from klest.distributions.lognormal import LogNormal
from klest.distributions.mixture import GaussianMixture
from klest.distributions.multivariate_normal import MultivariateNormal
from klest.distributions.normal import Normal
from klest.distributions.poisson import Poisson
from klest.distributions.student_t import StudentT
from klest.distributions.uniform import Uniform

__all__ = [
    "FAMILIES",
    "Bernoulli",
    "Beta",
    "Categorical",
    "Distribution",
    "Domain",
    "Exponential",
    "Gamma",
    "GaussianMixture",
    "Laplace",
    "LogNormal",
    "MultivariateNormal",
    "Normal",
    "Param",
    "Poisson",
    "StudentT",
    "Support",
    "Uniform",
    "from_dict",
]
