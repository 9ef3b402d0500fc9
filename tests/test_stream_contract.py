"""klest stream v1 (klest.engine.plan): its seeding, its canary against NumPy, and its record.

The golden streams (tests/test_golden_stream.py) define the stream. Here: the block generator
is built explicitly (never through ``default_rng``); a canary says when NumPy's own samplers
stop matching klest's; every result, meta.json and stored case key record the stream version
and NumPy's version, and a case stored under another one (or before they were recorded) is
recomputed with a StoreWarning naming the reason.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import klest
from klest import native
from klest.engine import plan as plan_module
from klest.engine.plan import STREAM_VERSION, block_generator, stream_versions
from klest.engine.results import software_versions
from klest.studies.experiment import parse_config, run_experiment
from klest.studies.store import StoreWarning

#: the radius of NumPy's 256-layer normal ziggurat: draws beyond it come from the tail branch
ZIGGURAT_R = 3.6541528853610088

CANARY = (
    "NumPy changed its normal sampler; klest's golden streams are the definition, klest's "
    "numbers did not move"
)

BASE = {
    "name": "stream",
    "estimators": ["k1", "k3"],
    "n": 2000,
    "seed": 3,
    "block_size": 1000,
    "cases": [
        {"label": "near", "q": {"family": "normal"}, "p": {"family": "normal", "loc": 0.1}},
        {
            "label": "gamma",
            "q": {"family": "gamma", "shape": 2.0},
            "p": {"family": "gamma", "shape": 2.0, "rate": 1.2},
        },
    ],
}


def run(out: Path):
    """run_experiment with the store's warnings and the progress: (frame, statuses, messages)."""
    statuses: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = run_experiment(
            parse_config(BASE), out_dir=out,
            progress=lambda case, status: statuses.append(status),
        )  # fmt: skip
    messages = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    return frame, [s for s in statuses if s != "running"], messages


def pretend(patch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    """Make this process look like another NumPy and/or another klest stream version."""
    if "numpy" in versions:
        patch.setattr(np, "__version__", versions["numpy"])
    if "stream" in versions:
        patch.setattr(plan_module, "STREAM_VERSION", versions["stream"])


# ---- seeding: the explicit construction --------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "case", "block"), [(0, 0, 0), (2020, 0, 0), (7, 1, 3), (2**127 + 5, 4, 10**6)]
)
def test_block_generator_is_the_explicit_construction(seed, case, block) -> None:
    rng = block_generator(seed, case, block)
    explicit = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(case, block)))
    )
    assert type(rng) is np.random.Generator and type(rng.bit_generator) is np.random.PCG64
    sequence = rng.bit_generator.seed_seq
    assert (sequence.entropy, sequence.spawn_key) == (seed, (case, block))
    assert rng.bit_generator.state == explicit.bit_generator.state
    assert np.array_equal(
        rng.bit_generator.random_raw(1000), explicit.bit_generator.random_raw(1000)
    )


def test_block_generator_never_goes_through_default_rng(monkeypatch) -> None:
    # default_rng may change its bit generator in a future NumPy; the stream must not follow.
    # scipy.stats calls default_rng while it is first imported (its docstring examples), and
    # klest imports it on first use: loaded here first, so that only klest's own calls count
    import scipy.stats  # noqa: F401

    def refuse(*args, **kwargs):
        raise AssertionError("klest's block stream went through numpy.random.default_rng")

    monkeypatch.setattr(np.random, "default_rng", refuse)
    assert type(block_generator(1, 2, 3).bit_generator) is np.random.PCG64
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.5, scale=1.0)
    res = klest.simulate(q, p, ["k1"], n=5000, seed=1, block_size=2500)
    assert res.n == 5000


# ---- the canary: NumPy's own samplers still equal klest's --------------------------------


@pytest.mark.parametrize(("seed", "size"), [(0, 1_000_003), (2020, 1_000_003), (3, 1), (4, 2047)])
def test_canary_numpy_standard_normal_equals_klest_sampler(seed, size) -> None:
    ours, theirs = block_generator(seed, 0, 0), block_generator(seed, 0, 0)
    mine = native.standard_normal(ours, size)
    numpy_draws = theirs.standard_normal(size)
    tail = np.abs(mine) > ZIGGURAT_R
    if size > 10**6:
        assert tail.sum() > 100  # ~270 draws from the tail branch: it is exercised
    differ = np.flatnonzero(mine.view(np.uint64) != numpy_draws.view(np.uint64))
    assert differ.size == 0, (
        f"{CANARY}: Generator.standard_normal differs from klest's sampler at "
        f"{differ.size} of {size} draws (first at {differ[0] if differ.size else None}; "
        f"{int(tail[differ].sum())} of them in the ziggurat's tail), NumPy {np.__version__}"
    )
    assert ours.bit_generator.state == theirs.bit_generator.state, (
        f"{CANARY}: Generator.standard_normal consumes PCG64 words differently from klest's "
        f"sampler, NumPy {np.__version__}"
    )


def test_canary_numpy_random_equals_pcg64_doubles() -> None:
    # stream v1's uniform doubles (Categorical, Bernoulli, GaussianMixture's component)
    rng, raw = block_generator(5, 0, 0), block_generator(5, 0, 0).bit_generator
    doubles = (raw.random_raw(100_000) >> np.uint64(11)) * 2.0**-53
    assert np.array_equal(rng.random(100_000), doubles), (
        "NumPy changed Generator.random; klest's golden streams are the definition: stream "
        f"v1's uniform doubles are (PCG64 word >> 11) * 2**-53, NumPy {np.__version__}"
    )


