"""Truncated and tempered sampling (klest.distributions.truncation, Categorical.truncated) and
the exact KL quantities under it (klest.rl.truncation).

Golden values are derived by hand in the comments, on probabilities that are binary
fractions (0.5, 0.25, 0.1875, ...) wherever a rule is tested at its boundary, so that the
boundary is decided on exact numbers. Monte Carlo checks draw with klest's own Categorical
sampler from a fixed seed and compare with the exact values at z = 5 standard errors (the
standard error from the exact variance); there are < 40 such comparisons, a family-wide
false-failure rate below 1e-4."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import klest
from klest.distributions.truncation import GREEDY_TEMPERATURE, truncate
from klest.rl.truncation import MODES, TARGETS, truncated_pair, truncation_sweep
from klest.studies.rl_studies import parse_study

Z = 5.0
Q4 = [0.5, 0.25, 0.125, 0.125]  # ties at the bottom
Q4_DISTINCT = [0.5, 0.25, 0.1875, 0.0625]  # cumulative 0.5, 0.75, 0.9375, 1


def kept(probs, **settings) -> list[bool]:
    """The kept set of Categorical(probs).truncated(**settings), from its probabilities."""
    out = klest.Categorical(probs=probs).truncated(**settings)
    return (out.probs > 0).tolist()


# ---- golden values, one rule at a time ------------------------------------------------


def test_top_k_keeps_ties_at_the_kth_value_in_both_conventions() -> None:
    # Q4's 3rd and 4th values are both 0.125: top_k = 3 keeps all four (nothing removed)
    for convention in ("vllm", "hf"):
        assert kept(Q4, top_k=3, convention=convention) == [True] * 4
        assert kept(Q4, top_k=2, convention=convention) == [True, True, False, False]
    # logits (2, 1, 1, -1), top_k = 2: the 2nd value 1 is tied, 3 entries kept, probabilities
    # e^2 : e : e over e^2 + 2e
    out = klest.Categorical(logits=[2.0, 1.0, 1.0, -1.0]).truncated(top_k=2)
    e = math.e
    assert out.probs.tolist() == pytest.approx([e / (e + 2), 1 / (e + 2), 1 / (e + 2), 0.0])
    assert out.probs[3] == 0.0


def test_top_k_at_or_above_the_vocabulary_changes_nothing() -> None:
    q = klest.Categorical(probs=Q4_DISTINCT)
    for k in (4, 5, 10**9):
        assert q.truncated(top_k=k).probs.tolist() == pytest.approx(Q4_DISTINCT, rel=1e-15)
    # fewer finite entries than k: the -inf ones stay out (vLLM's k-th value is -inf)
    out = truncate([[0.0, -np.inf, 1.0, -np.inf]], top_k=3)
    assert out.kept.tolist() == [[True, False, True, False]]


def test_top_p_at_a_cumulative_boundary_removes_the_next_entry() -> None:
    # Q4_DISTINCT: the mass above the 3rd entry is 0.75; at top_p = 0.75 it is removed (an
    # entry survives iff the mass ranked above it is < top_p), kept mass = 0.75 = top_p
    for convention in ("vllm", "hf"):
        assert kept(Q4_DISTINCT, top_p=0.75, convention=convention) == [True, True, False, False]
        assert kept(Q4_DISTINCT, top_p=0.75 + 2**-20, convention=convention) == [True] * 3 + [False]
        assert kept(Q4_DISTINCT, top_p=0.5, convention=convention) == [True, False, False, False]
        assert (
            kept(Q4_DISTINCT, top_p=0.5 + 2**-20, convention=convention)
            == [True, True] + [False] * 2
        )
    probs = klest.Categorical(probs=Q4_DISTINCT).truncated(top_p=0.75).probs
    assert probs.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0], rel=1e-15)  # 0.5 / 0.75


def test_top_p_ties_keep_the_block_or_break_by_index() -> None:
    # (0.5, 0.25, 0.25), top_p = 0.75: the mass above the 2nd entry is 0.5 < 0.75, above the
    # 3rd 0.75 (after the tied 2nd). ties="keep": the tied block {1, 2} has 0.5 above it, kept
    # whole (S = 1); ties="index": the lower index ranks higher, entry 2 goes (S = 0.75)
    out = truncate(np.log([0.5, 0.25, 0.25]), top_p=0.75, probs=[0.5, 0.25, 0.25])
    assert out.kept.tolist() == [True, True, True] and out.log_mass == 0.0
    out = truncate(np.log([0.5, 0.25, 0.25]), top_p=0.75, probs=[0.5, 0.25, 0.25], ties="index")
    assert out.kept.tolist() == [True, True, False]
    assert out.log_mass == pytest.approx(math.log(0.75), rel=1e-15)
    # a tie at the top with a tiny top_p: "keep" keeps both maxima, "index" the first
    assert kept([0.375, 0.375, 0.25], top_p=0.1) == [True, True, False]
    assert kept([0.375, 0.375, 0.25], top_p=0.1, ties="index") == [True, False, False]


def test_top_p_one_changes_nothing_even_for_tiny_entries() -> None:
    probs = [0.5, 0.5 - 2e-30, 1e-30, 1e-30]
    out = klest.Categorical(probs=probs).truncated(top_p=1.0)
    assert (out.probs > 0).all() and out.probs.tolist() == pytest.approx(probs, rel=1e-15)


def test_min_p_keeps_equality_and_is_relative_to_the_maximum() -> None:
    # Q4 with min_p = 0.5: threshold 0.5 * 0.5 = 0.25, the 2nd entry (= 0.25) is kept
    for convention in ("vllm", "hf"):
        assert kept(Q4, min_p=0.5, convention=convention) == [True, True, False, False]
        assert kept(Q4, min_p=0.5 + 2**-20, convention=convention) == [True] + [False] * 3
        assert kept(Q4, min_p=0.0, convention=convention) == [True] * 4
        assert kept([0.375, 0.375, 0.25], min_p=1.0, convention=convention) == [True, True, False]


def test_vllm_and_hf_order_min_p_and_top_p_differently() -> None:
    # Q4, min_p = 0.5, top_p = 0.6. vLLM: min-p first keeps {0, 1} = (2/3, 1/3); top-p on
    # that: the mass above entry 1 is 2/3 >= 0.6, removed: {0}. HF: top-p first on Q4: the
    # mass above entry 1 is 0.5 < 0.6, kept, above entry 2 0.75: {0, 1}; min-p keeps both.
    assert kept(Q4, min_p=0.5, top_p=0.6, convention="vllm") == [True, False, False, False]
    assert kept(Q4, min_p=0.5, top_p=0.6, convention="hf") == [True, True, False, False]
    # top-k and min-p commute: Q4, top_k = 3 (all 4, the tie) then min_p = 0.5: {0, 1} either way
    for convention in ("vllm", "hf"):
        assert kept(Q4, min_p=0.5, top_k=3, convention=convention) == [True, True, False, False]


def test_hf_min_tokens_to_keep() -> None:
    # top_k = max(1, 2) = 2; top-p at 0.5 keeps {0} but 3 are forced: the 3rd is a tie
    # (0.125, 0.125), both kept with ties="keep", the lower index with ties="index"
    assert kept(Q4, top_k=1, convention="hf", min_tokens_to_keep=2) == [True, True, False, False]
    assert kept(Q4, top_p=0.5, convention="hf", min_tokens_to_keep=3) == [True] * 4
    forced = kept(Q4, top_p=0.5, convention="hf", min_tokens_to_keep=3, ties="index")
    assert forced == [True, True, True, False]
    assert kept(Q4, min_p=1.0, convention="hf", min_tokens_to_keep=2) == [True, True, False, False]


def test_temperature_and_its_small_limit() -> None:
    # logits (0, log 4) at T = 2 are (0, log 2) at T = 1: probabilities (1/3, 2/3)
    out = klest.Categorical(logits=[0.0, math.log(4.0)]).truncated(temperature=2.0)
    assert out.probs.tolist() == pytest.approx([1 / 3, 2 / 3], rel=1e-14)
    z = [1.0, 3.0, 3.0, -np.inf]
    q = klest.Categorical(logits=z)
    # vLLM: T < 1e-5 is greedy, the first maximum (torch.argmax), whatever top_p says
    for t in (0.0, 1e-6, math.nextafter(GREEDY_TEMPERATURE, 0.0)):
        assert q.truncated(temperature=t, top_p=0.1).probs.tolist() == [0.0, 1.0, 0.0, 0.0]
    # at T = 1e-5 vLLM samples softmax(z / T): the two maxima, e^(-2e5) underflows to 0
    assert q.truncated(temperature=GREEDY_TEMPERATURE).probs.tolist() == [0.0, 0.5, 0.5, 0.0]
    # HF: any T > 0 is sampling; as T -> 0 the uniform distribution on the maxima, no overflow
    for t in (1e-6, 1e-300, 5e-324):
        assert q.truncated(temperature=t, convention="hf").probs.tolist() == [0, 0.5, 0.5, 0]


def test_batched_rows_get_their_own_kept_sets() -> None:
    # exact probabilities (not exp(log p)): Q4's boundary is at a cumulative 0.75 exactly
    rows = np.array([[Q4_DISTINCT, Q4], [[0.25] * 4, [0.625, 0.125, 0.125, 0.125]]])  # (2, 2, 4)
    q = klest.Categorical(probs=rows)
    out = q.truncated(top_p=0.75, top_k=3)
    assert out.batch_shape == (2, 2)
    for i in range(2):
        for j in range(2):
            one = klest.Categorical(probs=rows[i, j]).truncated(top_p=0.75, top_k=3)
            assert out.probs[i, j].tolist() == pytest.approx(one.probs.tolist(), rel=1e-15)
    # hand-derived: Q4_DISTINCT -> {0, 1}; Q4 -> top-3 keeps 4 (tie), top-p: mass above the
    # tied 0.125s is 0.75 -> {0, 1}; uniform -> top-3 keeps all 4 (all tied), top-p keeps the
    # block (nothing above it); (0.625, 0.125 x 3): top-3 keeps all 4 (tie), 0.625 < 0.75
    # above the tied block, kept whole
    assert (out.probs > 0).sum(axis=-1).tolist() == [[2, 2], [4, 4]]


def test_zero_mass_entries_are_never_kept_and_the_mass_is_accurate() -> None:
    z = np.array([0.0, -np.inf, -50.0])
    out = truncate(z, top_p=1.0, min_p=0.0)
    assert out.kept.tolist() == [True, False, True]
    # removing the e^-50 entry: log S = log1p(-e^-50 / (1 + e^-50)) ~ -1.93e-22, not 0
    removed = math.exp(-50.0) / (1.0 + math.exp(-50.0))
    out = truncate(z, top_k=1)
    assert out.log_mass == pytest.approx(math.log1p(-removed), rel=1e-12)


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"top_k": 0}, ValueError, "top_k must be a positive integer or None"),
        ({"top_k": -1}, ValueError, "top_k must be a positive integer"),
        ({"top_k": 2.0}, TypeError, "top_k must be a positive integer"),
        ({"top_k": True}, TypeError, "top_k"),
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"top_p": math.nan}, ValueError, "top_p"),
        ({"top_p": "0.9"}, TypeError, "top_p must be a real number"),
        ({"min_p": -0.1}, ValueError, r"min_p must be in \[0, 1\]"),
        ({"min_p": 1.1}, ValueError, "min_p"),
        ({"temperature": -1.0}, ValueError, "temperature must be finite and >= 0"),
        ({"temperature": math.inf}, ValueError, "temperature"),
        ({"temperature": 0.0, "convention": "hf"}, ValueError, r"temperature .*> 0"),
        ({"convention": "sglang"}, ValueError, "convention must be one of"),
        ({"ties": "random"}, ValueError, "ties must be one of"),
        ({"min_tokens_to_keep": 2}, ValueError, "min_tokens_to_keep must be 1 with"),
        ({"min_tokens_to_keep": 0, "convention": "hf"}, ValueError, "min_tokens_to_keep"),
    ],
)
def test_invalid_settings_are_one_line_errors_naming_the_argument(settings, error, match):
    with pytest.raises(error, match=match) as info:
        klest.Categorical(probs=Q4).truncated(**settings)
    assert "\n" not in str(info.value)


def test_invalid_logits_are_errors() -> None:
    with pytest.raises(ValueError, match="logits must be finite or -inf, got nan at index"):
        truncate([[0.0, np.nan]])
    with pytest.raises(ValueError, match="logits must be finite or -inf"):
        truncate([0.0, np.inf])
    with pytest.raises(ValueError, match="finite entry in every row"):
        truncate([[0.0, 1.0], [-np.inf, -np.inf]])
    with pytest.raises(ValueError, match="probs must have the shape of logits"):
        truncate([0.0, 1.0], probs=[1.0])


# ---- exact quantities of a pair ---------------------------------------------------------

PI, REF = np.array([0.5, 0.3, 0.2]), np.array([0.25, 0.25, 0.5])


def test_golden_pair_under_top_k() -> None:
    # top_k = 2: K = {0, 1}, S = 0.8, R = ref(K) = 0.5, mu = (0.625, 0.375, 0)
    pair = truncated_pair(np.log(PI), np.log(REF), top_k=2)
    assert pair.kept.tolist() == [True, True, False]
    assert float(pair.surviving_mass) == pytest.approx(0.8, rel=1e-15)
    assert float(pair.ref_kept_mass) == pytest.approx(0.5, rel=1e-15)
    assert float(pair.kl("KL(mu||pi)")) == pytest.approx(-math.log(0.8), rel=1e-14)
    assert float(pair.log_ratio_bias) == pytest.approx(math.log(0.8), rel=1e-14)
    # raw: l = log ref - log pi on K: log(0.25/0.5) = -log 2, log(0.25/0.3) = -log 1.2
    raw_k1 = 0.625 * math.log(2.0) + 0.375 * math.log(1.2)
    raw_k2 = 0.5 * (0.625 * math.log(2.0) ** 2 + 0.375 * math.log(1.2) ** 2)
    # E[r] = 0.625 * 0.5 + 0.375 * 0.25 / 0.3 = 0.625 = R / S, so k3 = k1 + R/S - 1
    raw_k3 = raw_k1 - 0.375
    # renormalised: KL(mu||ref) = 0.625 log(0.625/0.25) + 0.375 log(0.375/0.25), k3 - (1 - R)
    kl_mu_ref = 0.625 * math.log(2.5) + 0.375 * math.log(1.5)
    # kept mask: ref_K = (0.5, 0.5): KL(mu||ref_K) = 0.625 log 1.25 + 0.375 log 0.75
    kl_kept = 0.625 * math.log(1.25) + 0.375 * math.log(0.75)
    expected = {
        ("raw", "k1"): raw_k1, ("raw", "k2"): raw_k2, ("raw", "k3"): raw_k3,
        ("renormalised", "k1"): kl_mu_ref, ("renormalised", "k3"): kl_mu_ref - 0.5,
        ("kept_mask", "k1"): kl_kept, ("kept_mask", "k3"): kl_kept,
    }  # fmt: skip
    for (mode, name), value in expected.items():
        assert float(pair.moments(name, mode)[0]) == pytest.approx(value, rel=1e-13), (mode, name)
    kl_pi_ref = 0.5 * math.log(2.0) + 0.3 * math.log(1.2) + 0.2 * math.log(0.4)
    assert float(pair.kl("KL(pi||ref)")) == pytest.approx(kl_pi_ref, rel=1e-14)
    assert float(pair.target("renormalised")) == pytest.approx(kl_mu_ref, rel=1e-14)
    assert float(pair.kl("KL(pi_K||ref_K)")) == pytest.approx(kl_kept, rel=1e-14)
    table = pair.table(["k1", "k3"])
    raw = table[(table["mode"] == "raw") & (table["estimator"] == "k1")].iloc[0]
    assert raw["target"] == "KL(pi||ref)" and raw["bias"] == pytest.approx(raw_k1 - kl_pi_ref)


def test_closed_forms_hold_on_a_random_batch() -> None:
    rng = np.random.Generator(np.random.PCG64(7))
    z, z_ref = rng.normal(size=(2, 3, 64)) * 2.0
    pair = truncated_pair(z, z_ref, top_p=0.8, min_p=0.01, temperature=0.7)
    log_s, r = pair.log_mass, pair.ref_kept_mass
    kl_mu_ref = pair.kl("KL(mu||ref)")

    def mean(name, mode):
        return pair.moments(name, mode)[0]

    np.testing.assert_allclose(mean("k1", "raw"), kl_mu_ref + log_s, rtol=1e-12)
    np.testing.assert_allclose(mean("k3", "raw") - mean("k1", "raw"), r / np.exp(log_s) - 1,
                               rtol=1e-12, atol=1e-15)  # fmt: skip
    np.testing.assert_allclose(mean("k1", "renormalised"), kl_mu_ref, rtol=1e-12)
    np.testing.assert_allclose(mean("k3", "renormalised"), kl_mu_ref - (1 - r), rtol=1e-12)
    for name in ("k1", "k3"):
        np.testing.assert_allclose(mean(name, "kept_mask"), kl_mu_ref + np.log(r), rtol=1e-12)
    np.testing.assert_allclose(pair.kl("KL(mu||pi)"), -log_s, rtol=1e-12)
    # KL(truncated||original) = -log S agrees with klest.kl by enumeration
    mu = klest.Categorical(logits=pair.log_mu[0])
    original = klest.Categorical(logits=pair.log_pi[0])
    assert klest.kl(mu, original) == pytest.approx(-float(log_s[0]), rel=1e-12)


def test_no_truncation_means_no_bias() -> None:
    z, z_ref = np.log(PI), np.log(REF)
    for settings in ({"top_p": 1.0}, {"top_k": 3}, {"min_p": 0.0}):
        pair = truncated_pair(z, z_ref, **settings)
        assert float(pair.log_mass) == 0.0
        for mode in MODES:
            for name in ("k1", "k3"):
                assert float(pair.moments(name, mode)[0]) == pytest.approx(
                    float(pair.kl("KL(pi||ref)")), rel=1e-13
                )


def _gather(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """table (B, V) at x (n, B): the value of each draw's token in its row."""
    return np.take_along_axis(table, x.T, axis=-1).T


