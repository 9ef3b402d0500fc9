"""The pure-NumPy fallback of klest.native against the compiled kernels, on the same inputs.

The sampler, the inverse CDF, k3 and expm1 must give the compiled bits; the accumulator and
merge too (klest/native/fallback_kernels.py: the same IEEE operations in the same order, so
the bound is 0, stricter than the issue's 1e-12 relative). The selection by KLEST_NATIVE,
and klest without its compiled library, run in subprocesses. ~10 s in all (one core).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import klest
from klest import native
from klest.native import checks, fallback, fallback_kernels, fallback_sampler

HEADER = Path(klest.__file__).parent / "native" / "csrc" / "ziggurat_tables.h"
compiled = fallback.COMPILED
needs_compiled = pytest.mark.skipif(
    compiled is None, reason="compares against the compiled library, which is not in use"
)
_MASK64 = (1 << 64) - 1


def pcg64_state(seed: int, key: tuple[int, ...] = ()) -> np.ndarray:
    s = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)).state["state"]
    return np.array(
        [s["state"] >> 64, s["state"] & _MASK64, s["inc"] >> 64, s["inc"] & _MASK64], np.uint64
    )


def test_the_ziggurat_tables_are_the_headers_bits() -> None:
    text = HEADER.read_text()

    def table(name: str) -> list[str]:
        body = text.split(f"{name}[256] = {{")[1].split("};")[0]
        return re.findall(r"0x[0-9A-Fa-f.]+(?:p[+-]?\d+)?", body)

    assert fallback_sampler.KI.tolist() == [int(t, 16) for t in table("ki_double")]
    for ours, name in ((fallback_sampler.WI, "wi_double"), (fallback_sampler.FI, "fi_double")):
        want = np.array([float.fromhex(t) for t in table(name)])
        assert ours.view(np.uint64).tolist() == want.view(np.uint64).tolist(), name
    for ours, name in ((fallback_sampler.ZIGGURAT_R, "ziggurat_nor_r"),
                       (fallback_sampler.ZIGGURAT_INV_R, "ziggurat_nor_inv_r")):  # fmt: skip
        assert ours == float.fromhex(re.search(rf"{name} = (\S+);", text).group(1)), name


@needs_compiled
def test_both_backends_run_the_one_set_of_argument_checks_and_the_constants_agree() -> None:
    shared = ("require", "real_scalar", "quadratic_coefficients", "check_merge_args",
              "check_accumulate_args")  # fmt: skip
    for name in shared:  # klest.native.checks, not a copy
        assert getattr(compiled, name) is getattr(checks, name), name
    assert fallback_kernels.check_accumulate_args is checks.check_accumulate_args
    assert fallback_kernels.check_merge_args is checks.check_merge_args
    assert fallback_sampler.require is checks.require
    for name in ("TILE", "FIELDS", "COMPUTED_SERIES", "SIMD_LEVELS"):
        assert getattr(fallback, name) == getattr(compiled, name), name
    # inverse_cdf's checks are a function of their own here: the same messages
    cdf, guide = np.array([0.5, 1.0]), np.array([0, 1, 1], np.int32)
    for args in ((cdf[:1] * 0.5, guide), (cdf, np.zeros(4, np.int32)), (cdf, guide + 5)):
        with pytest.raises(ValueError) as ours:
            fallback.inverse_cdf(*args, np.zeros(1))
        with pytest.raises(ValueError) as theirs:
            compiled.inverse_cdf(*args, np.zeros(1))
        assert str(ours.value) == str(theirs.value)


def both_fill(state: np.ndarray, n: int, *args: object) -> tuple[np.ndarray, ...]:
    s1, s2, o1, o2 = state.copy(), state.copy(), np.empty(n), np.empty(n)
    fallback_sampler.fill_normal(s1, o1, *args)
    compiled.fill_normal(s2, o2, *args)
    return s1, s2, o1, o2


@needs_compiled
@pytest.mark.parametrize("seed", [0, 1, 2020, 2**63 + 5])
@pytest.mark.parametrize("n", [1, 2, 7, 255, 2047, 2048, 65_537, 1_000_003])
def test_the_fallback_sampler_is_the_compiled_one_bit_for_bit(seed: int, n: int) -> None:
    s1, s2, o1, o2 = both_fill(pcg64_state(seed, (3, 7)), n, 1.0, 0.0)
    assert o1.tobytes() == o2.tobytes()
    assert s1.tolist() == s2.tolist()  # the generator ends in the same state
    if n > 1_000_000:  # the tail beyond r (3.654) was taken, many times
        assert np.count_nonzero(np.abs(o1) > fallback_sampler.ZIGGURAT_R) > 100


@needs_compiled
def test_three_million_draws_scaled_and_quadratic_and_numpys_own_stream() -> None:
    state = pcg64_state(12, (0, 5))
    s1, s2, o1, o2 = both_fill(state, 3_000_000, 0.7, -1.25, (0.5, -2.0, 0.25))
    assert o1.tobytes() == o2.tobytes() and s1.tolist() == s2.tolist()
    s1, s2, o1, o2 = both_fill(state, 10_000, 2.0, 1.0, (0.0, 3.0, -1.0))  # x * b + c
    assert o1.tobytes() == o2.tobytes() and s1.tolist() == s2.tolist()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(12, spawn_key=(0, 5))))
    z = np.empty(3_000_000)
    fallback_sampler.fill_normal(state, z, 1.0, 0.0)
    assert z.tobytes() == rng.standard_normal(3_000_000).tobytes()


def test_rare_branches_that_run_past_the_batch_draw_exactly_the_words_they_need() -> None:
    # one or two draws from 3,000 streams: where the first word is not in a rectangle, the
    # rare branch draws its words one by one past the batch (tail pairs, a wedge's u)
    rare = 0
    for seed in range(3000):
        for n in (1, 2):
            state = pcg64_state(seed)
            out = np.empty(n)
            fallback_sampler.fill_normal(state, out, 1.0, 0.0)
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
            assert out.tobytes() == rng.standard_normal(n).tobytes(), (seed, n)
            assert (int(state[0]) << 64 | int(state[1])) == rng.bit_generator.state["state"][
                "state"
            ], (seed, n)
        word = np.random.PCG64(np.random.SeedSequence(seed)).random_raw()
        rare += int((word >> 9) & 0xFFFFFFFFFFFFF) >= int(fallback_sampler.KI[word & 0xFF])
    assert rare > 5  # the case is exercised (0.7% of 3,000 first words)


@needs_compiled
def test_inverse_cdf_gives_the_compiled_categories_for_any_guide() -> None:
    rng = np.random.default_rng(3)
    # (300, 4): long buckets; (40_000, 65_536): past kernels.c's LOOK_AHEAD_CATEGORIES
    for k, g in ((1, 1), (5, 8), (300, 4), (1000, 1024), (40_000, 65_536)):
        cdf = np.cumsum(rng.dirichlet(np.full(k, 0.3)))
        cdf[-1] = 1.0
        cdf = np.maximum.accumulate(cdf)
        right = np.searchsorted(cdf, np.arange(g + 1) / g, side="right").clip(0, k - 1)
        wrong = rng.integers(0, k, g + 1)  # valid in shape, wrong in value
        u = rng.random(5000)
        u[:3] = 0.0, min(cdf[0], 0.5), np.nextafter(1.0, 0.0)
        table = rng.standard_normal(k)
        for guide in (right.astype(np.int32), wrong.astype(np.int32)):
            got, want = fallback.inverse_cdf(cdf, guide, u), compiled.inverse_cdf(cdf, guide, u)
            assert got.dtype == want.dtype == np.int64 and np.array_equal(got, want)
            values = fallback.inverse_cdf(cdf, guide, u.reshape(50, 100), table)
            assert values.tobytes() == compiled.inverse_cdf(cdf, guide, u, table).tobytes()
        bad = u.reshape(50, 100).copy()
        bad[7, 3] = np.nan
        with pytest.raises(ValueError) as ours:
            fallback.inverse_cdf(cdf, right.astype(np.int32), bad)
        with pytest.raises(ValueError) as theirs:
            compiled.inverse_cdf(cdf, right.astype(np.int32), bad)
        assert str(ours.value) == str(theirs.value)


def special_values(rng: np.random.Generator) -> np.ndarray:
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-8, -1e-8, 5e-324, 709.78, 710.0, -745.0]
    near_switch = 0.01 * (1.0 + rng.uniform(-0.05, 0.05, 2000))
    return np.concatenate(
        [edges, near_switch, -near_switch, rng.standard_normal(20_000) * 3,
         np.exp(rng.uniform(-40, 6.5, 5000)) * rng.choice([-1.0, 1.0], 5000)]
    )  # fmt: skip


@needs_compiled
def test_k3_is_the_compiled_bits() -> None:
    l = special_values(np.random.default_rng(4))
    with np.errstate(all="ignore"):
        em1 = np.expm1(l)
    ours, theirs = np.empty_like(l), np.empty_like(l)
    fallback.k3_from_expm1(em1, l, ours)
    compiled.k3_from_expm1(em1, l, theirs)
    assert ours.tobytes() == theirs.tobytes()


@needs_compiled
def test_expm1_is_the_compiled_bits() -> None:
    l = special_values(np.random.default_rng(4))
    ours, theirs = fallback.expm1(l, np.empty_like(l)), compiled.expm1(l, np.empty_like(l))
    differ = np.flatnonzero(ours.view(np.uint64) != theirs.view(np.uint64))
    assert differ.size == 0, f"{differ.size} values differ, e.g. expm1({l[differ[0]]!r})"


def fresh(e: int, bins: int) -> list[np.ndarray]:
    stats = np.zeros((e, len(fallback.FIELDS)))
    stats[:, 5], stats[:, 6] = np.inf, -np.inf
    hist = np.zeros((e, bins + 2 if bins else 0), np.int64)
    return [stats, np.zeros(e + 1), np.zeros((e, e)), hist]


def blocks(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(log_ratio, a given series) pairs: tile remainders, non-finite values, signed zeros,
    a series whose tile sums overflow, constant blocks."""
    cases = []
    for m in (1, 5, 8, 9, 1023, 1024, 1025, 4099):
        l, extra = rng.standard_normal(m) * 0.8, rng.standard_normal(m) ** 3
        cases.append((l, extra))
        l2, extra2 = l.copy(), extra.copy()
        l2[m // 2], extra2[0] = np.inf, np.nan
        cases.append((l2, extra2))
        l3, extra3 = l.copy(), extra.copy()
        l3[::3], extra3[::2], extra3[1::4] = 0.0, -0.0, 0.0
        cases.append((l3, extra3))
        cases.append((np.full(m, -0.0), np.full(m, 1e308)))  # tile sums overflow: inf
    return cases


@needs_compiled
def test_accumulate_and_merge_give_the_compiled_bits() -> None:
    rng = np.random.default_rng(5)
    for l, extra in blocks(rng):
        em1 = np.expm1(l)
        series = ["negate", "half_square", "k3", extra]
        a, b = fresh(4, 12), fresh(4, 12)
        for _ in range(2):  # a second block folds into a non-empty record
            fallback_kernels.accumulate(series, l, em1, *a, 3, 3, -2.0, 0.35)
            compiled.accumulate(series, l, em1, *b, 3, 3, -2.0, 0.35)
        for ours, theirs, field in zip(
            a, b, ("stats", "joint", "comoment", "histogram"), strict=True
        ):
            assert ours.tobytes() == theirs.tobytes(), (l.size, field)
        other = fresh(4, 0)[:3]
        compiled.accumulate(["k3", extra, "negate", "half_square"], l, em1, *other,
                            np.zeros((4, 0), np.int64), 0, 1, 0.0, 1.0)  # fmt: skip
        ours, theirs = [x.copy() for x in a[:3]], [x.copy() for x in a[:3]]
        fallback_kernels.merge(*ours, *other)
        compiled.merge(*theirs, *other)
        assert all(x.tobytes() == y.tobytes() for x, y in zip(ours, theirs, strict=True))


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "KLEST_NATIVE"} | env
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=environment, timeout=120,
    )  # fmt: skip


