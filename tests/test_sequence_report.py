"""The sequence-level results users read: the study config, its frame, fig13's grouped curves,
the partial-vs-full table, the fixed points of the tabular sequential bandit and the claims of
figures/claims.md section "Sequence-level KL gradients".

Frame numbers are checked against klest.sequence.sequence_gradient called directly (the same
exact computation: 1e-12 relative, rounding only); the soft-Bellman optimum against
π_ref·exp(R/β)/Z computed over the enumerated responses (1e-12); the fixed point of the
configurations whose expected gradient is ∇KL(π‖π_ref) against π* (KL <= 1e-12: the field is
solved to 1e-10, so the policy is within ~1e-10 of π* in the logits and the KL, quadratic,
within ~1e-20, plus rounding); every claim is shown to fail on a frame where it is false.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from klest.report.claims import evaluate_sequence_claims
from klest.report.claims_sequence import SEQUENCE_CLAIMS, sequence_facts, sequence_preamble
from klest.report.figures import FIGURES, Runs
from klest.report.plots_rl import plot_for, sequence_curves
from klest.sequence import TabularAR, sequence_gradient, sequence_kl
from klest.sequence.tables import (
    aggregation_table,
    fixed_point,
    fixed_point_table,
    forward_optimum,
    partial_vs_full_table,
    response_probs,
    responses,
    reward_gradient,
    sequence_gradient_table,
    soft_optimum,
)
from klest.studies.experiment import ConfigError, default_experiments_dir
from klest.studies.rl_studies import load_study, parse_study

CONFIG = default_experiments_dir() / "rl_sequence_gradients.toml"
ULPS = 1e-12
BASE = {"study": "sequence_gradients", "lengths": [1, 2, 3]}


@pytest.fixture(scope="module")
def study():  # type: ignore[no-untyped-def]
    return load_study(CONFIG)


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return sequence_facts()


def _tree(seed: int = 5) -> tuple[TabularAR, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = TabularAR.random(vocab=3, order=2, length=3, rng=rng, eos=2)
    return ref, rng.standard_normal(len(responses(ref)))


# ---- the config ---------------------------------------------------------------------------


def test_the_committed_config_is_valid(study) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    assert study.study == "sequence_gradients" and study.name == "rl_sequence_gradients"
    assert s["pi"].eos == 2 and s["pi"].vocab == 3 and s["lengths"][-1] == 10
    rng = np.random.Generator(np.random.PCG64(0))  # one stream: policy, then reference noise
    logits = rng.standard_normal((4, 3))
    logits[:, 2] -= 1.5
    np.testing.assert_array_equal(s["pi"].logits, logits)
    np.testing.assert_array_equal(s["ref"].logits, logits + 0.5 * rng.standard_normal((4, 3)))
    fp = s["fixed_points"]
    assert fp["ref"].order == fp["ref"].length - 1 and fp["reward"].shape == (15,)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"lengths": [2, 1]}, "lengths"),
        ({"lengths": [1, 40]}, "lengths"),  # too many responses for the covariance trace
        ({"eos": 7}, "eos"),
        ({"estimators": ["k9"]}, "estimators[0]"),
        ({"placements": ["reward"]}, "placements[0]"),
        ({"aggregations": ["mean"]}, "aggregations[0]"),
        ({"fixed_points": {"betas": [0.0]}}, "fixed_points.betas"),
        ({"fixed_points": {"length": 1}}, "fixed_points.length"),
        ({"fixed_points": {"eos": 3}}, "fixed_points.eos"),
        ({"fixed_points": {"colour": 1}}, "fixed_points.colour"),
        ({"fixed_points": 3}, "fixed_points"),
        ({"colour": 1}, "colour"),
    ],
)
def test_a_bad_value_names_its_key(change, key) -> None:  # type: ignore[no-untyped-def]
    raw = {k: v for k, v in {**BASE, **change}.items()}
    with pytest.raises(ConfigError) as info:
        parse_study(raw, "x.toml")
    assert info.value.key == key, str(info.value)


# ---- the frames ---------------------------------------------------------------------------


def test_gradient_rows_are_sequence_gradient_called_directly(study, facts) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    grad = facts[facts["table"] == "gradient"]
    assert not grad.duplicated(["length", "placement", "aggregation", "estimator"]).any()
    assert len(grad) == len(s["lengths"]) * (3 * 4 * 4 + 4 + 1)  # 4 placements x 4 x 3, RLOO, RB
    for _, row in grad.sample(16, random_state=0).iterrows():
        pi, ref = s["pi"].with_length(int(row["length"])), s["ref"].with_length(int(row["length"]))
        options = {} if row["placement"] == "rao_blackwell" else {
            "estimator": row["estimator"], "aggregation": row["aggregation"]}  # fmt: skip
        g = sequence_gradient(pi, ref, placement=row["placement"], **options)
        assert row["verdict"] == g.verdict
        assert row["relative_error"] == pytest.approx(g.relative_error, rel=ULPS, abs=1e-15)
        assert row["cov_trace"] == pytest.approx(g.cov_trace, rel=ULPS)
        T, varies = int(row["length"]), row["length_var"] > 0  # a constant factor divided out
        factors = {"seq_mean_token_sum": 1.0, "seq_mean_token_sum_norm": 1.0 / T,
                   "token_mean": 1.0 / row["mean_length"],
                   "seq_mean_token_mean": 1.0 if varies else 1.0 / T}  # fmt: skip
        factor = factors[row["aggregation"]]
        if row["placement"] == "rao_blackwell":
            factor = 1.0
        want = np.linalg.norm(g.true["KL(pi||ref)"] - g.expected / factor)
        assert row["missing_norm"] == pytest.approx(want, rel=1e-10, abs=1e-15)


def test_partial_vs_full_is_the_token_level_loss_and_grows_from_zero(facts) -> None:  # type: ignore[no-untyped-def]
    table = partial_vs_full_table(facts[facts["table"] == "gradient"])
    assert table["length"].tolist() == [1, 2, 3, 4, 6, 8, 10]
    assert table["verdict"].tolist() == ["KL(pi||ref)"] + ["partial"] * 6  # T = 1: exact
    assert table["relative_error"].iloc[0] <= 1e-12
    product = table["relative_error"] * table["true_norm"]
    np.testing.assert_allclose(table["missing_norm"], product, rtol=1e-12)
    # the missing part is the score term through later contexts: RB minus the partial gradient
    study = load_study(CONFIG)
    pi, ref = study.settings["pi"].with_length(4), study.settings["ref"].with_length(4)
    rb = sequence_gradient(pi, ref, placement="rao_blackwell").expected
    partial = sequence_gradient(pi, ref, estimator="k2", placement="loss").expected
    row = table[table["length"] == 4].iloc[0]
    assert np.linalg.norm(rb - partial) == pytest.approx(row["missing_norm"], rel=1e-10)
    with pytest.raises(ValueError, match="no k2 loss"):
        partial_vs_full_table(facts[facts["table"] == "gradient"].query("estimator != 'k2'"))


def test_aggregations_coincide_without_an_eos_and_differ_with_one() -> None:
    rng = np.random.default_rng(2)
    pi = TabularAR.random(vocab=3, order=1, length=1, rng=rng, eos=2)
    df = aggregation_table(pi, pi.perturbed(rng, 0.5), [1, 3])
    same = df[(df["model"] == "no eos") | (df["length"] == 1)]
    assert (same["relative_difference"] <= 1e-12).all() and (same["length_var"] == 0).all()
    differ = df[(df["model"] == "eos") & (df["length"] == 3)]
    assert (differ["relative_difference"] > 1e-3).all() and (differ["length_var"] > 0).all()


def test_equal_curves_share_a_line_and_the_figure_is_drawn(facts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    grad = facts[facts["table"] == "gradient"]
    loss = grad[grad["placement"] == "loss"]
    groups = sequence_curves(loss, "cosine")
    # constant aggregations rescale the gradient: one cosine curve per estimator for them
    assert [("k2", "token_mean"), ("k2", "seq_mean_token_sum"),
            ("k2", "seq_mean_token_sum_norm")] in groups  # fmt: skip
    assert all(len(g) == 1 for g in sequence_curves(loss, "cov_trace"))
    moved = loss.copy()
    moved.loc[moved["aggregation"] == "token_mean", "cosine"] *= 1 + 1e-6
    assert [("k2", "token_mean")] in sequence_curves(moved, "cosine")
    spec = FIGURES["fig13_sequence_gradients"]
    pd.testing.assert_frame_equal(spec.data(Runs()), facts)  # the claims' frame, computed once
    fig = plot_for(facts, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 18
    assert list(tmp_path.iterdir()) == []


# ---- the sequential bandit ----------------------------------------------------------------


def test_soft_bellman_optimum_is_the_gibbs_distribution() -> None:
    ref, R = _tree()
    x = responses(ref)
    for beta in (0.3, 1.0, 4.0):
        want = response_probs(ref, x) * np.exp(R / beta)
        got = response_probs(soft_optimum(ref, R, beta), x)
        np.testing.assert_allclose(got, want / want.sum(), rtol=ULPS)


def test_forward_optimum_is_stationary_on_the_simplex() -> None:
    ref, R = _tree()
    x = responses(ref)
    p_ref = response_probs(ref, x)
    for beta in (0.5, 2.0):
        p = response_probs(forward_optimum(ref, R, beta), x)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        lam = R + beta * p_ref / p  # the Lagrange condition: constant over responses
        assert np.ptp(lam) <= 1e-10 * np.abs(lam).max()


def test_reward_gradient_matches_autograd() -> None:
    torch = pytest.importorskip("torch")
    ref, R = _tree()
    x = responses(ref)
    ctx, valid = torch.as_tensor(ref.contexts(x)), torch.as_tensor(x >= 0)
    tok = torch.as_tensor(np.maximum(x, 0))
    theta = torch.tensor(ref.logits, requires_grad=True)
    table = torch.log_softmax(theta.reshape(-1, ref.vocab), dim=-1)
    lp = torch.where(valid, table[ctx, tok], torch.zeros((), dtype=torch.float64)).sum(1)
    (lp.exp() * torch.as_tensor(R)).sum().backward()
    np.testing.assert_allclose(reward_gradient(ref, R), theta.grad.numpy(), rtol=1e-10,
                               atol=1e-14)  # fmt: skip


@pytest.mark.parametrize(
    ("placement", "estimator"),
    [("reward_to_go", "k1"), ("rao_blackwell", "rb"), ("reward_sum", "k1"),
     ("reward_scalar", "k1")],
)  # fmt: skip
def test_unbiased_configurations_reach_the_kl_regularised_optimum(placement, estimator) -> None:  # type: ignore[no-untyped-def]
    ref, R = _tree()
    for beta in (0.5, 2.0):
        fp = fixed_point(ref, R, beta, placement=placement, estimator=estimator)
        assert fp.status == "converged" and fp.max_field <= 1e-10 and fp.min_eigenvalue > 0
        assert abs(sequence_kl(fp.policy, soft_optimum(ref, R, beta))) <= 1e-12


def test_the_token_level_loss_and_k1_loss_do_not(facts) -> None:  # type: ignore[no-untyped-def]
    ref, R = _tree()
    df = fixed_point_table(ref, R, [1.0], [("loss", "seq_mean_token_sum", "k2"),
                                           ("loss", "seq_mean_token_sum", "k1")])  # fmt: skip
    k2, k1 = df.iloc[0], df.iloc[1]
    assert k2["status"] == "converged" and k2["kl_to_optimum"] > 1e-6 and k2["verdict"] == "partial"
    assert k1["status"] == "boundary"  # no regularisation: heads for a deterministic policy
    fp = facts[facts["table"] == "fixed_point"]
    exact = fp[fp["placement"].isin(["reward_to_go", "rao_blackwell", "reward_scalar"])
               & fp["estimator"].isin(["k1", "rb"])]  # fmt: skip
    assert (exact["status"] == "converged").all() and (exact["kl_to_optimum"].abs() <= 1e-12).all()


def test_small_tables_match_the_frame_columns() -> None:
    rng = np.random.default_rng(0)
    pi = TabularAR.random(vocab=3, order=1, length=1, rng=rng, eos=2)
    options = {"aggregations": ["seq_mean_token_sum"], "estimators": ["k1"]}
    df = sequence_gradient_table(pi, pi.perturbed(rng, 0.5), [1, 2], placements=["loss"], **options)
    assert df["verdict"].tolist() == ["zero", "zero"] and df["cosine"].isna().all()


# ---- the claims ---------------------------------------------------------------------------


def test_the_claims_hold_on_the_committed_panel(facts) -> None:  # type: ignore[no-untyped-def]
    frame = evaluate_sequence_claims(facts)
    assert list(frame["key"]) == [c.key for c in SEQUENCE_CLAIMS]
    assert (frame["verdict"] == "true").all(), frame[["key", "verdict", "fails_for"]]
    assert (frame["n_tested"] > 0).all()
    text = sequence_preamble(facts)
    assert "| T | E[T_x] | verdict |" in text and "KL(π‖π*)" in text


def _edit(facts: pd.DataFrame, table: str, where: dict, **values) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    out = facts.copy()
    pick = out["table"] == table
    for column, value in where.items():
        pick &= out[column] == value
    assert pick.any()
    for column, value in values.items():
        out.loc[pick, column] = value
    return out


LOSS_K2 = {"placement": "loss", "estimator": "k2", "aggregation": "seq_mean_token_sum"}
TO_GO_K1 = {"placement": "reward_to_go", "estimator": "k1", "aggregation": "seq_mean_token_sum"}


@pytest.mark.parametrize(
    ("index", "table", "where", "values"),
    [
        (0, "gradient", {**LOSS_K2, "length": 4}, {"verdict": "KL(pi||ref)"}),
        (1, "fixed_point", {**LOSS_K2, "beta": 0.5}, {"kl_to_optimum": 0.0}),
        (2, "gradient", {**TO_GO_K1, "length": 3}, {"verdict": "neither"}),
        (3, "fixed_point", {**TO_GO_K1, "beta": 2.0}, {"kl_to_optimum": 1e-3}),
        (3, "fixed_point", {**TO_GO_K1, "beta": 2.0}, {"status": "no fixed point"}),
        (4, "gradient", {"placement": "loss", "estimator": "k1", "length": 2,
                         "aggregation": "seq_mean_token_sum"}, {"verdict": "neither"}),
        (5, "gradient", {"placement": "loss", "estimator": "k3", "length": 2,
                         "aggregation": "seq_mean_token_sum"}, {"relative_error": 1e-12}),
        (6, "gradient", {**TO_GO_K1, "estimator": "k3", "length": 6}, {"relative_error": 0.0}),
        (7, "gradient", {**TO_GO_K1, "estimator": "k2", "length": 8}, {"cov_trace": 1e3}),
        (8, "aggregation", {"model": "eos", "length": 3, "estimator": "k3"},
         {"relative_difference": 0.0}),
        (8, "aggregation", {"model": "no eos", "length": 3, "estimator": "k3"},
         {"relative_difference": 1e-3}),
    ],
)  # fmt: skip
def test_each_claim_fails_where_its_statement_is_false(facts, index, table, where, values) -> None:  # type: ignore[no-untyped-def]
    claim = SEQUENCE_CLAIMS[index]
    assert all(ok for _, ok, _, _ in claim.test(facts))
    units = claim.test(_edit(facts, table, where, **values))
    assert sum(not ok for _, ok, _, _ in units) == 1, claim.key
    row = evaluate_sequence_claims(_edit(facts, table, where, **values),
                                   [claim]).iloc[0]  # fmt: skip
    assert row["verdict"] == "partly true"


def test_a_missing_table_fails_rather_than_passing_silently(facts) -> None:  # type: ignore[no-untyped-def]
    empty = facts[facts["table"] != "fixed_point"]
    frame = evaluate_sequence_claims(empty)
    assert set(frame.loc[frame["n_tested"] == 0, "key"]) == {
        "seq_token_loss_fixed_point", "seq_k1_reward_fixed_point"}  # fmt: skip
    assert (frame.loc[frame["n_tested"] == 0, "verdict"] == "not tested").all()