def _mc_agrees(values: np.ndarray, exact_mean: np.ndarray, exact_var: np.ndarray) -> None:
    n = values.shape[0]
    se = np.sqrt(exact_var / n)
    gap = np.abs(values.mean(axis=0) - exact_mean)
    assert np.all(gap <= Z * se + 1e-15), (gap, se)


def test_monte_carlo_agrees_with_the_exact_means() -> None:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(2026, spawn_key=(15,))))
    z, z_ref = rng.normal(size=(2, 3, 40)) * 1.5
    # the trainer at T' = 1, the engine at T = 0.8 with top-p and top-k: mu is not pi_K, so
    # that no mean below is a closed-form identity
    pair = truncated_pair(z, z_ref, top_p=0.85, top_k=12, temperature=0.8, trainer_temperature=1.0)
    n = 60_000
    draws = klest.Categorical(logits=pair.log_mu).sample(rng, n)  # (n, 3)
    assert pair.kept[np.arange(3), draws].all()
    for mode in MODES:
        l = _gather(pair.log_ratio(mode), draws)
        for name in ("k1", "k2", "k3"):
            mean, var = pair.moments(name, mode)
            _mc_agrees(klest.estimators.get(name)(l), mean, var)
    # the importance log-ratio log pi - log mu: mean -KL(mu||pi) (= log S only when T' = T)
    log_rho = _gather(pair.log_pi - np.where(pair.kept, pair.log_mu, 0.0), draws)
    mu = np.exp(pair.log_mu)
    table = np.where(pair.kept, pair.log_pi - pair.log_mu, 0.0)
    var = np.sum(mu * table**2, axis=-1) - np.sum(mu * table, axis=-1) ** 2
    _mc_agrees(log_rho, pair.log_ratio_bias, var)
    # S: the fraction of draws from the untruncated tempered distribution that land in K
    tempered = truncate(z, temperature=0.8).log_probs
    untruncated = klest.Categorical(logits=tempered).sample(rng, n)
    inside = pair.kept[np.arange(3), untruncated].astype(float)
    s = pair.surviving_mass
    _mc_agrees(inside, s, s * (1 - s))