# klest with its compiled library missing: bindings' own loader finds no klest.native._kernels
MISSING = """
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: (
    None if name == "klest.native._kernels" else _find(name, *a)
)
"""
USE = """
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import klest
    from klest import native, rl
import numpy as np
pairs = {
    "normal": (klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.5, scale=1.3)),
    "categorical": (
        klest.Categorical(probs=[0.2, 0.3, 0.5]), klest.Categorical(probs=[0.4, 0.4, 0.2])
    ),
    "gamma": (klest.Gamma(shape=2.0, rate=1.0), klest.Gamma(shape=3.0, rate=1.5)),
}
out = {"backend": native.BACKEND, "bindings": "klest.native.bindings" in sys.modules,
       "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
       "kl": klest.kl(*pairs["normal"]),
       "penalty": rl.kl_penalty(np.array([-1.0, -2.0]), np.array([-1.5, -1.0]), "k3").tolist()}
for name, (q, p) in pairs.items():
    frame = klest.simulate(q, p, ["k1", "k2", "k3"], n=30_000, seed=3, block_size=7_000).to_frame()
    out[name] = {key: frame[key].tolist() for key in ("n", "mean", "var")}
print(json.dumps(out))
"""


def test_klest_runs_without_its_compiled_library_and_in_both_modes() -> None:
    missing = run(MISSING + USE)
    forced = run(USE, KLEST_NATIVE="0")
    assert missing.returncode == 0, missing.stderr
    assert forced.returncode == 0, forced.stderr
    missing_out, forced_out = json.loads(missing.stdout), json.loads(forced.stdout)
    assert missing_out["backend"] == forced_out["backend"] == "numpy"
    assert not forced_out["bindings"]  # KLEST_NATIVE=0 does not even load the library
    assert forced_out["warnings"] == []
    fallback_warnings = [w for w in missing_out["warnings"] if w.startswith("FallbackWarning")]
    assert len(fallback_warnings) == 1 and "klest.native._kernels" in fallback_warnings[0]
    if compiled is None:
        return
    here = json.loads(run(USE).stdout)  # the compiled library, in a process like the others
    assert here["backend"] == "compiled" and here["warnings"] == []
    for key in ("kl", "penalty", "normal", "categorical", "gamma"):
        assert missing_out[key] == forced_out[key], key
        # the same draws and the same statistics: the bound is 0 (bit-identical kernels)
        assert forced_out[key] == here[key], key


def test_knative_1_requires_the_library_and_other_values_are_refused() -> None:
    required = run(MISSING + "import klest", KLEST_NATIVE="1")
    assert required.returncode != 0
    last = required.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: KLEST_NATIVE=1, but klest's compiled kernels cannot")
    refused = run("import klest", KLEST_NATIVE="yes")
    assert "KLEST_NATIVE must be 0" in refused.stderr.strip().splitlines()[-1]


def test_the_fallback_simd_functions_have_one_level() -> None:
    assert fallback.best_simd_level() == 0 and fallback.SIMD_LEVELS == native.SIMD_LEVELS
    fallback.set_simd_level(0)
    with pytest.raises(ValueError, match="SIMD level 1 is not supported here"):
        fallback.set_simd_level(1)
