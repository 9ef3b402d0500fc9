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
offpolicy_bias             gradients.offpolicy_tables.offpolicy…  plot_offpolicy_bias
sequence_gradients         sequence.tables (three tables)        plot_sequence_gradients
truncation_bias            studies.truncation_study              plots_truncation (fig14)
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest import estimators as _estimators
from klest.distributions import Normal
from klest.gradients.coefficients import DIFFERENTIABLE, PLACEMENTS
from klest.gradients.offpolicy import penalty_gradient
from klest.gradients.offpolicy_tables import (
    behaviour_at_kl,
    default_releases,
    offpolicy_bias_table,
)
from klest.gradients.tables import (
    coefficient_table,
    fixed_point_table,
    gaussian_gradient_table,
    gradient_table,
)
from klest.rl.penalty import release as _release
from klest.sequence import (
    TabularAR,
    compare_sequence_estimators,
    default_estimators,
    random_models,
    variance_vs_length,
)
from klest.sequence.gradient import AGGREGATIONS as SEQ_AGGREGATIONS
from klest.sequence.gradient import MAX_RESPONSES
from klest.sequence.gradient import PLACEMENTS as SEQ_PLACEMENTS
from klest.sequence.tables import (
    aggregation_table,
    configurations,
    count_responses,
    responses,
    sequence_gradient_table,
)
from klest.sequence.tables import fixed_point_table as sequence_fixed_point_table
from klest.studies.checks import ConfigError, _Checker, _suggest
from klest.studies.truncation_study import parse_truncation, truncation_frame

