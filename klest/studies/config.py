"""Validation of experiment configs: a raw TOML mapping in, checked plain values out.

The format is documented in :mod:`klest.studies.experiment`, which turns the checked values into
frozen dataclasses. Every problem raises :class:`ConfigError`, whose one-line message names
the file and the key path: ``experiments/x.toml: cases[2].p.scale: must be reals in
(0, inf), got -1.0``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from klest.distributions.base import Distribution
from klest.studies.checks import (
    EXAMPLE_DISTRIBUTION,
    ConfigError,
    _all_numbers,
    _Checker,
    _is_number,
    _join,
    _parameter_names,
    _shown,
    _suggest,
)

__all__ = ["LAYOUTS", "QUANTITIES", "ConfigError", "parse"]

TOP_KEYS = ("name", "title", "estimators", "n", "seed", "block_size", "cases", "output")
CASE_KEYS = ("label", "group", "q", "p", "n", "estimators", "sweep")
SWEEP_KEYS = ("param", "values", "linspace", "geomspace", "x")
OUTPUT_KEYS = ("table_columns", "formats", "digits", "layout")
FORMATS = ("csv", "md")
#: ``output.table_columns`` (the table's quantities, rendered by klest.report.tables)
#: -> (Monte Carlo column, standard-error column, exact column, relative):
#: a relative quantity's standard error is divided by |true value|
QUANTITIES: dict[str, tuple[str, str, str, bool]] = {
    "mean": ("mean", "se_mean", "exact_mean", False),
    "bias": ("bias", "se_mean", "exact_bias", False),
    "stdev": ("std", "se_std", "exact_std", False),
    "bias/true": ("rel_bias", "se_mean", "exact_rel_bias", True),
    "stdev/true": ("rel_std", "se_std", "exact_rel_std", True),
}
#: ``output.layout``: one table per case (Schulman's) or one long table
LAYOUTS = ("cases", "long")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _compatible(check: _Checker, q: Distribution, p: Distribution, path: str) -> None:
    for which, dist in (("q", q), ("p", p)):
        if dist.batch_shape:
            raise check.error(
                _join(path, which),
                f"a batch of distributions (batch shape {dist.batch_shape}); give one",
            )
    if q.discrete != p.discrete:
        kinds = {True: "discrete", False: "continuous"}
        raise check.error(
            path,
            f"q ({q.family}) is {kinds[q.discrete]} but p ({p.family}) is "
            f"{kinds[p.discrete]}: their log-ratio compares a mass with a density",
        )
    if q.event_shape != p.event_shape:
        raise check.error(
            path, f"q and p live on different spaces: {q.event_shape} vs {p.event_shape}"
        )


# ---- sweeps ------------------------------------------------------------------------------


def _sweep_values(check: _Checker, sweep: dict[str, Any], path: str) -> tuple[list[Any], str]:
    given = [key for key in ("values", "linspace", "geomspace") if key in sweep]
    if len(given) != 1:
        problem = "needs one of" if not given else "give only one of"
        raise check.error(path, f"{problem} values, linspace or geomspace")
    key = given[0]
    where = _join(path, key)
    spec = sweep[key]
    if key == "values":
        if not isinstance(spec, list) or not spec:
            raise check.expect(spec, where, "a non-empty array of numbers (or of arrays)")
        for j, value in enumerate(spec):
            if not (_is_number(value) or (isinstance(value, list) and _all_numbers(value))):
                raise check.expect(value, _join(where, j), "a number or an array of numbers")
        return [float(v) if _is_number(v) else v for v in spec], where
    if not (isinstance(spec, list) and len(spec) == 3):
        raise check.expect(spec, where, "[start, stop, num]")
    start, stop, num = spec
    for j, value in enumerate((start, stop)):
        if not _is_number(value) or not math.isfinite(value):
            raise check.expect(value, _join(where, j), "a finite number")
    check.integer(num, _join(where, 2), 1)
    if key == "geomspace" and (start == 0 or stop == 0 or (start > 0) != (stop > 0)):
        raise check.error(where, f"start and stop must be non-zero with one sign, got {spec}")
    space = np.linspace if key == "linspace" else np.geomspace
    return [float(v) for v in space(float(start), float(stop), num)], where


def _expand_sweep(
    check: _Checker, entry: dict[str, Any], path: str, classes: dict[str, type[Distribution]]
) -> list[dict[str, Any]]:
    """One case dict (label, q, p, sweep_param, sweep_value) per value of the sweep."""
    spath = _join(path, "sweep")
    sweep = check.table(entry["sweep"], spath, SWEEP_KEYS)
    if "param" not in sweep:
        raise check.error(_join(spath, "param"), 'missing; e.g. param = "p.loc"')
    param = sweep["param"]
    if not isinstance(param, str):
        raise check.expect(param, _join(spath, "param"), 'a string like "p.loc"')
    match = re.fullmatch(r"([qp])\.(\w+)", param)
    if not match:
        raise check.error(
            _join(spath, "param"), f"must be 'q.<parameter>' or 'p.<parameter>', got {param!r}"
        )
    which, name = match.groups()
    allowed = sorted(_parameter_names(classes[which]))
    if name not in allowed:
        raise check.error(
            _join(spath, "param"),
            f"{name!r} is not a parameter of {classes[which].family}" + _suggest(name, allowed),
        )
    if name in entry[which]:
        raise check.error(
            _join(_join(path, which), name),
            f"also set by {spath} (param = {param!r}); remove it here: the sweep sets it",
        )
    values, vpath = _sweep_values(check, sweep, spath)
    if "x" in sweep:
        xs = sweep["x"]
        if not (isinstance(xs, list) and all(_is_number(v) for v in xs)):
            raise check.expect(xs, _join(spath, "x"), "an array of numbers")
        if len(xs) != len(values):
            raise check.error(
                _join(spath, "x"), f"has {len(xs)} entries but the sweep has {len(values)} values"
            )
        xs = [float(v) for v in xs]
    elif all(_is_number(v) for v in values):
        xs = values
    else:
        raise check.error(
            _join(spath, "x"),
            "missing: the swept values are arrays, so give the numbers to record as sweep_value",
        )
    template = entry.get("label", "{param} = {x:g}")
    cases = []
    for j, (value, x) in enumerate(zip(values, xs, strict=True)):
        try:
            label = template.format(value=value, x=x, param=param, i=j)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise check.error(
                _join(path, "label"),
                f"cannot fill the template {template!r} for value {_shown(value)} ({err!r}); "
                "placeholders: {value}, {x}, {param}, {i}",
            ) from None
        tables = {key: dict(entry[key]) for key in ("q", "p")}
        tables[which][name] = value
        built = {}
        for key in ("q", "p"):
            params = {k: v for k, v in tables[key].items() if k != "family"}
            where = {name: _join(vpath, j) if "values" in sweep else vpath} if key == which else {}
            built[key] = check.distribution(classes[key], params, _join(path, key), where)
        cases.append({"label": label, **built, "sweep_param": param, "sweep_value": x})
    return cases


# ---- the whole config ------------------------------------------------------------------


def _case_entries(check: _Checker, entry: Any, k: int, defaults: dict[str, Any]):
    path = _join("cases", k)
    if isinstance(entry, dict) and "seed" in entry:
        raise check.error(
            _join(path, "seed"),
            "not allowed: case i draws from SeedSequence(seed, spawn_key=(i, block)); "
            "set the top-level seed",
        )
    entry = check.table(entry, path, CASE_KEYS)
    for which in ("q", "p"):
        if which not in entry:
            raise check.error(_join(path, which), f"missing; e.g. {which} = {EXAMPLE_DISTRIBUTION}")
    classes = {which: check.family(entry[which], _join(path, which)) for which in ("q", "p")}
    for which in ("q", "p"):
        for key, value in entry[which].items():
            if key != "family":
                check.parameter(classes[which], key, value, _join(_join(path, which), key))
    n = check.integer(entry["n"], _join(path, "n"), 1) if "n" in entry else defaults["n"]
    names = (
        check.estimators(entry["estimators"], _join(path, "estimators"))
        if "estimators" in entry
        else defaults["estimators"]
    )
    label = check.string(entry["label"], _join(path, "label")) if "label" in entry else None
    group = check.string(entry["group"], _join(path, "group")) if "group" in entry else None
    if "sweep" in entry:
        cases = _expand_sweep(check, entry, path, classes)
        group = group or cases[0]["sweep_param"]
    else:
        built = {}
        for which in ("q", "p"):
            params = {key: v for key, v in entry[which].items() if key != "family"}
            built[which] = check.distribution(classes[which], params, _join(path, which), {})
        label = label or f"case {k}"
        cases = [{"label": label, **built, "sweep_param": None, "sweep_value": None}]
    for case in cases:
        _compatible(check, case["q"], case["p"], path)
        case.update(n=n, estimators=names, group=group or case["label"], entry=k)
    return cases


def _output(check: _Checker, value: Any) -> dict[str, Any]:
    table = check.table(value, "output", OUTPUT_KEYS)
    out: dict[str, Any] = {}
    if "table_columns" in table:
        out["table_columns"] = check.choices(
            table["table_columns"], "output.table_columns", list(QUANTITIES)
        )
        if not out["table_columns"]:
            raise check.error("output.table_columns", "must not be empty")
    if "formats" in table:
        out["formats"] = check.choices(table["formats"], "output.formats", FORMATS)
    if "digits" in table:
        out["digits"] = check.integer(table["digits"], "output.digits", 1)
        if out["digits"] > 17:
            raise check.error("output.digits", f"must be <= 17, got {out['digits']}")
    if "layout" in table:
        layout = check.string(table["layout"], "output.layout")
        if layout not in LAYOUTS:
            raise check.error(
                "output.layout", f"unknown layout {layout!r}" + _suggest(layout, LAYOUTS)
            )
        out["layout"] = layout
    return out


def parse(mapping: Any, source: str, default_name: str | None = None) -> dict[str, Any]:
    """Check a raw config mapping; return plain values for :class:`ExperimentConfig`.

    ``default_name`` (the file's stem) is the name when the mapping has none.
    """
    check = _Checker(source)
    if not isinstance(mapping, dict):
        raise check.expect(mapping, "", "a table of config keys")
    check.table(mapping, "", TOP_KEYS)
    if "name" in mapping:
        name = check.string(mapping["name"], "name")
    elif default_name is not None:
        name = default_name
    else:
        raise check.error("name", "missing (required when the config does not come from a file)")
    if not NAME_PATTERN.match(name):
        raise check.error(
            "name", f"must be letters, digits, '.', '_' or '-' (it names a directory), got {name!r}"
        )
    title = check.string(mapping["title"], "title") if "title" in mapping else name
    for key in ("estimators", "n"):
        if key not in mapping:
            raise check.error(key, "missing")
    defaults = {
        "estimators": check.estimators(mapping["estimators"], "estimators"),
        "n": check.integer(mapping["n"], "n", 1),
    }
    seed = check.integer(mapping["seed"], "seed", 0) if "seed" in mapping else 0
    block = (
        check.integer(mapping["block_size"], "block_size", 1) if "block_size" in mapping else None
    )
    entries = mapping.get("cases")
    if entries is None:
        raise check.error("cases", "missing; add at least one [[cases]] table")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise check.expect(entries, "cases", "an array of tables ([[cases]])")
    if not entries:
        raise check.error("cases", "must not be empty; add at least one [[cases]] table")
    cases: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for k, entry in enumerate(entries):
        for case in _case_entries(check, entry, k, defaults):
            if case["label"] in seen:
                raise check.error(
                    _join(_join("cases", k), "label"),
                    f"label {case['label']!r} is given to two cases (also to case "
                    f"{seen[case['label']]}); labels identify cases in tables",
                )
            case["index"] = len(cases)
            seen[case["label"]] = case["index"]
            cases.append(case)
    output = _output(check, mapping["output"]) if "output" in mapping else {}
    return {
        "name": name,
        "title": title,
        **defaults,
        "seed": seed,
        "block_size": block,
        "cases": cases,
        "output": output,
    }
