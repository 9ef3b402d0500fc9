"""RL studies: a TOML config (``study = "..."``) -> validated settings -> tidy DataFrame.

Each config in ``experiments/`` with a ``study`` key names one analysis of
:mod:`klest.gradients` or :mod:`klest.sequence`; its figure (if any) is drawn by
:func:`klest.report.plots_rl.plot_study` (this module computes frames only):

=========================  ====================================  =============================
study                      frame                                 figure (klest.report.plots_rl)
=========================  ====================================  =============================
gradient_table             gradients.tables.gradient_table       plot_gradient_table
gaussian_gradient_table    gradients.tables.gaussian_gradient_…  plot_gradient_table
gradient_coefficients      gradients.tables.coefficient_table    plot_gradient_coefficients
bandit_fixed_points        gradients.tables.fixed_point_table    plot_fixed_points
sequence_variance          sequence.variance_vs_length           plot_sequence_variance
sequence_estimators        sequence.compare_sequence_estimators  (a table)
=========================  ====================================  =============================

Keys shared by all: ``study``, ``name`` (default: the file's stem), ``title``; ``estimators``
and ``placements`` for the gradient studies. Errors raise
:class:`klest.studies.experiment.ConfigError` naming the file and the key.

>>> config = parse_study({"study": "gradient_coefficients", "estimators": ["k1", "k3"],
...                       "placements": ["loss"], "log_ratio": {"linspace": [-1, 1, 3]}})
>>> run_study(config)["estimator"].unique().tolist()
['k1', 'k3', 'KL(pi||ref)', 'KL(ref||pi)']
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest import estimators as _estimators
from klest.distributions import Normal
from klest.gradients.coefficients import DIFFERENTIABLE, PLACEMENTS
from klest.gradients.tables import (
    coefficient_table,
    fixed_point_table,
    gaussian_gradient_table,
    gradient_table,
)
from klest.sequence import (
    compare_sequence_estimators,
    default_estimators,
    random_models,
    variance_vs_length,
)
from klest.studies.checks import ConfigError, _Checker

__all__ = [
    "STUDIES",
    "Study",
    "is_study_file",
    "load_study",
    "parse_study",
    "run_study",
]


@dataclass(frozen=True)
class Study:
    """A validated RL study: its kind, name, title and settings (plain Python values)."""

    study: str
    name: str
    title: str
    settings: dict[str, Any] = field(default_factory=dict)


def _gradient_keys(k: _Checker) -> dict[str, Any]:
    valid = tuple(_estimators.names(include_aliases=True))
    return {
        "estimators": k.get_names("estimators", DIFFERENTIABLE, valid),
        "placements": k.get_names("placements", PLACEMENTS, PLACEMENTS),
    }


def _gradient_table(k: _Checker) -> dict[str, Any]:
    out = _gradient_keys(k)
    if k.get("logits") is not None:
        out["logits"] = k.get_numbers("logits")
        out["ref_logits"] = k.get_numbers("ref_logits")
        if out["logits"].shape[-1:] != out["ref_logits"].shape[-1:]:
            raise k.error("ref_logits", "must have the same last dimension as logits")
        return out
    rng = np.random.Generator(np.random.PCG64(k.get_integer("seed", 0, minimum=0)))
    shape = (k.get_integer("batch", 16), k.get_integer("vocab", 8, minimum=2))
    out["logits"] = k.get_number("scale", 1.0, positive=True) * rng.standard_normal(shape)
    out["ref_logits"] = k.get_number("ref_scale", 1.0, positive=True) * rng.standard_normal(shape)
    return out


def _normal(k: _Checker, key: str) -> Normal:
    value = k.get(key, required=True)
    if not isinstance(value, dict) or set(value) - {"loc", "scale"}:
        raise k.error(key, f"expected {{ loc = ..., scale = ... }}, got {value!r}")
    try:
        return Normal(**{name: float(v) for name, v in value.items()})
    except (TypeError, ValueError) as err:
        raise k.error(key, str(err)) from None


def _fixed_points(k: _Checker) -> dict[str, Any]:
    out = _gradient_keys(k)
    out["reward"] = k.get_numbers("reward")
    out["ref_logits"] = k.get_numbers("ref_logits", [0.0] * out["reward"].size)
    if out["ref_logits"].shape != out["reward"].shape:
        raise k.error("ref_logits", "must have the reward's length")
    out["betas"] = k.get_numbers("betas")
    if np.any(out["betas"] <= 0):
        raise k.error("betas", "must be > 0")
    return out


def _sequence_models(k: _Checker, lengths: bool) -> dict[str, Any]:
    out = {
        "vocab": k.get_integer("vocab", 4, minimum=2),
        "order": k.get_integer("order", 1),
        "seed": k.get_integer("seed", 0, minimum=0),
        "scale": k.get_number("scale", 1.0, positive=True),
        "ref_scale": k.get_number("ref_scale", 0.5, positive=True),
        "old_scale": k.get_number("old_scale", 0.3, positive=True),
        "bases": k.get_names("bases", ("k1", "k2", "k3"), tuple(_estimators.names())),
        "off_policy": bool(k.get("off_policy", True)),
        "truncation": k.get_number("truncation", 1.0, positive=True),
    }
    if lengths:
        values = k.get("lengths", required=True)
        if not (isinstance(values, list) and values and all(isinstance(v, int) for v in values)):
            raise k.error("lengths", f"expected an array of positive integers, got {values!r}")
        out["lengths"] = values
    else:
        out["length"] = k.get_integer("length", 8)
        out["n"] = k.get_integer("n", 100_000, minimum=2)
    return out


_PARSERS: dict[str, Callable[[_Checker], dict[str, Any]]] = {
    "gradient_table": _gradient_table,
    "gaussian_gradient_table": lambda k: {
        **_gradient_keys(k),
        "policy": _normal(k, "policy"),
        "ref": _normal(k, "ref"),
    },
    "gradient_coefficients": lambda k: {
        **_gradient_keys(k),
        "log_ratio": k.get_numbers("log_ratio", {"linspace": [-3.0, 3.0, 241]}),
    },
    "bandit_fixed_points": _fixed_points,
    "sequence_variance": lambda k: _sequence_models(k, lengths=True),
    "sequence_estimators": lambda k: _sequence_models(k, lengths=False),
}
STUDIES: tuple[str, ...] = tuple(_PARSERS)


def parse_study(raw: Mapping[str, Any], source: str = "<config>") -> Study:
    """Validate a study's raw mapping (as read from TOML) into a :class:`Study`."""
    kind = raw.get("study")
    if kind not in _PARSERS:
        raise ConfigError(source, "study", f"expected one of {', '.join(STUDIES)}, got {kind!r}")
    keys = _Checker(source, raw)
    settings = _PARSERS[kind](keys)
    keys.finish()
    name = str(raw.get("name", Path(source).stem if source != "<config>" else kind))
    return Study(kind, name, str(raw.get("title", name)), settings)