def test_monte_carlo_log_s_and_minus_log_s_at_the_same_temperature() -> None:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(2026, spawn_key=(16,))))
    z, z_ref = rng.normal(size=(2, 50)) * 2.0
    pair = truncated_pair(z, z_ref, top_k=5, temperature=1.3)
    draws = klest.Categorical(logits=pair.log_mu).sample(rng, 20_000)
    # T' = T: log pi(x) - log mu(x) is log S for every draw (not only on average)
    log_rho = pair.log_pi[draws] - pair.log_mu[draws]
    np.testing.assert_allclose(log_rho, float(pair.log_mass), rtol=1e-12)
    # -log S = KL(mu||pi) by klest's simulation engine, q = mu against p = pi: r = pi/mu = S
    # on every draw, so k1 = -log S and k3 = S - 1 - log S exactly (zero variance)
    mu, pi = klest.Categorical(logits=pair.log_mu), klest.Categorical(logits=pair.log_pi)
    frame = klest.simulate(mu, pi, ["k1", "k3"], n=20_000, seed=3).to_frame()
    log_s, s = float(pair.log_mass), float(pair.surviving_mass)
    assert frame.loc["k1", "mean"] == pytest.approx(-log_s, rel=1e-12)
    assert frame.loc["k3", "mean"] == pytest.approx(s - 1 - log_s, rel=1e-12)


