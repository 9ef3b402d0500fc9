"""diagnose's statistics: clustered SEs, honest output, masks, framework kinds, mismatch,
reservoir samples, tail fits, JSON, and the one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from arviz_stats.base import array_stats

from klest import estimators, rl
from klest.diagnostics.accumulate import SequenceSums, TailBuffer
from klest.diagnostics.diagnosis import diagnose
from klest.diagnostics.schema import TokenChunk
from klest.diagnostics.tails import psis_fit


def _log(seed: int = 0, n_seq: int = 300, spread: float = 0.3, **extra: bool) -> pd.DataFrame:
    """Tokens of sequences with a per-sequence effect (so that clustering matters)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, n_seq)
    seq = np.repeat(np.arange(n_seq) * 7 + 3, lengths)  # non-contiguous ids
    n = len(seq)
    effect = np.repeat(rng.normal(0, 0.3, n_seq), lengths)
    lp = np.log(rng.uniform(0.05, 1.0, n))
    ref = np.minimum(lp + effect + spread * rng.standard_normal(n), 0.0)
    frame = pd.DataFrame({"sequence": seq, "logprob": lp, "ref_logprob": ref})
    if extra.get("rollout"):
        frame["rollout_logprob"] = np.minimum(lp + 0.1 * rng.standard_normal(n), 0.0)
    if extra.get("mask"):
        frame["mask"] = rng.random(n) > 0.2
    return frame


def _row(d, name: str, level: str = "token") -> pd.Series:
    s = d.summary
    return s[(s.estimator == name) & (s.level == level)].iloc[0]


def test_clustered_se_against_brute_force():
    frame = _log()
    d = diagnose(frame, chunk_rows=997)
    k3 = estimators.get("k3")(frame.ref_logprob.to_numpy() - frame.logprob.to_numpy())
    groups = [k3[frame.sequence.to_numpy() == s] for s in np.unique(frame.sequence)]
    n, g = len(k3), len(groups)
    mean = k3.mean()
    # OLS of the value on a constant, errors clustered by sequence (CR1): (X'X)^-1 B (X'X)^-1
    meat = sum(float(np.sum(x - mean)) ** 2 for x in groups)
    brute = math.sqrt(g / (g - 1) * meat) / n
    row = _row(d, "k3")
    assert row.estimate == pytest.approx(mean, rel=1e-12)
    assert row.se_unchecked == pytest.approx(brute, rel=1e-10)
    assert row.se == row.se_unchecked  # a verified finite variance: the SE is shown
    # delete-one-sequence jackknife: the same variance to O(1/S) (S = 300: within 5%)
    sums = np.array([x.sum() for x in groups])
    counts = np.array([len(x) for x in groups])
    loo = (sums.sum() - sums) / (counts.sum() - counts)
    jack = math.sqrt((g - 1) / g * np.sum((loo - loo.mean()) ** 2))
    assert row.se == pytest.approx(jack, rel=0.05)
    # iid SE would be too small here (the per-sequence effect): clustering matters
    assert row.se > 1.2 * k3.std(ddof=1) / math.sqrt(n)
    seq = _row(d, "k3", "sequence")
    assert seq.estimate == pytest.approx(sums.mean(), rel=1e-12)
    assert seq.se == pytest.approx(sums.std(ddof=1) / math.sqrt(g), rel=1e-12)


def test_honest_output_with_inf_and_nan():
    frame = _log(n_seq=50)
    frame.loc[5, "ref_logprob"] = -np.inf  # legal: the reference gives the token no mass
    d = diagnose(frame)
    for name in ("k1", "k2", "k3"):
        for level in ("token", "sequence"):
            row = _row(d, name, level)
            assert row.estimate == math.inf
            assert math.isnan(row.se) and not row.finite_variance
            assert row.nonfinite == 1
        assert "non-finite" in _row(d, name).verdict
    assert "inf" in d.recommendation or "no estimator" in d.recommendation
    chunk = TokenChunk(
        sequence=np.array([0, 0, 1, 1]),
        logprob=np.array([-1.0, np.nan, -0.5, -0.2]),
        ref_logprob=np.array([-1.1, -0.3, -0.5, -0.1]),
    )
    d = diagnose([chunk])
    assert all(math.isnan(x) for x in d.summary.estimate)
    json.dumps(d.to_json(), allow_nan=False)


