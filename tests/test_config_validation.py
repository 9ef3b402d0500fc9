"""The one config validator (experiment and RL study configs), ParameterError, check_integer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from klest.distributions import Categorical, MultivariateNormal, Normal, Uniform
from klest.errors import ParameterError
from klest.gradients.monte_carlo import monte_carlo_gradient
from klest.studies import checks, rl_studies
from klest.studies.checks import ConfigError, _Checker
from klest.studies.experiment import parse_config
from klest.studies.rl_studies import parse_study

CASE = {"q": {"family": "normal"}, "p": {"family": "normal", "loc": 0.5}}


@pytest.mark.parametrize(
    ("build", "parameter", "text"),
    [
        (lambda: Normal(loc=0.0, scale=-1.0), "scale",
         "Normal: parameter 'scale' must be reals in (0, inf), got -1.0"),
        (lambda: Normal(loc="a", scale=1.0), "loc",
         "Normal: parameter 'loc' must be numeric, got 'a'"),
        (lambda: Uniform(low=1.0, high=0.0), "low",
         "Uniform: parameter 'low' must be < 'high', got low=1.0, high=0.0"),
        (lambda: Categorical(probs=[0.3, 0.3]), "probs",
         "Categorical: parameter 'probs' must sum to 1 along the last axis (within 1e-06), got "
         "sum 0.6 at batch index ()"),
        (lambda: MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 2.0], [2.0, 1.0]]), "cov",
         "MultivariateNormal: parameter 'cov' must be positive definite, got a matrix whose "
         "smallest eigenvalue is -1.0"),
    ],
)  # fmt: skip
def test_distributions_raise_a_typed_parameter_error(build, parameter, text) -> None:
    with pytest.raises(ParameterError) as info:
        build()
    err = info.value
    assert isinstance(err, ValueError) and str(err) == text
    assert err.parameter == parameter and text.endswith(err.problem)
    again = pickle.loads(pickle.dumps(err))  # crosses worker processes intact
    assert (str(again), again.parameter) == (text, parameter)


def test_the_validator_reads_the_error_fields_not_its_text(monkeypatch) -> None:
    # a ParameterError whose text does not look like "X: parameter 'y' ..." is still mapped to
    # the key of its parameter: the validator reads err.parameter and err.problem
    def odd(**params):
        raise ParameterError("Normal", "scale", "is odd")

    monkeypatch.setattr(Normal, "__init__", lambda self, **kw: odd(**kw))
    monkeypatch.setattr(ParameterError, "__str__", lambda self: "no pattern here")
    with pytest.raises(ConfigError) as info:
        _Checker("x.toml").distribution(Normal, {"scale": 2.0}, "cases[0].p", {})
    assert str(info.value) == "x.toml: cases[0].p.scale: is odd"


def test_a_plain_value_error_points_at_the_table() -> None:
    def broken(**params):
        raise ValueError("Normal: parameter 'scale' looks like one but is not typed")

    class Fake(Normal):
        family = ""

    Fake.__init__ = lambda self, **kw: broken(**kw)  # type: ignore[method-assign]
    with pytest.raises(ConfigError) as info:
        _Checker("x.toml").distribution(Fake, {"scale": 2.0}, "cases[0].p", {})
    assert info.value.key == "cases[0].p"  # not cases[0].p.scale: no parsing of the text


def test_sweep_errors_name_the_swept_value() -> None:
    raw = {"name": "s", "estimators": ["k1"], "n": 10, "cases": [{
        "q": {"family": "normal"}, "p": {"family": "normal"},
        "sweep": {"param": "p.scale", "values": [1.0, -2.0]}}]}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="s.toml")
    assert str(info.value) == (
        "s.toml: cases[0].sweep.values[1]: p.scale = -2.0: must be reals in (0, inf), got -2.0"
    )


def test_one_validator_class_for_both_config_kinds() -> None:
    assert not hasattr(rl_studies, "_Keys")
    assert rl_studies._Checker is checks._Checker
    assert "import re" not in open(checks.__file__, encoding="utf-8").read()


@pytest.mark.parametrize(
    ("value", "compact", "problem"),
    [
        (0, False, "must be >= 1, got 0"),
        (2.0, False, "expected an integer, got float 2.0 (write 2)"),
        (True, False, "expected an integer, got boolean True"),
        ("3", False, "expected an integer, got string '3'"),
        (0, True, "expected an integer >= 1, got 0"),
        (2.0, True, "expected an integer >= 1, got 2.0"),
        (True, True, "expected an integer >= 1, got True"),
    ],
)
def test_integer_wordings(value, compact, problem) -> None:
    with pytest.raises(ConfigError) as info:
        _Checker("c.toml").integer(value, "n", 1, compact=compact)
    assert info.value.problem == problem


def test_integers_come_back_as_python_ints() -> None:
    value = _Checker("c.toml").integer(np.int64(5), "n", 1)
    assert value == 5 and type(value) is int
    config = parse_config({"name": "x", "estimators": ["k1"], "n": 10, "cases": [CASE]})
    overridden = config.with_overrides(n=np.int64(20), seed=np.uint32(3))
    assert (type(overridden.n), type(overridden.seed)) == (int, int)
    assert len(overridden.config_hash()) == 64  # JSON-ready: numpy integers would not be


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"study": "sequence_variance", "lengths": [1], "vocab": 1},
         "<config>: vocab: expected an integer >= 2, got 1"),
        ({"study": "sequence_estimators", "n": 2.0},
         "<config>: n: expected an integer >= 2, got 2.0"),
        ({"study": "gradient_table", "seed": -1},
         "<config>: seed: expected an integer >= 0, got -1"),
        ({"study": "gradient_table", "scale": "big"},
         "<config>: scale: expected a number, got 'big'"),
        ({"study": "gradient_table", "scale": 0}, "<config>: scale: must be > 0, got 0"),
        ({"study": "bandit_fixed_points"}, "<config>: reward: missing (required)"),
        ({"study": "gradient_coefficients", "log_ratio": {"range": [0, 1, 3]}},
         "<config>: log_ratio: expected an array or {linspace|geomspace = [a, b, n]}"),
        ({"study": "gradient_coefficients", "log_ratio": []},
         "<config>: log_ratio: expected finite numbers, got []"),
        ({"study": "gradient_table", "estimators": []},
         "<config>: estimators: expected a non-empty array of names, got []"),
        ({"study": "gradient_coefficients", "colour": "red"},
         "<config>: colour: unknown key for study 'gradient_coefficients'"),
    ],
)  # fmt: skip
def test_study_config_messages(raw, message) -> None:
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.with_overrides(n=0), "n must be an integer >= 1, got 0"),
        (lambda c: c.with_overrides(n=2.0), "n must be an integer >= 1, got 2.0"),
        (lambda c: c.with_overrides(seed=True), "seed must be an integer >= 0, got True"),
    ],
)
def test_override_checks(call, message) -> None:
    config = parse_config({"name": "x", "estimators": ["k1"], "n": 10, "cases": [CASE]})
    with pytest.raises(ValueError) as info:
        call(config)
    assert str(info.value) == message


def test_library_integer_checks_use_check_integer() -> None:
    from klest.sequence import TabularAR

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^vocab must be an integer >= 2, got 1$"):
        TabularAR.random(vocab=1, order=1, length=2, rng=rng)
    with pytest.raises(ValueError, match=r"^length must be a positive integer; got True$"):
        TabularAR.random(vocab=3, order=1, length=True, rng=rng)
    model = TabularAR.random(vocab=3, order=1, length=2, rng=rng)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got 0$"):
        model.sample(rng, 0)
    with pytest.raises(ValueError, match=r"^n must be an integer >= 2, got 1$"):
        monte_carlo_gradient(np.zeros(3), np.zeros(3), estimator="k1", placement="loss", n=1, rng=0)
