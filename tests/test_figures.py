"""The figure registry regenerates every figure from its config(s), and `klest figures` writes
PNG + PDF + CSV deterministically (tiny n). Each figure's data is checked against values
known in closed form (Gaussian mean shift: Var[k1] = 2 KL, Var[k3] = e^(2 KL) - 1 - 2 KL,
k2's bias = KL^2 / 2; the per-sample gradient coefficients; the established verdicts of
which KL each estimator x placement differentiates), and the Monte Carlo points of exactly
Gaussian estimators (k1 here) against their exact values with z = 5 on their standard errors."""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import klest
from klest.cli import main
from klest.report.figure_files import write_figure_set
from klest.report.figures import FIGURES, Runs, build_figure
from klest.studies.experiment import default_experiments_dir, load_config

N = 2_000
SUFFIXES = (".png", ".pdf", ".csv")
Z = 5.0
CSV_RTOL = 1e-9  # the CSVs hold 12 significant digits (of the log-ratio too)


def _exact(frame: pd.DataFrame, estimator: str, column: str = "estimator") -> pd.DataFrame:
    return frame[(frame["source"] == "exact") & (frame[column] == estimator)]


def _mc(frame: pd.DataFrame, estimator: str) -> pd.DataFrame:
    return frame[(frame["source"] == "monte_carlo") & (frame["estimator"] == estimator)]


def _check_kl_sweep(frame: pd.DataFrame) -> None:
    """Figures 1-2, q = N(0,1), p = N(mu,1): KL = mu^2/2."""
    k1, k2, k3 = (_exact(frame, name) for name in ("k1", "k2", "k3"))
    assert np.allclose(k1["rel_std"], np.sqrt(2.0 / k1["kl_qp"]), rtol=CSV_RTOL)
    assert np.allclose(k1["rel_bias"], 0.0, atol=1e-12)
    assert np.allclose(k2["rel_bias"], k2["kl_qp"] / 2.0, rtol=CSV_RTOL)
    kl = k3["kl_qp"].to_numpy()
    assert np.allclose(k3["rel_std"], np.sqrt(np.expm1(2 * kl) - 2 * kl) / kl, rtol=CSV_RTOL)
    mc = _mc(frame, "k1")  # k1 = mu^2/2 - mu x is exactly Gaussian: its error bars hold
    assert len(mc) == 9 and (mc["error_bar"] == "ok").all() and (mc["n_draws"] == N).all()
    assert (np.abs(mc["rel_bias"]) <= Z * mc["rel_bias_se"]).all()
    assert (np.abs(mc["rel_std"] - np.sqrt(2.0 / mc["kl_qp"])) <= Z * mc["rel_std_se"]).all()