def test_masks_and_empty_sequences():
    frame = _log(mask=True)
    frame.loc[~frame["mask"], "ref_logprob"] = -30.0  # garbage in masked rows: must not count
    frame.loc[frame.sequence == 3, "mask"] = False  # a whole sequence masked out
    d = diagnose(frame, frameworks=("verl:low_var_kl",))
    kept = frame[frame["mask"]].drop(columns="mask")
    e = diagnose(kept, frameworks=("verl:low_var_kl",))
    cols = ["estimate", "se", "khat", "negative_fraction", "clamp_fraction"]
    pd.testing.assert_frame_equal(d.summary[cols], e.summary[cols])
    assert d.meta["masked"] == int((~frame["mask"]).sum())
    empty = (~frame.groupby("sequence")["mask"].any()).sum()
    assert empty >= 1 and d.meta["empty_sequences"] == empty and e.meta["empty_sequences"] == 0
    assert d.meta["sequences"] == e.meta["sequences"] == kept.sequence.nunique()
    assert _row(d, "verl:low_var_kl").clamp_fraction == 0.0


def test_framework_kinds_match_kl_penalty():
    frame = _log(spread=3.0)  # |l| up to ~15: the output clamp at 10 is hit
    lp, ref = frame.logprob.to_numpy(), frame.ref_logprob.to_numpy()
    kinds = ("verl:low_var_kl", "openrlhf@0.11.0:k3", "trl:k3", "nemo_rl:k2")
    d = diagnose(frame, estimators=("k1", "k3"), frameworks=kinds, chunk_rows=1000)
    for kind in kinds:
        fw, _, k = kind.partition(":")
        value = rl.kl_penalty(lp, ref, k, framework=fw)
        row = _row(d, kind)
        assert row.estimate == pytest.approx(value.mean(), rel=1e-12)
        spec = rl.spec(fw, k)
        if spec.output_clamp is None:
            assert math.isnan(row.clamp_fraction)
            continue
        base = estimators.get(spec.estimator)(np.clip(ref - lp, -(spec.input_clamp or np.inf),
                                                      spec.input_clamp or np.inf))  # fmt: skip
        hits = np.abs(base) > spec.output_clamp
        if spec.input_clamp is not None:
            hits |= np.abs(ref - lp) > spec.input_clamp
        assert hits.any() and row.clamp_fraction == hits.mean()
        unclamped = estimators.get(spec.estimator)(ref - lp)
        assert row.clamp_cost == pytest.approx((value - unclamped).mean(), rel=1e-9)
        assert row.finite_variance and "bounded" in row.verdict
    # the unclamped k3 is trl's: the same numbers as klest's k3
    assert _row(d, "trl:k3").estimate == pytest.approx(_row(d, "k3").estimate, rel=1e-14)
    assert "clamp is active" in d.recommendation


def test_mismatch_block():
    frame = _log(rollout=True)
    d = diagnose(frame)
    lp, mu = frame.logprob.to_numpy(), frame.rollout_logprob.to_numpy()
    log_rho = lp - mu
    m = d.mismatch
    assert m["kl_k3_token"] == pytest.approx(estimators.get("k3")(log_rho).mean(), rel=1e-12)
    rho = np.exp(log_rho)
    assert m["rho_outside_0.9_1.1"] == ((rho < 0.9) | (rho > 1.1)).mean()
    per_seq = pd.Series(log_rho).groupby(frame.sequence.to_numpy())
    s, avg = per_seq.sum(), per_seq.mean()
    outside = lambda x: float(((np.exp(x) < 0.5) | (np.exp(x) > 2)).mean())  # noqa: E731
    assert m["sequence_weight_sum_outside_0.5_2"] == pytest.approx(outside(s))
    assert m["sequence_weight_mean_outside_0.5_2"] == pytest.approx(outside(avg))
    w = np.exp(s.to_numpy())
    ess = w.sum() ** 2 / (w * w).sum() / len(w)
    assert m["ess_sequence_weight_sum_fraction"] == pytest.approx(ess, rel=1e-10)
    assert d.weights["rollout"]["ess"] == pytest.approx(rho.sum() ** 2 / (rho**2).sum())
    assert "rho_rollout" in d.tail and diagnose(_log()).mismatch is None