__all__ = [
    "STUDIES",
    "Study",
    "is_study_file",
    "load_study",
    "offpolicy_variant_table",
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


def _kl_targets(k: _Checker, logits: np.ndarray, direction: np.ndarray) -> np.ndarray:
    targets = k.get_numbers("kl_targets")
    if targets.ndim != 1 or np.any(targets < 0) or not np.all(np.diff(targets) > 0):
        raise k.error("kl_targets", f"expected increasing numbers >= 0, got {targets.tolist()}")
    if targets[0] != 0.0:
        raise k.error("kl_targets", "must start with 0 (the on-policy point, mu = pi)")
    try:  # the largest must be reachable along the direction (KL(mu||pi) is bounded there)
        behaviour_at_kl(logits, direction, float(targets[-1]))
    except ValueError as err:
        raise k.error("kl_targets", str(err)) from None
    return targets


def _releases(k: _Checker) -> list[str]:
    valid = default_releases()
    value = k.get("releases", valid)
    if not isinstance(value, list) or not value:
        raise k.error("releases", f"expected a non-empty array of releases, got {value!r}")
    names = []
    for i, item in enumerate(value):
        try:  # "trl" is the newest mirrored release: name it as "trl@1.9.0"
            rel = _release(item)
        except ValueError as err:
            raise k.error(f"releases[{i}]", str(err)) from None
        name = f"{rel.framework}@{rel.version}"
        if name not in valid:
            raise k.error(
                f"releases[{i}]",
                f"{name}'s default kind is not a per-token penalty" + _suggest(name, valid),
            )
        if name in names:
            raise k.error(f"releases[{i}]", f"{name} is listed twice")
        names.append(name)
    return names


def _offpolicy(k: _Checker) -> dict[str, Any]:
    """Policy logits z ~ scale * N(0, 1) (positions x vocab), reference z + ref_scale * N(0, 1),
    behaviour direction d ~ N(0, 1): drawn in this order from one PCG64(seed) stream."""
    rng = np.random.Generator(np.random.PCG64(k.get_integer("seed", 0, minimum=0)))
    shape = (k.get_integer("positions", 16), k.get_integer("vocab", 32, minimum=2))
    scale = k.get_number("scale", 1.0, positive=True)
    ref_scale = k.get_number("ref_scale", 0.5, positive=True)
    logits = scale * rng.standard_normal(shape)
    ref_logits = logits + ref_scale * rng.standard_normal(shape)
    direction = rng.standard_normal(shape)
    targets = _kl_targets(k, logits, direction)
    summary = k.get_number("summary_kl", 0.1, positive=True)
    if not np.any(targets == summary):
        raise k.error("summary_kl", f"must be one of kl_targets, got {summary!r}")
    return {
        "logits": logits,
        "ref_logits": ref_logits,
        "direction": direction,
        "kl_targets": targets.tolist(),
        "releases": _releases(k),
        "summary_kl": summary,
    }


def _eos(k: _Checker, key: str, vocab: int) -> int | None:
    value = k.get(key, vocab - 1)
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
        raise k.error(key, f"expected a token in [0, {vocab}) or false (no eos), got {value!r}")
    return int(value)


def _seq_fixed_points(k: _Checker, estimators: list[str]) -> dict[str, Any]:
    """The [fixed_points] table: a tree reference (order = length - 1) with logits
    ref_scale * N(0, 1), then R(x) = reward_scale * N(0, 1) per response (sorted order), from
    one PCG64(seed) stream."""
    raw = k.get("fixed_points", {})
    if not isinstance(raw, dict):
        raise k.error("fixed_points", f"expected a table, got {raw!r}")
    sub = _Checker(k.source, raw)
    sub.used = set()
    try:
        vocab = sub.get_integer("vocab", 3, minimum=2)
        length = sub.get_integer("length", 3, minimum=2)
        eos = _eos(sub, "eos", vocab)
        rng = np.random.Generator(np.random.PCG64(sub.get_integer("seed", 1, minimum=0)))
        ref = TabularAR.random(vocab=vocab, order=length - 1, length=length, rng=rng, eos=eos,
                               scale=sub.get_number("ref_scale", 1.0, positive=True))  # fmt: skip
        if count_responses(ref) > 4096:
            raise sub.error("length", f"{count_responses(ref)} responses; at most 4096")
        n = len(responses(ref))
        reward = sub.get_number("reward_scale", 1.0, positive=True) * rng.standard_normal(n)
        betas = sub.get_numbers("betas", [0.5, 2.0])
        if betas.ndim != 1 or np.any(betas <= 0):
            raise sub.error("betas", f"expected numbers > 0, got {betas.tolist()}")
        aggregations = sub.get_names("aggregations", ("seq_mean_token_sum",), SEQ_AGGREGATIONS)
        out = {
            "ref": ref, "reward": reward, "betas": betas.tolist(),
            "configs": configurations(SEQ_PLACEMENTS, aggregations, estimators),
            "step": sub.get_number("step", 1.0, positive=True),
            "descent_steps": sub.get_integer("descent_steps", 10, minimum=0),
            "tol": sub.get_number("tol", 1e-10, positive=True),
        }  # fmt: skip
        unknown = sorted(set(raw) - sub.used)
        if unknown:
            raise sub.error(unknown[0], "unknown key of [fixed_points]")
    except ConfigError as err:
        raise ConfigError(err.source, f"fixed_points.{err.key}", err.problem) from None
    return out


def _sequence_gradients(k: _Checker) -> dict[str, Any]:
    """Policy logits scale * N(0, 1) with eos_logit added to the eos column, reference = policy
    + ref_scale * N(0, 1): one PCG64(seed) stream, in this order."""
    vocab = k.get_integer("vocab", 3, minimum=2)
    order = k.get_integer("order", 1)
    eos = _eos(k, "eos", vocab)
    rng = np.random.Generator(np.random.PCG64(k.get_integer("seed", 0, minimum=0)))
    pi = TabularAR.random(vocab=vocab, order=order, length=1, rng=rng, eos=eos,
                          scale=k.get_number("scale", 1.0, positive=True))  # fmt: skip
    logits = np.array(pi.logits)
    shift = k.get_number("eos_logit", 0.0)
    if eos is not None:
        logits[..., eos] += shift
    pi = TabularAR(logits=logits, length=1, eos=eos)
    ref = pi.perturbed(rng, k.get_number("ref_scale", 0.5, positive=True))
    values = k.get("lengths", required=True)
    ok = (
        isinstance(values, list)
        and values
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    )
    if not ok or values != sorted(set(values)):
        raise k.error("lengths", f"expected increasing positive integers, got {values!r}")
    largest = count_responses(pi.with_length(values[-1]))
    if largest > MAX_RESPONSES:
        raise k.error("lengths", f"{values[-1]} gives {largest} responses; the covariance "
                                 f"trace enumerates at most {MAX_RESPONSES}")  # fmt: skip
    estimators = k.get_names("estimators", ("k1", "k2", "k3"), ("k1", "k2", "k3"))
    return {
        "pi": pi, "ref": ref, "lengths": values, "estimators": estimators,
        "placements": k.get_names("placements", SEQ_PLACEMENTS, SEQ_PLACEMENTS),
        "aggregations": k.get_names("aggregations", SEQ_AGGREGATIONS, SEQ_AGGREGATIONS),
        "fixed_points": _seq_fixed_points(k, estimators),
    }  # fmt: skip


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
    "offpolicy_bias": _offpolicy,
    "sequence_gradients": _sequence_gradients,
    "truncation_bias": parse_truncation,
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
    ``frame.attrs["study"]`` records the study kind (and ``"summary_kl"`` for offpolicy_bias)."""
    frame = _run_study(study)
    frame.attrs["study"] = study.study
    if study.study == "offpolicy_bias":
        frame.attrs["summary_kl"] = study.settings["summary_kl"]
    if study.study == "sequence_gradients":
        frame.attrs["pi"] = repr(study.settings["pi"]).replace(", length=1", "")
        frame.attrs["bandit"] = repr(study.settings["fixed_points"]["ref"])
    return frame


def offpolicy_variant_table(
    study: Study, variants: Sequence[tuple[str, str, Mapping[str, Any]]]
) -> pd.DataFrame:
    """The off-policy study's rows for KL terms other than the defaults: each (release, kind,
    arguments of :func:`~klest.gradients.penalty_gradient`, e.g. ``{"weighting":
    "detached"}`` or a framework option) at every KL(μ‖π) target of ``study``, with a
    ``variant`` column naming the arguments ("default" when there are none).

    >>> study = parse_study({"study": "offpolicy_bias", "positions": 2, "vocab": 4,
    ...     "kl_targets": [0.0, 0.05], "summary_kl": 0.05, "releases": ["trl"]})
    >>> df = offpolicy_variant_table(study, [("trl", "grpo", {"use_bias_correction_kl": True})])
    >>> df["release"].iloc[0], df["variant"].iloc[0], df["verdict"].tolist()
    ('trl@1.9.0', 'use_bias_correction_kl=True', ['KL(pi||ref)', 'KL(pi||ref)'])
    """
    s = study.settings
    if study.study != "offpolicy_bias":
        raise ValueError(f"an offpolicy_bias study is needed, got {study.study!r}")
    z, z_ref = s["logits"], s["ref_logits"]
    behaviours = [behaviour_at_kl(z, s["direction"], t) for t in s["kl_targets"]]
    rows = []
    for framework, kind, arguments in variants:
        rel = _release(framework)
        variant = ", ".join(f"{key}={value}" for key, value in arguments.items()) or "default"
        for target, z_mu in zip(s["kl_targets"], behaviours, strict=True):
            z_mu_or_none = None if target == 0 else z_mu
            g = penalty_gradient(z, z_ref, framework=framework, kind=kind,
                                 behaviour_logits=z_mu_or_none, **arguments)  # fmt: skip
            rows.append(
                {
                    "release": f"{rel.framework}@{rel.version}",
                    "framework": rel.framework,
                    "version": rel.version,
                    "commit": rel.commit,
                    "kind": kind,
                    "variant": variant,
                    "placement": g.placement,
                    "kl_mu_pi": float(np.mean(g.kl["KL(mu||pi)"])),
                    "relative_bias": g.relative_bias,
                    "verdict": g.verdict,
                }
            )
    return pd.DataFrame(rows)


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
    if kind == "sequence_gradients":
        return _sequence_frame(s)
    if kind == "truncation_bias":
        return truncation_frame(s)
    if kind == "offpolicy_bias":
        return offpolicy_bias_table(s["logits"], s["ref_logits"], s["direction"],
                                    kl_targets=s["kl_targets"], releases=s["releases"])  # fmt: skip
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


#: the aggregation table's lengths: those whose eos-free model has at most this many responses
AGGREGATION_RESPONSES = 4096


def _sequence_frame(s: dict[str, Any]) -> pd.DataFrame:
    """The three tables of a sequence_gradients study, one frame with a ``table`` column:
    "gradient" (:func:`~klest.sequence.tables.sequence_gradient_table`), "aggregation"
    (:func:`~klest.sequence.tables.aggregation_table`), "fixed_point"
    (:func:`~klest.sequence.tables.fixed_point_table`)."""
    pi, ref, lengths = s["pi"], s["ref"], s["lengths"]
    fp = s["fixed_points"]
    parts = [
        sequence_gradient_table(pi, ref, lengths, placements=s["placements"],
                                aggregations=s["aggregations"],
                                estimators=s["estimators"]).assign(table="gradient"),
        aggregation_table(pi, ref, [t for t in lengths if pi.vocab**t <= AGGREGATION_RESPONSES]
                          ).assign(table="aggregation"),
        sequence_fixed_point_table(fp["ref"], fp["reward"], fp["betas"], fp["configs"],
                                   step=fp["step"], descent_steps=fp["descent_steps"],
                                   tol=fp["tol"]).assign(table="fixed_point"),
    ]  # fmt: skip
    frame = pd.concat(parts, ignore_index=True)
    return frame[["table", *[c for c in frame.columns if c != "table"]]]