def _check_curves(frame: pd.DataFrame) -> None:
    def values(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = frame[frame["estimator"] == name]
        return rows["log_ratio"].to_numpy(), rows["value"].to_numpy()

    lr, k1 = values("k1")
    assert np.array_equal(k1, -lr)
    lr, k2 = values("k2")
    assert np.allclose(k2, 0.5 * lr**2, rtol=CSV_RTOL, atol=0.0)
    lr, k3 = values("k3")
    assert np.allclose(k3, np.expm1(lr) - lr, rtol=CSV_RTOL, atol=1e-15)
    lr, rev = values("rev_kl")
    assert np.allclose(rev, np.exp(lr) * lr - np.expm1(lr), rtol=CSV_RTOL, atol=1e-15)
    lr, lvk = values("low_var_kl")
    inner = np.abs(lr) <= 20.0
    expected = np.minimum(np.expm1(lr[inner]) - lr[inner], 10.0)
    assert np.allclose(lvk[inner], expected, rtol=CSV_RTOL, atol=1e-15)
    assert lvk.max() == 10.0


def _check_histograms(frame: pd.DataFrame) -> None:
    # every 16th draw of N goes into the histograms
    assert (frame["n_drawn"] == N // 16).all() and frame["count"].sum() > 0
    for (_, name), rows in frame.groupby(["case", "estimator"]):
        assert rows["count"].sum() + rows["below"].iloc[0] + rows["above"].iloc[0] == N // 16
        width = (rows["bin_right"] - rows["bin_left"]).to_numpy()
        assert np.allclose(rows["density"] * width * (N // 16), rows["count"], rtol=CSV_RTOL)
        if name == "k1":  # k1 ~ N(KL, 2 KL): the histogram's mean is near KL
            kl, n = rows["kl_qp"].iloc[0], rows["count"].sum()
            middle = 0.5 * (rows["bin_left"] + rows["bin_right"])
            mean = float((middle * rows["count"]).sum() / n)
            assert abs(mean - kl) <= width.max() + Z * math.sqrt(2 * kl / n), (kl, mean)


def _check_batch_mse(frame: pd.DataFrame) -> None:
    for kl in (0.005, 0.5):  # the two mean-shift cases: mu^2 = 2 KL
        mu2 = 2.0 * kl
        k1 = _exact(frame[np.isclose(frame["kl_qp"], kl)], "k1")
        assert np.allclose(k1["rel_rmse"], np.sqrt(mu2 / k1["batch_size"]) / kl, rtol=CSV_RTOL)
        k2 = _exact(frame[np.isclose(frame["kl_qp"], kl)], "k2")
        var = mu2**2 / 2 + mu2**3 / 4
        expected = np.sqrt((mu2**2 / 8) ** 2 + var / k2["batch_size"]) / kl
        assert np.allclose(k2["rel_rmse"], expected, rtol=CSV_RTOL)
        mc = _mc(frame[np.isclose(frame["kl_qp"], kl)], "k1")
        one = mc[mc["batch_size"] == 1.0]  # one draw: the variance dominates the MSE
        assert len(one) == 1
        gap = abs(one["rel_rmse"].iloc[0] - math.sqrt(mu2) / kl)
        assert gap <= Z * one["rel_rmse_se"].iloc[0]


def _check_variance_ratio(frame: pd.DataFrame) -> None:
    shift = frame["series"].str.startswith("Normal shift")
    exact = frame[shift & (frame["source"] == "exact")]
    kl = exact["kl_qp"].to_numpy()
    assert np.allclose(exact["var_ratio"], (np.expm1(2 * kl) - 2 * kl) / (2 * kl), rtol=CSV_RTOL)
    mc = frame[shift & (frame["source"] == "monte_carlo") & (frame["kl_qp"] <= 0.125)]
    assert len(mc) == 3
    kl = mc["kl_qp"].to_numpy()
    expected = (np.expm1(2 * kl) - 2 * kl) / (2 * kl)
    assert (np.abs(mc["var_ratio"] - expected) <= Z * mc["var_ratio_se"]).all()


def _verdicts(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(r.estimator, r.placement): r.gradient_of for r in frame.itertuples()}


def _check_gradient_table(frame: pd.DataFrame) -> None:
    # the established results: k1 as a loss has zero expected gradient, k2 as a loss and k1
    # as a reward differentiate KL(pi||ref), k3 as a loss KL(ref||pi)
    verdicts = _verdicts(frame)
    assert verdicts[("k1", "loss")] == "zero"
    assert verdicts[("k2", "loss")] == verdicts[("k1", "reward")] == "KL(pi||ref)"
    assert verdicts[("k3", "loss")] == "KL(ref||pi)"
    assert verdicts[("k3", "loss_is")] == "KL(pi||ref)"
    assert {verdicts[(e, "straight_through")] for e in ("k1", "k2", "k3")} == {"KL(pi||ref)"}
    for row in frame.itertuples():
        if row.gradient_of in ("KL(pi||ref)", "KL(ref||pi)"):
            assert frame.loc[row.Index, f"rel_err_{row.gradient_of}"] < 1e-6


def _check_coefficients(frame: pd.DataFrame) -> None:
    def coefficient(name: str, placement: str) -> tuple[np.ndarray, np.ndarray]:
        rows = frame[(frame["estimator"] == name) & (frame["placement"] == placement)]
        return rows["log_ratio"].to_numpy(), rows["coefficient"].to_numpy()

    l, c = coefficient("k1", "loss")
    assert np.allclose(c, 1.0, rtol=CSV_RTOL)  # grad k1 = grad log pi
    l, c = coefficient("k2", "loss")
    assert np.allclose(c, -l, rtol=CSV_RTOL, atol=1e-12)
    l, c = coefficient("k3", "loss")
    assert np.allclose(c, -np.expm1(l), rtol=CSV_RTOL, atol=1e-12)
    for name, value in (("k1", -l), ("k2", 0.5 * l**2), ("k3", np.expm1(l) - l)):
        assert np.allclose(coefficient(name, "reward")[1], value), name  # REINFORCE: k itself
    assert np.allclose(coefficient("KL(pi||ref)", "true")[1], -l)
    assert np.allclose(coefficient("KL(ref||pi)", "true")[1], -np.expm1(l))


def _check_fixed_points(frame: pd.DataFrame) -> None:
    interior = frame[frame["status"] == "interior"]
    for objective in ("KL(pi||ref)", "KL(ref||pi)"):
        rows = interior[interior["objective"] == objective]
        assert len(rows) > 0 and (rows[f"tv_{objective}"] < 1e-9).all(), objective


def _check_sequence_variance(frame: pd.DataFrame) -> None:
    unbiased = frame[frame["unbiased"].astype(bool)]
    assert np.allclose(unbiased["exact_mean"], unbiased["truth"], rtol=CSV_RTOL)
    one = frame[frame["length"] == 1].set_index("estimator")
    assert one.loc["sum k1", "exact_var"] == pytest.approx(one.loc["k1(L)", "exact_var"])
    assert one.loc["RB", "exact_var"] == pytest.approx(0.0, abs=1e-15)  # one token: exact
    truth = frame.drop_duplicates("length").sort_values("length")["truth"].to_numpy()
    assert (np.diff(truth) > 0).all()


def _check_offpolicy_bias(frame: pd.DataFrame) -> None:
    assert not frame.duplicated(["release", "kl_mu_pi"]).any()
    on = frame[frame["kl_mu_pi"] == 0.0].set_index("release")
    assert on.loc["trl@1.9.0", "verdict"] == on.loc["verl@0.9.0", "verdict"] == "KL(ref||pi)"
    assert on.loc["nemo_rl@0.7.0", "verdict"] == "KL(pi||ref)"
    assert (on.loc[on["verdict"] == "KL(pi||ref)", "relative_bias"] < 1e-9).all()
    assert (frame.loc[frame["kl_mu_pi"] > 0, "verdict"] != "KL(pi||ref)").all()


def _check_sequence_gradients(frame: pd.DataFrame) -> None:
    grad = frame[frame["table"] == "gradient"]
    assert not grad.duplicated(["length", "placement", "aggregation", "estimator"]).any()
    sums = grad[grad["aggregation"] == "seq_mean_token_sum"].set_index(
        ["length", "placement", "estimator"]
    )["verdict"]
    for t in sorted(set(grad["length"])):
        assert sums[(t, "reward_to_go", "k1")] == sums[(t, "rao_blackwell", "rb")] == "KL(pi||ref)"
        assert sums[(t, "loss", "k1")] == "zero"
        assert sums[(t, "loss", "k2")] == ("KL(pi||ref)" if t == 1 else "partial")
    assert (grad.loc[grad["verdict"] == "KL(pi||ref)", "relative_error"] < 1e-9).all()
    product = grad["relative_error"] * grad["true_norm"]
    assert np.allclose(grad["missing_norm"], product, rtol=CSV_RTOL, atol=1e-15)
    fp = frame[frame["table"] == "fixed_point"]
    unbiased = fp[fp["verdict"] == "KL(pi||ref)"]
    assert len(unbiased) > 0 and (unbiased["status"] == "converged").all()
    assert (unbiased["kl_to_optimum"].abs() < 1e-12).all()


def _check_truncation_bias(frame: pd.DataFrame) -> None:
    """fig14: exact identities of truncated sampling (klest.rl.truncation's closed forms)."""
    whole = ((frame["rule"] == "top_p") & (frame["value"] == 1.0)) | (
        (frame["rule"] == "top_k") & (frame["value"] >= 32000)
    )
    assert whole.any() and np.allclose(frame.loc[whole, "surviving_mass"], 1.0, rtol=CSV_RTOL)
    assert np.allclose(frame.loc[whole, "bias_vs_kl_pi_ref"], 0.0, atol=1e-12)
    top_p = frame[frame["rule"] == "top_p"]  # top-p keeps a mass >= top_p
    assert (top_p["surviving_mass"] >= top_p["value"] * (1 - CSV_RTOL)).all()
    assert np.allclose(frame["kl_mu_pi"], -frame["log_surviving_mass"], rtol=CSV_RTOL)
    kept = frame[frame["mode"] == "kept_mask"]  # k1, k3 unbiased for KL(pi_K||ref_K)
    assert (kept["target"] == "KL(pi_K||ref_K)").all()
    assert np.allclose(kept["bias"], 0.0, atol=1e-12)
    raw = frame[frame["mode"] == "raw"].set_index(["pair", "rule", "value", "estimator"])
    k1, k3 = raw.xs("k1", level="estimator"), raw.xs("k3", level="estimator")
    ratio = k1["ref_kept_mass"] / k1["surviving_mass"] - 1.0  # E[k3] - E[k1] = R/S - 1
    assert np.allclose(k3["mean"] - k1["mean"], ratio, rtol=1e-8, atol=1e-12)
    flatter = k1.xs("zipf: pi flatter", level="pair")  # the logged k1 goes negative
    assert (flatter.loc[flatter["surviving_mass"] <= 0.9, "mean"] < 0).all()


#: figure -> checks of its data against known values
CHECKS: dict[str, Callable[[pd.DataFrame], None]] = {
    "fig1_rel_std": _check_kl_sweep,
    "fig14_truncation_bias": _check_truncation_bias,
    "fig2_rel_bias": _check_kl_sweep,
    "fig3_estimator_curves": _check_curves,
    "fig4_histograms": _check_histograms,
    "fig5_batch_mse": _check_batch_mse,
    "fig6_k3_vs_k1": _check_variance_ratio,
    "fig7_gradient_table": _check_gradient_table,
    "fig8_gradient_coefficients": _check_coefficients,
    "fig9_bandit_fixed_points": _check_fixed_points,
    "fig10_sequence_variance": _check_sequence_variance,
    "fig11_gaussian_gradient_table": _check_gradient_table,
    "fig12_offpolicy_bias": _check_offpolicy_bias,
    "fig13_sequence_gradients": _check_sequence_gradients,
}


def _generate(directory: Path) -> list[Path]:
    with warnings.catch_warnings():  # heavy-tailed cases warn at any n; they are drawn hollow
        warnings.simplefilter("ignore", klest.ConvergenceWarning)
        return write_figure_set(directory, n=N, workers=1)


#: one xdist worker runs this module, so the (session-scoped) figure set is built once per run,
#: not once per worker (`make test` uses --dist loadgroup)
pytestmark = pytest.mark.xdist_group("figures")

#: regenerated a second time to check the bytes (the Monte Carlo figures; kept few for time)
AGAIN = ("fig4_histograms", "fig5_batch_mse")


# session scope: xdist may interleave other modules' tests with this one's on its worker,
# and a module-scoped fixture would then be torn down and built again
@pytest.fixture(scope="session")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    _generate(first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", klest.ConvergenceWarning)
        for name in (*AGAIN, "claims"):
            write_figure_set(second, only=name, n=N, workers=1)
    return first, second


def test_every_config_a_figure_names_exists_and_is_valid() -> None:
    directory = default_experiments_dir()
    for spec in FIGURES.values():
        for name in spec.configs:
            config = load_config(directory / f"{name}.toml")
            assert config.name == name and config.cases


@pytest.mark.parametrize("name", list(FIGURES))
def test_each_figure_is_written_as_png_pdf_and_csv(two_runs, name) -> None:
    first, _ = two_runs
    png, pdf, csv = (first / f"{name}{suffix}" for suffix in SUFFIXES)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert pdf.read_bytes().startswith(b"%PDF-")
    frame = pd.read_csv(csv)
    if "source" in frame:  # Monte Carlo points from the tiny runs, exact rows beside them
        assert set(frame["source"]) == {"exact", "monte_carlo"}
        mc = frame[frame["source"] == "monte_carlo"]
        assert (mc["n_draws"] == N).all()
    CHECKS[name](frame)


def test_every_figure_has_checks() -> None:
    assert set(CHECKS) == set(FIGURES)


def test_claims_and_index_are_written(two_runs) -> None:
    first, _ = two_runs
    text = (first / "claims.md").read_text(encoding="utf-8")
    assert text.startswith("# Claims about the KL estimators")
    assert len(pd.read_csv(first / "claims.csv")) == text.count("\n## ")
    index = (first / "README.md").read_text(encoding="utf-8")
    for name in FIGURES:
        assert f"**{name}**" in index
    assert f"n = {N:,} per case" in index


def test_two_runs_give_identical_bytes(two_runs) -> None:
    first, second = two_runs
    assert len(list(first.iterdir())) == 3 * len(FIGURES) + 3  # + claims md/csv, README.md
    names = sorted(p.name for p in second.iterdir())
    assert names == sorted(
        [f"{n}{s}" for n in AGAIN for s in SUFFIXES] + ["claims.csv", "claims.md"]
    )
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_figure_follows_its_config(tmp_path) -> None:
    """Editing the config changes the figure: here, fewer sweep values, fewer MC points."""
    experiments = tmp_path / "experiments"
    shutil.copytree(default_experiments_dir(), experiments)
    path = experiments / "gaussian_mean_shift.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index("values = [")
    text = text[:start] + "values = [0.1, 1.0] }\n"
    path.write_text(text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", klest.ConvergenceWarning)
        fig, frame = build_figure("fig1_rel_std", n=N, experiments_dir=experiments)
    mc = frame[frame["source"] == "monte_carlo"]
    assert sorted(mc["kl_qp"].unique()) == pytest.approx([0.005, 0.5])
    assert frame.loc[frame["source"] == "exact", "kl_qp"].between(0.005, 0.5).all()
    assert len(fig.axes) == 1


def test_runs_share_a_config_between_figures() -> None:
    runs = Runs(n=N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", klest.ConvergenceWarning)
        _, first = build_figure("fig1_rel_std", runs=runs)
    frame = runs.frame("gaussian_mean_shift")
    _, second = build_figure("fig2_rel_bias", runs=runs)
    assert runs.frame("gaussian_mean_shift") is frame and first is second


def test_cli_only_one_figure(tmp_path, capsys) -> None:
    out = tmp_path / "figs"
    assert main(["figures", "--out", str(out), "--only", "fig3_estimator_curves"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"fig3_estimator_curves{suffix}" for suffix in (".csv", ".pdf", ".png")
    ]
    assert "3 files in" in capsys.readouterr().err


def test_cli_unknown_figure_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["figures", "--out", str(tmp_path), "--only", "fig9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klest: error: unknown figure 'fig9'; choose from fig1_rel_std")
    assert list(tmp_path.iterdir()) == []


def test_unknown_figure_name_raises() -> None:
    with pytest.raises(KeyError, match="unknown figure 'nope'"):
        build_figure("nope")


def test_cli_unwritable_output_is_a_one_line_error(tmp_path, capsys) -> None:
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("", encoding="utf-8")
    assert main(["figures", "--out", str(blocker), "--only", "fig3_estimator_curves"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klest: error: cannot write") and "Traceback" not in err