def is_study_file(path: str | Path) -> bool:
    """Whether a TOML file is an RL study (it has a top-level ``study`` key) rather than a
    Monte Carlo experiment; unreadable files are not studies (the experiment loader reports
    their errors)."""
    try:
        with Path(path).open("rb") as fh:
            return "study" in tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def load_study(path: str | Path) -> Study:
    """Read and validate ``experiments/<name>.toml``.

    >>> import klest
    >>> root = Path(klest.__file__).parents[1]
    >>> load_study(root / "experiments" / "rl_gradient_coefficients.toml").study
    'gradient_coefficients'
    """
    path = Path(path)
    with path.open("rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(str(path), "", f"invalid TOML: {err}") from None
    return parse_study(raw, str(path))


def _models(s: dict[str, Any], length: int) -> tuple[Any, Any, Any]:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(s["seed"], spawn_key=(0,))))
    return random_models(
        vocab=s["vocab"],
        order=s["order"],
        length=length,
        rng=rng,
        scale=s["scale"],
        ref_scale=s["ref_scale"],
        old_scale=s["old_scale"],
    )


def run_study(study: Study) -> pd.DataFrame:
    """The study's tidy DataFrame (exact computations; Monte Carlo for sequence_estimators);
    ``frame.attrs["study"]`` records the study kind."""
    frame = _run_study(study)
    frame.attrs["study"] = study.study
    return frame


def _run_study(study: Study) -> pd.DataFrame:
    s = study.settings
    kind = study.study
    grad = {"estimators": s.get("estimators"), "placements": s.get("placements")}
    if kind == "gradient_table":
        return gradient_table(s["logits"], s["ref_logits"], **grad)
    if kind == "gaussian_gradient_table":
        return gaussian_gradient_table(s["policy"], s["ref"], **grad)
    if kind == "gradient_coefficients":
        return coefficient_table(s["log_ratio"], **grad)
    if kind == "bandit_fixed_points":
        return fixed_point_table(s["reward"], s["ref_logits"], s["betas"], **grad)
    estimators = default_estimators(
        s["bases"], off_policy=s["off_policy"], truncation=s["truncation"]
    )
    if kind == "sequence_variance":
        policy, ref, old = _models(s, 1)
        return variance_vs_length(
            policy, ref, old if s["off_policy"] else None, lengths=s["lengths"],
            estimators=estimators,
        )  # fmt: skip
    policy, ref, old = _models(s, s["length"])
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(s["seed"], spawn_key=(1,))))
    return compare_sequence_estimators(
        policy, ref, old if s["off_policy"] else None, estimators=estimators, n=s["n"], rng=rng
    )