def test_pair_argument_errors() -> None:
    with pytest.raises(ValueError, match="ref_logits must have the shape of logits"):
        truncated_pair([0.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="ref_logits must be finite or -inf"):
        truncated_pair([0.0, 1.0], [0.0, np.nan])
    with pytest.raises(ValueError, match="trainer_temperature must be given with greedy"):
        truncated_pair([0.0, 1.0], [0.0, 1.0], temperature=0.0)
    with pytest.raises(ValueError, match="trainer_temperature must be finite and > 0"):
        truncated_pair([0.0, 1.0], [0.0, 1.0], trainer_temperature=0.0)
    pair = truncated_pair([0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="mode must be one of"):
        pair.moments("k1", "processed")
    with pytest.raises(ValueError, match="which must be one of"):
        pair.kl("KL(ref||pi)")


def test_the_settings_columns_are_numbers_with_nan_where_a_rule_is_off() -> None:
    # a study's frame concatenates sweeps of top-p and of top-k: with None for an unset rule,
    # pandas 2 warned (FutureWarning: all-NA parts) and pandas 3 made the columns objects
    sweeps = [
        truncation_sweep(np.log(PI), np.log(REF), [setting], estimators=["k1"], modes=["raw"])
        for setting in ({"top_k": 2}, {"top_p": 0.6})
    ]
    frame = pd.concat(sweeps, ignore_index=True)
    for column in ("top_k", "top_p", "min_p"):
        assert frame[column].dtype == np.float64, column
    assert frame["top_k"].tolist()[0] == 2.0 and np.isnan(frame["top_k"].tolist()[-1])
    assert np.isnan(frame["top_p"].tolist()[0]) and frame["top_p"].tolist()[-1] == 0.6
    assert frame["min_p"].isna().all()


def test_sweep_frame_and_study_config() -> None:
    df = truncation_sweep(np.log(PI), np.log(REF), [{"top_k": 1}, {"top_p": 0.6}],
                          estimators=["k1", "k3"])  # fmt: skip
    assert len(df) == 2 * len(MODES) * 2
    assert set(df["target"]) == set(TARGETS.values())
    # top_k = 1 keeps token 0 alone: S = 0.5; top_p = 0.6 keeps {0, 1} (0.5 above the 2nd)
    assert df.groupby(["top_k", "top_p"], dropna=False)["surviving_mass"].first().tolist() == [
        pytest.approx(0.5),
        pytest.approx(0.8),
    ]
    pairs = [{"name": "a", "policy": {"zipf": 1.0}, "reference": {"head": 1.0}}]
    raw = {"study": "truncation_bias", "vocab": 10, "top_p": [0.9], "top_k": [2], "pairs": pairs}
    assert parse_study(raw).settings["pairs"][0]["logits"].shape == (10,)
    bad = [
        ({"top_p": [0.9, 1.5]}, r"top_p\[1\]: top_p must be in"),
        ({"top_k": [0]}, r"top_k\[0\]: top_k must be a positive integer"),
        ({"pairs": [{"name": "a", "policy": {"zipf": -1}, "reference": {}}]}, r"pairs\[0\]"),
        ({"pairs": [{"name": "a", "policy": {"slope": 1}, "reference": {}}]}, "unknown key"),
        ({"convention": "tgi"}, "convention: expected one of"),
        ({"temperature": 1e-6}, "vLLM samples greedily"),
        ({"colour": 1}, "colour: unknown key"),
    ]
    for change, match in bad:
        with pytest.raises(ValueError, match=match):
            parse_study({**raw, **change})