# ---- the record ---------------------------------------------------------------------------


def test_the_stream_version_and_numpy_version_are_in_every_result() -> None:
    assert stream_versions() == {"stream": STREAM_VERSION, "numpy": np.__version__}
    assert STREAM_VERSION == "klest stream v1"
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.5, scale=1.0)
    res = klest.simulate(q, p, ["k1"], n=1000, seed=0)
    assert res.versions["stream"] == STREAM_VERSION
    assert res.versions["numpy"] == np.__version__
    assert res.metadata()["versions"] == res.versions == software_versions()


def test_meta_json_and_case_record_hold_the_stream(tmp_path) -> None:
    run(tmp_path)
    directory = tmp_path / "stream"
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["versions"]["stream"] == STREAM_VERSION
    assert meta["versions"]["numpy"] == np.__version__
    config = parse_config(BASE)
    for case in config.cases:
        record = json.loads((directory / "cases" / f"{case.index}.json").read_text())
        assert record["versions"]["stream"] == STREAM_VERSION
        assert record["versions"]["numpy"] == np.__version__
        identity = record["depends_on"]
        assert (identity["stream"], identity["numpy"]) == (STREAM_VERSION, np.__version__)
        assert record["key"] == config.case_key(case) == meta["cases"][case.index]["key"]
        assert meta["cases"][case.index]["versions"]["stream"] == STREAM_VERSION


@pytest.mark.parametrize("changed", ["numpy", "stream"])
def test_the_case_key_depends_on_the_stream_and_numpy_versions(monkeypatch, changed) -> None:
    config = parse_config(BASE)
    before = config.case_key(config.cases[0])
    pretend(monkeypatch, {changed: "something else"})
    assert config.case_key(config.cases[0]) != before


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (
            {"numpy": "1.0.0"},
            "it was computed with NumPy 1.0.0, this run has NumPy {numpy} (some families draw "
            "through NumPy's Generator methods)",
        ),
        (
            {"stream": "klest stream v0"},
            "it was drawn from another random stream (klest stream v0 -> {stream})",
        ),
        (
            {"stream": "klest stream v0", "numpy": "1.0.0"},
            "it was drawn from another random stream (klest stream v0 -> {stream}); it was "
            "computed with NumPy 1.0.0, this run has NumPy {numpy} (some families draw "
            "through NumPy's Generator methods)",
        ),
    ],
)
def test_a_case_stored_under_another_stream_or_numpy_is_recomputed(
    tmp_path, monkeypatch, stored, reason
) -> None:
    reference, _, _ = run(tmp_path / "reference")
    with monkeypatch.context() as patch:  # the first run's klest "had" another NumPy / stream
        pretend(patch, stored)
        run(tmp_path)
    frame, statuses, messages = run(tmp_path)
    assert statuses == ["done", "done"]
    why = reason.format(**stream_versions())
    assert messages == [
        f"{tmp_path / 'stream'}: case {i} {label!r}: {why}: recomputed, the stored result replaced"
        for i, label in enumerate(["near", "gamma"])
    ]
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)
    meta = json.loads((tmp_path / "stream" / "meta.json").read_text())
    assert [c["recomputed_because"] for c in meta["cases"]] == [why, why]
    _, statuses, messages = run(tmp_path)  # recomputed under this NumPy: reused from now on
    assert (statuses, messages) == (["stored", "stored"], [])


def test_a_case_stored_before_the_stream_was_recorded_is_recomputed(tmp_path) -> None:
    reference, _, _ = run(tmp_path)
    record_path = tmp_path / "stream" / "cases" / "0.json"
    record = json.loads(record_path.read_text())
    for name in ("stream", "numpy"):  # as klest wrote it before it recorded the stream
        record["depends_on"].pop(name)
    old_key = json.dumps(record["depends_on"], sort_keys=True, separators=(",", ":"))
    record["key"] = hashlib.sha256(old_key.encode()).hexdigest()
    record_path.write_text(json.dumps(record))
    frame, statuses, messages = run(tmp_path)
    assert statuses == ["done", "stored"]
    assert messages == [
        f"{tmp_path / 'stream'}: case 0 'near': it was stored before klest recorded its random "
        f"stream and NumPy version (now {STREAM_VERSION}, NumPy {np.__version__}): "
        "recomputed, the stored result replaced"
    ]
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)


def test_a_config_change_is_still_named_beside_the_stream_fields(tmp_path) -> None:
    run(tmp_path)
    record_path = tmp_path / "stream" / "cases" / "0.json"
    record = json.loads(record_path.read_text())
    record["depends_on"]["seed"] = 4
    record["key"] = "0" * 64
    record_path.write_text(json.dumps(record))
    _, _, messages = run(tmp_path)
    assert messages == [
        f"{tmp_path / 'stream'}: case 0 'near': the config changed since it was stored "
        "(seed 4 -> 3): recomputed, the stored result replaced"
    ]


def test_the_plan_module_states_the_contract() -> None:
    doc = plan_module.__doc__
    assert "Generator(PCG64(SeedSequence(seed, spawn_key=(c, k))))" in doc
    klest_draws, numpy_draws = doc.split("4. Everything else")
    for family in ("Gamma", "Beta", "StudentT", "Poisson", "Laplace", "Exponential",
                   "LogNormal", "Uniform"):  # fmt: skip
        assert family in numpy_draws, family
    # its component pick (item 3) and its normal parts (item 2) are klest's own
    assert "GaussianMixture" in klest_draws and "GaussianMixture" not in numpy_draws
