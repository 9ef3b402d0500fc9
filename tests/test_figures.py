"""The figure registry regenerates every figure from its config(s), and `klest figures` writes
PNG + PDF + CSV deterministically (tiny n: what is tested is the plumbing, not statistics)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

import klest
from klest.cli import main
from klest.experiment import default_experiments_dir, load_config
from klest.figure_files import write_figure_set
from klest.figures import FIGURES, Runs, build_figure

N = 2_000
SUFFIXES = (".png", ".pdf", ".csv")


def _generate(directory: Path) -> list[Path]:
    with warnings.catch_warnings():  # heavy-tailed cases warn at any n; they are drawn hollow
        warnings.simplefilter("ignore", klest.ConvergenceWarning)
        return write_figure_set(directory, n=N, workers=1)


#: regenerated a second time to check the bytes (the Monte Carlo figures; kept few for time)
AGAIN = ("fig4_histograms", "fig5_batch_mse")


@pytest.fixture(scope="module")
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
    assert len(frame) > 0
    if "source" in frame:  # Monte Carlo points from the tiny runs, exact rows beside them
        assert set(frame["source"]) == {"exact", "monte_carlo"}
        mc = frame[frame["source"] == "monte_carlo"]
        assert (mc["n_draws"] == N).all()
    if name == "fig4_histograms":  # every 16th draw of N goes into the histograms
        assert (frame["n_drawn"] == N // 16).all() and frame["count"].sum() > 0


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
