"""The ``truncation_bias`` study: exact bias of the logged KL and of the k3 penalty when the
tokens come from truncated sampling (top-p / top-k), for a few policy pairs.

A config (``experiments/rl_truncation.toml``) names a vocabulary size, the ``top_p`` and
``top_k`` values to sweep (each alone), the engine's ``temperature`` and ``convention``, the
``estimators`` and ``modes`` (:data:`klest.rl.truncation.MODES`), and ``[[pairs]]``: each a
``name``, a ``policy`` and a ``reference``, whose logits over tokens i = 1..V are

    z_i = -zipf * log(i) + head * [i = 1] + noise * N(0, 1),

(``zipf`` >= 0, default 1; ``head`` the logit added to the first token, default 0;
``noise`` the standard deviation of Gaussian logit noise, default 0, drawn from
``PCG64(SeedSequence(seed, spawn_key=(pair, 0 | 1)))`` for the policy | reference). The
frame (:func:`truncation_frame`) is that of :func:`klest.rl.truncation.truncation_sweep`
with the columns ``pair``, ``rule`` ("top_p" | "top_k") and ``value`` in front; exact, no
sampling (about 20 ms per setting at V = 32,000).

>>> from klest.studies.checks import _Checker
>>> raw = {"study": "truncation_bias", "vocab": 100, "top_p": [0.9], "top_k": [5],
...        "pairs": [{"name": "z", "policy": {"zipf": 1.2}, "reference": {}}]}
>>> frame = truncation_frame(parse_truncation(_Checker("<config>", raw)))
>>> sorted(set(frame["rule"])), sorted(set(frame["mode"]))
(['top_k', 'top_p'], ['kept_mask', 'raw', 'renormalised'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from klest.distributions.truncation import CONVENTIONS, GREEDY_TEMPERATURE, check_settings
from klest.rl.truncation import MODES, truncation_sweep
from klest.studies.checks import _Checker

__all__ = ["PAIR_KEYS", "pair_logits", "parse_truncation", "truncation_frame"]

#: the keys of a policy / reference table of ``[[pairs]]``
PAIR_KEYS = ("zipf", "head", "noise")


def pair_logits(spec: dict[str, float], vocab: int, rng: np.random.Generator) -> np.ndarray:
    """The logits of one side of a pair (module docstring); ``rng`` is drawn only when
    ``noise`` > 0.

    >>> pair_logits({"zipf": 1.0, "head": 2.0}, 3, np.random.default_rng(0)).round(4).tolist()
    [2.0, -0.6931, -1.0986]
    """
    z = -spec.get("zipf", 1.0) * np.log(np.arange(1, vocab + 1, dtype=np.float64))
    z[0] += spec.get("head", 0.0)
    if spec.get("noise", 0.0) > 0:
        z += spec["noise"] * rng.standard_normal(vocab)
    return z


def _side(k: _Checker, value: Any, path: str) -> dict[str, float]:
    table = k.table(value, path, PAIR_KEYS)
    out = {}
    for key, number in table.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise k.expect(number, f"{path}.{key}", "a number")
        if not np.isfinite(number) or (key != "head" and number < 0):
            raise k.error(f"{path}.{key}", f"must be finite and >= 0, got {number!r}")
        out[key] = float(number)
    return out


def _pairs(k: _Checker, vocab: int, seed: int) -> list[dict[str, Any]]:
    value = k.get("pairs", required=True)
    if not isinstance(value, list) or not value:
        raise k.expect(value, "pairs", "a non-empty array of tables [[pairs]]")
    out = []
    for i, item in enumerate(value):
        path = f"pairs[{i}]"
        table = k.table(item, path, ("name", "policy", "reference"))
        for key in ("name", "policy", "reference"):
            if key not in table:
                raise k.error(f"{path}.{key}", "missing (required)")
        name = k.string(table["name"], f"{path}.name")
        if name in [p["name"] for p in out]:
            raise k.error(f"{path}.name", f"{name!r} is listed twice")
        sides = [_side(k, table[key], f"{path}.{key}") for key in ("policy", "reference")]
        logits = [
            pair_logits(side, vocab, np.random.Generator(np.random.PCG64(
                np.random.SeedSequence(seed, spawn_key=(i, j))))) for j, side in enumerate(sides)
        ]  # fmt: skip
        out.append({"name": name, "policy": sides[0], "reference": sides[1],
                    "logits": logits[0], "ref_logits": logits[1]})  # fmt: skip
    return out


def _sweep(k: _Checker, key: str, integer: bool) -> list[Any]:
    value = k.get(key, [])
    if not isinstance(value, list):
        raise k.expect(value, key, "an array")
    out = []
    for i, item in enumerate(value):
        try:
            checked = check_settings(**{key: item})[key]
        except (TypeError, ValueError) as err:
            raise k.error(f"{key}[{i}]", str(err)) from None
        if checked in out:
            raise k.error(f"{key}[{i}]", f"{item!r} is listed twice")
        out.append(int(checked) if integer else checked)
    return sorted(out)


def parse_truncation(k: _Checker) -> dict[str, Any]:
    """The validated settings of a truncation_bias config (errors name the key)."""
    vocab = k.get_integer("vocab", 32_000, minimum=2)
    seed = k.get_integer("seed", 0, minimum=0)
    convention = k.get("convention", "vllm")
    if convention not in CONVENTIONS:
        raise k.error("convention", f"expected one of {CONVENTIONS}, got {convention!r}")
    temperature = k.get_number("temperature", 1.0, positive=True)
    try:
        check_settings(temperature=temperature, convention=convention)
    except ValueError as err:
        raise k.error("temperature", str(err)) from None
    if temperature < GREEDY_TEMPERATURE:
        raise k.error("temperature", f"below {GREEDY_TEMPERATURE:g} vLLM samples greedily")
    estimators = k.estimators(k.get("estimators", ["k1", "k3"]), "estimators")
    out = {
        "vocab": vocab, "seed": seed, "convention": convention, "temperature": temperature,
        "estimators": list(estimators), "modes": k.get_names("modes", MODES, MODES),
        "top_p": _sweep(k, "top_p", integer=False), "top_k": _sweep(k, "top_k", integer=True),
    }  # fmt: skip
    if not out["top_p"] and not out["top_k"]:
        raise k.error("top_p", "give top_p and/or top_k values to sweep")
    out["pairs"] = _pairs(k, vocab, seed)
    return out


def truncation_frame(s: dict[str, Any]) -> pd.DataFrame:
    """The study's tidy frame: one row per pair x rule x value x mode x estimator."""
    parts = []
    for pair in s["pairs"]:
        for rule in ("top_p", "top_k"):
            if not s[rule]:
                continue
            frame = truncation_sweep(
                pair["logits"], pair["ref_logits"], [{rule: v} for v in s[rule]],
                estimators=s["estimators"], modes=s["modes"], temperature=s["temperature"],
                convention=s["convention"],
            )  # fmt: skip
            frame.insert(0, "value", frame[rule].astype(float))
            frame.insert(0, "rule", rule)
            frame.insert(0, "pair", pair["name"])
            parts.append(frame)
    return pd.concat(parts, ignore_index=True)