def test_reservoir_is_deterministic_and_chunk_independent():
    frame = _log()
    a = diagnose(frame, seed=3, reservoir=500, chunk_rows=10_000).samples
    b = diagnose(frame, seed=3, reservoir=500, chunk_rows=77).samples
    c = diagnose(frame, seed=4, reservoir=500).samples
    assert set(a) == {"l", "k1", "k2", "k3"} and len(a["l"]) == 500
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["l"], c["l"])
    l = frame.ref_logprob.to_numpy() - frame.logprob.to_numpy()
    assert np.isin(a["l"], l).all()
    np.testing.assert_array_equal(a["k3"], estimators.get("k3")(a["l"]))
    whole = diagnose(frame, reservoir=10 * len(frame)).samples["l"]
    np.testing.assert_array_equal(whole, l)  # all tokens, in token order


def test_tail_buffer_gives_arviz_khat_on_all_values():
    x = np.log1p(np.random.default_rng(5).pareto(1 / 0.6, 50_000))
    full = float(array_stats.psislw(-x, 1)[1])  # arviz fits the tail of exp(-ary)
    buf = TailBuffer(capacity=1_000)
    for part in np.array_split(x, 13):
        buf.add(part)
    assert not buf.complete
    assert psis_fit(buf).khat == pytest.approx(full, abs=1e-12)
    assert psis_fit(TailBuffer(capacity=10)).status == "too few"


def test_sequence_sums_merge_across_chunks():
    s = SequenceSums(1)
    ids = np.random.default_rng(0).integers(0, 50_000, 300_000)
    for part in np.array_split(ids, 9):
        s.add(part, np.ones((len(part), 1)))
    u, n, y = s.result()
    np.testing.assert_array_equal(u, np.unique(ids))
    assert n.sum() == len(ids) and np.array_equal(y[:, 0], n.astype(float))


def test_rb_from_logits():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((400, 6)), rng.standard_normal((400, 6))
    la = a - np.log(np.exp(a).sum(1, keepdims=True))
    lb = b - np.log(np.exp(b).sum(1, keepdims=True))
    tok = rng.integers(0, 6, 400)
    log = {"sequence": np.repeat(np.arange(40), 10), "logprob": la[np.arange(400), tok],
           "ref_logprob": lb[np.arange(400), tok], "logits": a, "ref_logits": b}  # fmt: skip
    d = diagnose(log, frameworks=("verl:full",))
    exact = rl.full_kl(a, b)
    assert _row(d, "rb").estimate == pytest.approx(exact.mean(), rel=1e-12)
    assert _row(d, "verl:full").estimate == pytest.approx(exact.mean(), rel=1e-12)
    assert d.meta["reference"] == "rb"


def test_json_safe():
    frame = _log(rollout=True)
    frame.loc[0, "ref_logprob"] = -np.inf
    out = diagnose(frame, frameworks=("verl:low_var_kl",)).to_json()
    text = json.dumps(out, allow_nan=False)
    assert '"inf"' in text and '"nan"' in text
    assert json.loads(text)["summary"][0]["estimator"] == "k1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimators": ("k4",)}, "estimators[0]: unknown estimator 'k4'"),
        ({"estimators": "k3"}, "estimators must be a tuple of strings"),
        ({"frameworks": ("verl:k9",)}, "frameworks[0]: unknown kind 'k9' for framework verl"),
        ({"frameworks": ("nosuch:k3",)}, "frameworks[0]: unknown framework 'nosuch'"),
        ({"frameworks": ("verl",)}, "frameworks[0]: 'verl' is not 'framework[@version]:kind'"),
        ({"frameworks": ("verl:full",)}, "needs the logits"),
        ({"frameworks": ("prime_rl:mismatch_kl",)}, "not a KL(pi||ref) penalty"),
        ({"chunk_rows": 0}, "chunk_rows must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_bad_arguments_one_line_errors(kwargs, message):
    with pytest.raises((ValueError, TypeError)) as err:
        diagnose(_log(n_seq=5), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
