"""The one config validator: checks of raw config values that raise ConfigError at a key path.

Used by klest.studies.config (experiment configs, checked by key path) and
klest.studies.rl_studies (flat study configs, read key by key with ``get_*`` and closed by
:meth:`_Checker.finish`). Type and value checks, "did you mean" suggestions (difflib), and the
construction of distributions with their :class:`klest.errors.ParameterError` mapped back to
the key that caused it.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from klest import estimators as _estimators
from klest.distributions.base import FAMILIES, Distribution
from klest.errors import ParameterError, check_integer

__all__ = ["ConfigError"]

EXAMPLE_DISTRIBUTION = '{ family = "normal", loc = 0.0, scale = 1.0 }'


class ConfigError(ValueError):
    """An invalid experiment config; the message names the file and the key path.

    Public as ``klest.studies.experiment.ConfigError``; ``source``, ``key`` and ``problem`` hold the
    three parts of the message.

    >>> str(ConfigError("x.toml", "cases[0].n", "must be >= 1, got 0"))
    'x.toml: cases[0].n: must be >= 1, got 0'
    """

    __module__ = "klest.studies.experiment"

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    """How TOML calls the type of ``value`` (for "expected X, got Y" messages)."""
    for types, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        ((_dt.date, _dt.time), "date/time"),
    ):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close and len(word) >= 3:  # a prefix: "table" -> "table_columns"
        close = [c for c in choices if c.startswith(word) or word.startswith(c)][:1]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(choices)}"


class _Checker:
    """Type and value checks that raise ConfigError at a key path of one source.

    With ``raw`` (a flat mapping, as an RL study config), the ``get_*`` methods read a key of
    it and check its value, and :meth:`finish` rejects the keys nobody read.
    """

    def __init__(self, source: str, raw: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.raw: Mapping[str, Any] = {} if raw is None else raw
        self.used = {"study", "name", "title"}

    def error(self, path: str, problem: str) -> ConfigError:
        return ConfigError(self.source, path, problem)

    def expect(self, value: Any, path: str, what: str) -> ConfigError:
        return self.error(path, f"expected {what}, got {_kind(value)} {_shown(value)}")

    def table(self, value: Any, path: str, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.expect(value, path, "a table")
        for key in value:
            if key not in allowed:
                raise self.error(_join(path, key), "unknown key" + _suggest(key, allowed))
        return value

    def integer(self, value: Any, path: str, minimum: int, *, compact: bool = False) -> int:
        """``value`` as an int >= ``minimum`` (:func:`klest.errors.check_integer`); else a
        ConfigError saying what is wrong, or (``compact``) "expected an integer >= k"."""
        try:
            return check_integer(path, value, minimum)
        except ValueError:
            pass
        if compact:
            raise self.error(path, f"expected an integer >= {minimum}, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            raise self.error(path, f"expected an integer, got float {value!r} (write {int(value)})")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.expect(value, path, "an integer")
        raise self.error(path, f"must be >= {minimum}, got {value}")

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.expect(value, path, "a string")
        if not value.strip():
            raise self.error(path, "must not be empty")
        return value

    def choices(self, value: Any, path: str, allowed: Sequence[str]) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.expect(value, path, f"an array of strings from {list(allowed)}")
        for j, item in enumerate(value):
            if not isinstance(item, str):
                raise self.expect(item, _join(path, j), "a string")
            if item not in allowed:
                raise self.error(
                    _join(path, j), f"unknown value {item!r}" + _suggest(item, allowed)
                )
            if item in value[:j]:
                raise self.error(_join(path, j), f"{item!r} is listed twice")
        return tuple(value)

    def estimators(self, value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.expect(value, path, 'an array of estimator names, e.g. ["k1", "k2", "k3"]')
        if not value:
            raise self.error(path, 'must not be empty; e.g. ["k1", "k2", "k3"]')
        names: list[str] = []
        for j, item in enumerate(value):
            where = _join(path, j)
            if not isinstance(item, str):
                raise self.expect(item, where, "an estimator name (string)")
            try:
                canonical = _estimators.get(item).name
            except KeyError:
                known = _estimators.names(include_aliases=True)
                raise self.error(
                    where, f"unknown estimator {item!r}" + _suggest(item, known)
                ) from None
            if canonical in names:
                raise self.error(where, f"{item!r} is {canonical}, which is already listed")
            names.append(canonical)
        return tuple(names)

    # ---- distributions -------------------------------------------------------------

    def family(self, table: Any, path: str) -> type[Distribution]:
        if not isinstance(table, dict):
            raise self.expect(table, path, f"a distribution table like {EXAMPLE_DISTRIBUTION}")
        if "family" not in table:
            raise self.error(_join(path, "family"), "missing (see `klest list` for the families)")
        family = table["family"]
        if not isinstance(family, str):
            raise self.expect(family, _join(path, "family"), "a family name (string)")
        if family not in FAMILIES:
            raise self.error(
                _join(path, "family"),
                f"unknown family {family!r}" + _suggest(family, sorted(FAMILIES)),
            )
        cls = FAMILIES[family]
        allowed = sorted(_parameter_names(cls))
        for key in table:
            if key != "family" and key not in allowed:
                raise self.error(
                    _join(path, key), f"unknown parameter of {family}" + _suggest(key, allowed)
                )
        return cls

    def parameter(self, cls: type[Distribution], name: str, value: Any, path: str) -> Any:
        vector = {spec.name: spec.vector for spec in cls.params}.get(name, False)
        if _is_number(value):
            return value
        if vector and isinstance(value, list) and _all_numbers(value):
            return value
        raise self.expect(value, path, "an array of numbers" if vector else "a number")

    def distribution(
        self, cls: type[Distribution], params: dict[str, Any], path: str, where: dict[str, str]
    ) -> Distribution:
        """Build ``cls(**params)``; ``where`` maps a parameter to the key path that set it."""
        missing = [name for name in _required(cls) if name not in params]
        if missing:
            needed = ", ".join(_required(cls))
            raise self.error(_join(path, missing[0]), f"missing ({cls.family} needs {needed})")
        try:
            return cls(**params)
        except ParameterError as err:
            name, problem = err.parameter, err.problem
            if name not in params:
                raise self.error(path, str(err)) from None
            if name in where:  # set by a sweep: point at the sweep, name the parameter
                which = path.rsplit(".", 1)[-1]
                problem = f"{which}.{name} = {_shown(params[name])}: {problem}"
                raise self.error(where[name], problem) from None
            raise self.error(_join(path, name), problem) from None
        except ValueError as err:
            raise self.error(path, str(err)) from None

    # ---- flat mappings (RL study configs): read a key, check its value ---------------

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.raw:
            if required:
                raise self.error(key, "missing (required)")
            return default
        return self.raw[key]

    def get_number(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self.get(key, default)
        if not _is_number(value):
            raise self.error(key, f"expected a number, got {value!r}")
        if positive and not value > 0:
            raise self.error(key, f"must be > 0, got {value!r}")
        return float(value)

    def get_integer(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        value = self.get(key, default, required=default is None)
        return self.integer(value, key, minimum, compact=True)

    def get_numbers(self, key: str, default: Any = None) -> np.ndarray:
        """An array of numbers, or {linspace | geomspace = [start, stop, num]}."""
        value = self.get(key, default, required=default is None)
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in ("linspace", "geomspace"):
                raise self.error(key, "expected an array or {linspace|geomspace = [a, b, n]}")
            how, args = next(iter(value.items()))
            if not (isinstance(args, list) and len(args) == 3):
                raise self.error(f"{key}.{how}", f"expected [start, stop, num], got {args!r}")
            try:
                return getattr(np, how)(float(args[0]), float(args[1]), int(args[2]))
            except (TypeError, ValueError) as err:
                raise self.error(f"{key}.{how}", str(err)) from None
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise self.error(key, f"expected numbers, got {value!r}") from None
        if arr.size == 0 or not np.all(np.isfinite(arr)):
            raise self.error(key, f"expected finite numbers, got {value!r}")
        return arr

    def get_names(self, key: str, default: tuple[str, ...], valid: tuple[str, ...]) -> list[str]:
        value = self.get(key, list(default))
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty array of names, got {value!r}")
        for i, item in enumerate(value):
            if item not in valid:
                raise self.error(f"{key}[{i}]", f"unknown {item!r}; valid: {', '.join(valid)}")
        return list(value)

    def finish(self) -> None:
        """Reject the first (sorted) key of ``raw`` that no ``get`` read."""
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key for study " + repr(self.raw["study"]))


def _all_numbers(value: Any) -> bool:
    if isinstance(value, list):
        return all(_all_numbers(item) for item in value)
    return _is_number(value)


def _parameter_names(cls: type[Distribution]) -> set[str]:
    keys = getattr(cls, "constructor_keys", None)
    return set(keys()) if keys is not None else {spec.name for spec in cls.params}


def _required(cls: type[Distribution]) -> list[str]:
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, param in signature.parameters.items()
        if param.kind is param.KEYWORD_ONLY and param.default is param.empty
    ]
