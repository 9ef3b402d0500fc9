"""klest.sequence: the DP against brute-force enumeration, unbiasedness, Monte Carlo within z*SE.

Brute force enumerates all V^T sequences of a tiny model (V = 3, T = 4) with their exact
probabilities and evaluates each estimator on every sequence with the same code that
evaluates it on samples (``estimator_values``), which does not use the DP. Monte Carlo
comparisons use fixed seeds and |mean - exact| <= 5 SE (about 60 comparisons: family-wise
false-failure rate far below 1e-4).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from klest.sequence import (
    SequenceEstimator,
    TabularAR,
    compare_sequence_estimators,
    conditional_kl,
    default_estimators,
    estimator_values,
    exact_estimator_moments,
    random_models,
    sequence_kl,
    variance_vs_length,
)
from klest.studies.rl_studies import load_study, parse_study, run_study

Z = 5.0
BASES = ("k1", "k2", "k3", "rev_kl", "low_var_kl")
ALL = default_estimators(BASES, off_policy=True, truncation=1.0)


def _models(order: int, seed: int = 0, length: int = 4):
    return random_models(vocab=3, order=order, length=length, rng=np.random.default_rng(seed),
                         scale=1.0, ref_scale=0.7, old_scale=0.5)  # fmt: skip


def _enumerate(model: TabularAR) -> tuple[np.ndarray, np.ndarray]:
    seqs = np.array(list(itertools.product(range(model.vocab), repeat=model.length)))
    return seqs, np.exp(model.token_log_probs(seqs).sum(axis=1))


@pytest.mark.parametrize("order", [1, 2])
def test_sequence_kl_dp_matches_enumeration(order):
    pi, ref, _ = _models(order)
    seqs, p = _enumerate(pi)
    assert math.isclose(p.sum(), 1.0, rel_tol=1e-12)
    log_q = ref.token_log_probs(seqs).sum(axis=1)
    brute = float(np.sum(p * (np.log(p) - log_q)))
    assert math.isclose(sequence_kl(pi, ref), brute, rel_tol=1e-12)
    # the DP's context distributions are the enumerated ones
    ctx = pi.contexts(seqs)
    d = pi.state_distributions()
    for t in range(pi.length):
        counts = np.bincount(ctx[:, t], weights=p, minlength=pi.n_states)
        assert np.allclose(d[t], counts, atol=1e-15)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("spec", ALL, ids=[s.name for s in ALL])
def test_exact_moments_match_enumeration(order, spec):
    pi, ref, old = _models(order, seed=order)
    sampler = old if spec.sampler == "old" else pi
    seqs, p = _enumerate(sampler)
    values = estimator_values(spec, pi, ref, old, seqs)
    mean, var = exact_estimator_moments(spec, pi, ref, old)
    if spec.kind == "sequence" and spec.base == "low_var_kl":  # no term form: no exact DP
        assert math.isnan(mean) and math.isnan(var)
        return
    brute_mean = float(p @ values)
    brute_var = float(p @ (values - brute_mean) ** 2)
    assert math.isclose(mean, brute_mean, rel_tol=1e-10, abs_tol=1e-13)
    assert math.isclose(var, brute_var, rel_tol=1e-9, abs_tol=1e-13)


@pytest.mark.parametrize("spec", ALL, ids=[s.name for s in ALL])
def test_unbiased_flag_matches_exact_bias(spec):
    pi, ref, old = _models(2, seed=5, length=6)
    mean, _ = exact_estimator_moments(spec, pi, ref, old)
    if math.isnan(mean):
        return
    bias = mean - sequence_kl(pi, ref)
    if spec.unbiased:
        assert abs(bias) < 1e-12
    elif spec.base == "low_var_kl":  # biased only where its clamps act (not in this model)
        twin = SequenceEstimator(spec.kind, "k3", spec.sampler, spec.weighting, spec.truncation)
        assert math.isclose(mean, exact_estimator_moments(twin, pi, ref, old)[0], rel_tol=1e-12)
    else:
        assert abs(bias) > 1e-4


def test_low_var_kl_sum_is_biased_when_its_clamp_acts():
    # token 1 has pi ~ 0.0025 but ref ~ 0.9975 in every context: l ~ 6 > the clamp's 2.53
    table = np.tile([3.0, -3.0], (3, 1))
    pi, ref = TabularAR(logits=table, length=3), TabularAR(logits=-table, length=3)
    mean, _ = exact_estimator_moments(SequenceEstimator("sum", "low_var_kl"), pi, ref)
    k3_mean, _ = exact_estimator_moments(SequenceEstimator("sum", "k3"), pi, ref)
    assert math.isclose(k3_mean, sequence_kl(pi, ref), rel_tol=1e-12)
    assert mean < sequence_kl(pi, ref) - 1.0


def test_rao_blackwell_and_per_token_sums():
    pi, ref, _ = _models(2, seed=3, length=10)
    kl = sequence_kl(pi, ref)
    rb_mean, rb_var = exact_estimator_moments(SequenceEstimator("rao_blackwell"), pi, ref)
    assert math.isclose(rb_mean, kl, rel_tol=1e-12)
    for base in ("k1", "k3"):
        mean, var = exact_estimator_moments(SequenceEstimator("sum", base), pi, ref)
        assert math.isclose(mean, kl, rel_tol=1e-12)
        assert rb_var < var  # conditioning on the prefix removes the token noise
    per_position = sequence_kl(pi, ref, per_position=True)
    assert per_position.shape == (10,)
    assert math.isclose(per_position.sum(), kl, rel_tol=1e-12)
    assert np.all(conditional_kl(pi, ref) >= 0)


def test_monte_carlo_within_standard_errors():
    pi, ref, old = _models(2, seed=11, length=6)
    df = compare_sequence_estimators(pi, ref, old, estimators=ALL, n=20_000,
                                     rng=np.random.default_rng(123))  # fmt: skip
    exact = df[np.isfinite(df["exact_mean"])]
    assert len(exact) == len(ALL) - 1
    assert np.all(np.abs(exact["z_mean"]) <= Z), exact[["estimator", "z_mean"]]
    unbiased = df[df["unbiased"]]
    assert np.all(np.abs(unbiased["mc_mean"] - unbiased["truth"]) <= Z * unbiased["se_mean"])


def test_sampling_frequencies():
    pi, _, _ = _models(1, seed=2, length=3)
    tokens = pi.sample(np.random.default_rng(9), 40_000)
    p_first = np.exp(pi.log_probs[pi.initial_state])
    freq = np.bincount(tokens[:, 0], minlength=3) / len(tokens)
    se = np.sqrt(p_first * (1 - p_first) / len(tokens))
    assert np.all(np.abs(freq - p_first) <= Z * se)
    # second token given the first: the conditional table of that context
    rows = tokens[:, 0] == 1
    p_next = np.exp(pi.log_probs[pi.next_state[pi.initial_state, 1]])
    freq2 = np.bincount(tokens[rows, 1], minlength=3) / rows.sum()
    assert np.all(np.abs(freq2 - p_next) <= Z * np.sqrt(p_next * (1 - p_next) / rows.sum()))


def test_variance_vs_length_uses_the_dp_at_each_length():
    pi, ref, old = _models(1, seed=4, length=1)
    specs = default_estimators(["k3"], off_policy=True)
    df = variance_vs_length(pi, ref, old, lengths=[1, 3, 5], estimators=specs)
    assert len(df) == 3 * len(specs)
    row = df[(df.length == 5) & (df.estimator == "RB, W_<t")].iloc[0]
    mean, var = exact_estimator_moments(specs[-2], pi.with_length(5), ref.with_length(5),
                                        old.with_length(5))  # fmt: skip
    assert specs[-2].name == "RB, W_<t"
    assert math.isclose(row["exact_var"], var) and math.isclose(row["exact_mean"], mean)


def test_validation():
    with pytest.raises(ValueError, match="logits must have shape"):
        TabularAR(logits=np.zeros((3, 3)), length=2)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        TabularAR(logits=np.zeros((4, 3)), length=0)
    pi, ref, _ = _models(1)
    with pytest.raises(ValueError, match="does not match the policy"):
        sequence_kl(pi, ref.with_length(5))
    with pytest.raises(ValueError, match="needs sampler='old'"):
        SequenceEstimator("sum", "k3", weighting="prefix")
    with pytest.raises(ValueError, match="not available for kind 'sequence'"):
        SequenceEstimator("sequence", "k3", sampler="old", weighting="token")
    with pytest.raises(ValueError, match="base: unknown estimator"):
        SequenceEstimator("sum", "k7")
    with pytest.raises(ValueError, match="pass old="):
        exact_estimator_moments(SequenceEstimator("sum", "k1", "old", "prefix"), pi, ref)
    with pytest.raises(ValueError, match="tokens must lie in"):
        pi.token_log_probs(np.full((1, 4), 3))


def test_studies_load_and_validate():
    study = parse_study({"study": "sequence_variance", "vocab": 3, "order": 1,
                         "lengths": [1, 2], "bases": ["k3"]})  # fmt: skip
    frame = run_study(study)
    assert set(frame["length"]) == {1, 2} and frame["exact_var"].notna().all()
    with pytest.raises(ValueError, match=r"<config>: lengths: missing"):
        parse_study({"study": "sequence_variance"})
    with pytest.raises(ValueError, match=r"vocab: expected an integer >= 2"):
        parse_study({"study": "sequence_variance", "lengths": [1], "vocab": 1})
    with pytest.raises(ValueError, match=r"colour: unknown key"):
        parse_study({"study": "gradient_coefficients", "colour": "red"})
    with pytest.raises(ValueError, match=r"placements\[0\]: unknown 'in_loss'"):
        parse_study({"study": "gradient_table", "placements": ["in_loss"]})
    with pytest.raises(ValueError, match=r"study: expected one of"):
        parse_study({"study": "gradient"})
    root = __import__("pathlib").Path(__file__).parents[1] / "experiments"
    for path in sorted(root.glob("rl_*.toml")):
        assert load_study(path).name == path.stem
