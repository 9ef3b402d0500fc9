"""The off-policy results users read: the study config, its frame, fig12's grouped curves, the
table and the claims of figures/claims.md section "Off-policy KL terms".

Every verdict and bias is checked against klest.gradients.penalty_gradient called directly on
the config's policies (exact expectations: the numbers must agree to a few ulps, here 1e-12
relative), and every claim is shown to fail on a frame where its statement is false.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from klest import rl
from klest.gradients import penalty_gradient
from klest.gradients.offpolicy_tables import behaviour_at_kl, default_releases
from klest.report import claims_offpolicy
from klest.report.claims import evaluate_offpolicy_claims
from klest.report.claims_offpolicy import OFFPOLICY_CLAIMS, VARIANTS, offpolicy_facts
from klest.report.figures import FIGURES
from klest.report.plots_rl import offpolicy_curves, plot_for, plot_offpolicy_bias
from klest.report.tables import claims_markdown, offpolicy_table_markdown
from klest.studies import rl_studies
from klest.studies.experiment import ConfigError, default_experiments_dir
from klest.studies.rl_studies import load_study, offpolicy_variant_table, parse_study, run_study

CONFIG = default_experiments_dir() / "rl_offpolicy.toml"
ULPS = 1e-12  # exact expectations recomputed by the same enumeration: rounding only
BASE = {"study": "offpolicy_bias", "positions": 3, "vocab": 5, "kl_targets": [0.0, 0.01, 0.1]}


@pytest.fixture(scope="module")
def study() -> rl_studies.Study:
    return load_study(CONFIG)


@pytest.fixture(scope="module")
def frame(study) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return run_study(study)


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return offpolicy_facts()


# ---- the config ---------------------------------------------------------------------------


def test_the_committed_config_is_valid(study) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    assert study.study == "offpolicy_bias" and study.name == "rl_offpolicy"
    assert s["logits"].shape == s["ref_logits"].shape == s["direction"].shape == (16, 32)
    assert s["kl_targets"][0] == 0.0 and s["summary_kl"] in s["kl_targets"]
    assert s["releases"] == default_releases()
    # one PCG64(seed) stream: policy, reference noise, direction, in that order
    rng = np.random.Generator(np.random.PCG64(0))
    z = rng.standard_normal((16, 32))
    assert np.array_equal(s["logits"], z)
    assert np.array_equal(s["ref_logits"], z + 0.5 * rng.standard_normal((16, 32)))
    assert np.array_equal(s["direction"], rng.standard_normal((16, 32)))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"kl_target": [0.0]}, "kl_target"),  # a typo is an unknown key
        ({"kl_targets": [0.01, 0.1]}, "kl_targets"),  # no on-policy point
        ({"kl_targets": [0.0, 0.1, 0.01]}, "kl_targets"),  # not increasing
        ({"kl_targets": [0.0, 0.0, 0.1]}, "kl_targets"),  # repeated
        ({"kl_targets": [0.0, -0.1]}, "kl_targets"),
        ({"kl_targets": [0.0, 1e3]}, "kl_targets"),  # KL(mu||pi) is bounded along d
        ({"kl_targets": "0.1"}, "kl_targets"),
        ({"summary_kl": 0.05}, "summary_kl"),  # not one of the targets
        ({"summary_kl": 0.0}, "summary_kl"),  # the on-policy point has no off-policy bias
        ({"releases": ["nope"]}, "releases[0]"),
        ({"releases": ["trl@9.9.9"]}, "releases[0]"),
        ({"releases": ["trl", "trl@1.9.0"]}, "releases[1]"),  # the same release twice
        ({"releases": []}, "releases"),
        ({"releases": "trl"}, "releases"),
        ({"positions": 0}, "positions"),
        ({"vocab": 1}, "vocab"),
        ({"ref_scale": -0.5}, "ref_scale"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_a_bad_value_names_its_key(change, key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        parse_study({**BASE, **change}, "x.toml")
    assert info.value.key == key and info.value.source == "x.toml"


def test_a_release_whose_default_is_not_a_per_token_penalty_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rl_studies, "default_releases", lambda: ["trl@1.9.0"])
    with pytest.raises(ConfigError, match="not a per-token penalty") as info:
        parse_study({**BASE, "summary_kl": 0.1, "releases": ["trl@1.9.0", "verl"]})
    assert info.value.key == "releases[1]"


def test_a_bare_framework_name_is_its_newest_release() -> None:
    study = parse_study({**BASE, "summary_kl": 0.1, "releases": ["nemo_rl", "verl@v0.5.0"]})
    assert study.settings["releases"] == [f"nemo_rl@{rl.versions('nemo_rl')[-1]}", "verl@0.5.0"]


# ---- the frame ----------------------------------------------------------------------------


def test_one_row_per_release_and_target(study, frame) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    assert len(frame) == len(s["releases"]) * len(s["kl_targets"])
    assert list(dict.fromkeys(frame["release"])) == s["releases"]
    for _, rows in frame.groupby("release"):
        assert np.allclose(rows["kl_mu_pi"], s["kl_targets"], rtol=1e-12, atol=0.0)
    assert frame.attrs == {"study": "offpolicy_bias", "summary_kl": s["summary_kl"]}


def test_each_row_is_penalty_gradient_called_directly(study, frame) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    picks = frame.iloc[:: max(len(frame) // 23, 1)]  # every release, several targets
    for row in picks.itertuples():
        z_mu = (
            None
            if row.kl_mu_pi == 0
            else behaviour_at_kl(s["logits"], s["direction"], row.kl_mu_pi)
        )
        g = penalty_gradient(s["logits"], s["ref_logits"], framework=row.release, kind=row.kind,
                             behaviour_logits=z_mu)  # fmt: skip
        assert row.kind == rl.release(row.release).default_kind
        assert row.verdict == g.verdict and row.placement == g.placement
        assert row.relative_bias == pytest.approx(g.relative_bias, rel=ULPS)


# ---- the figure ---------------------------------------------------------------------------


def test_identical_curves_share_a_line_and_different_ones_do_not(frame) -> None:  # type: ignore[no-untyped-def]
    groups = offpolicy_curves(frame)
    members = [name for _, names in groups for name in names]
    assert sorted(members) == sorted(set(frame["release"]))  # every release exactly once
    curve = {n: r.sort_values("kl_mu_pi")["relative_bias"].to_numpy()
             for n, r in frame.groupby("release")}  # fmt: skip
    for _, names in groups:
        for name in names[1:]:
            assert np.allclose(curve[name], curve[names[0]], rtol=0, atol=1e-12, equal_nan=True)
    firsts = [names[0] for _, names in groups]
    for i, a in enumerate(firsts):
        for b in firsts[i + 1 :]:
            assert not np.allclose(curve[a], curve[b], rtol=0, atol=1e-12, equal_nan=True)
    # the k3-in-the-loss defaults coincide on this panel (no clamp active), and differ from
    # NeMo-RL 0.7.0, whose differentiable weight changes the gradient
    together = next(names for _, names in groups if "trl@1.9.0" in names)
    assert {"verl@0.9.0", "oat@0.2.3", "nemo_rl@0.6.0"} <= set(together)
    assert "nemo_rl@0.7.0" not in together


def test_a_curve_differing_by_more_than_the_tolerance_gets_its_own_line(frame) -> None:  # type: ignore[no-untyped-def]
    two = frame[frame["release"].isin(["verl@0.8.0", "verl@0.9.0"])].copy()
    assert len(offpolicy_curves(two)) == 1
    last = two.index[-1]
    two.loc[last, "relative_bias"] += 5e-13
    assert len(offpolicy_curves(two)) == 1
    two.loc[last, "relative_bias"] += 2e-12
    assert len(offpolicy_curves(two)) == 2


def test_labels_name_every_release_with_version_ranges(frame) -> None:  # type: ignore[no-untyped-def]
    labels = dict((tuple(names), label) for label, names in offpolicy_curves(frame))
    k3 = next(label for names, label in labels.items() if "trl@1.9.0" in names)
    assert k3.startswith("k3 in the loss: ")
    assert "verl 0.5.0–0.9.0" in k3 and "trl 0.25.1–1.9.0" in k3  # 3+ consecutive: a range
    assert "open_instruct 0.1.0–0.3.0" in k3
    k1 = next(label for names, label in labels.items() if "easyr1@0.3.0" in names)
    assert k1.startswith("k1 in the reward: ") and "easyr1 0.3.0, 0.3.2" in k1
    prime = next(label for names, label in labels.items() if "prime_rl@0.8.0" in names)
    assert "∇KL(π‖μ)" in prime  # its penalty pulls toward the behaviour policy


def test_the_figure_is_registered_and_drawn_without_saving(study, frame, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = FIGURES["fig12_offpolicy_bias"]
    assert spec.plot is plot_for and spec.configs == ()  # a study figure: its config is read
    fig = plot_for(frame, title=study.title)
    assert isinstance(fig, Figure)
    on, off = fig.axes
    assert (on.get_xscale(), off.get_xscale()) == ("linear", "log")
    groups = offpolicy_curves(frame)
    assert len(off.get_lines()) == len(groups) + 1  # + the summary KL's vertical line
    xs = np.concatenate([line.get_xdata() for line in off.get_lines()[:-1]])
    assert xs.min() > 0  # the on-policy point is not on the log axis
    tops = [line.get_ydata()[0] for line in on.get_lines()]
    assert max(tops) < on.get_ylim()[1]  # prime-rl's infinite on-policy bias: inside the panel
    assert any(t.get_text() == "∞" for t in on.texts)
    assert not list(tmp_path.iterdir())
    assert isinstance(plot_offpolicy_bias(frame[frame["release"] == "trl@1.9.0"]), Figure)


# ---- the table ----------------------------------------------------------------------------


def test_the_tables_verdicts_match_penalty_gradient(study, facts) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    text = claims_offpolicy.offpolicy_preamble(facts)
    z_mu = behaviour_at_kl(s["logits"], s["direction"], s["summary_kl"])
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]  # no header
    assert len(lines) == len(s["releases"])
    for line, name in zip(lines, s["releases"], strict=True):
        rel = rl.release(name)
        on = penalty_gradient(s["logits"], s["ref_logits"], framework=name, kind=rel.default_kind)
        off = penalty_gradient(s["logits"], s["ref_logits"], framework=name,
                               kind=rel.default_kind, behaviour_logits=z_mu)  # fmt: skip
        cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
        assert cells[0].split(" ")[0] == name and cells[3] == rel.commit[:12]
        assert cells[1:3] == [rel.default_kind, off.placement]
        assert cells[4:6] == [on.verdict, off.verdict]
        assert float(cells[6]) == pytest.approx(off.relative_bias, rel=5e-3)  # shown to 3 digits
    assert "prime_rl@0.8.0 (1)" in text and "1. prime_rl@0.8.0: its penalty pulls toward μ" in text


def test_table_markdown_escapes_bars_and_numbers_notes() -> None:
    df = pd.DataFrame({"release": ["a@1", "b@2"], "commit": ["0" * 12] * 2, "kind": ["k3"] * 2,
                       "placement": ["loss"] * 2, "on_policy": ["KL(ref||pi)", "zero"],
                       "off_policy": ["neither"] * 2, "kl_mu_pi": [0.1] * 2,
                       "relative_bias": [0.5, 1.0]})  # fmt: skip
    text = offpolicy_table_markdown(df, anchors={"b@2": "a note"})
    assert "| a@1 | k3 | loss | 000000000000 | KL(ref\\|\\|pi) | neither | 0.5 |" in text
    assert "| b@2 (1) |" in text and text.endswith("1. b@2: a note.")


# ---- the claims ---------------------------------------------------------------------------


def test_the_claims_hold_on_the_committed_panel(facts) -> None:  # type: ignore[no-untyped-def]
    result = evaluate_offpolicy_claims(facts)
    assert list(result["key"]) == [c.key for c in OFFPOLICY_CLAIMS]
    assert (result["verdict"] == "true").all(), result[["key", "verdict", "fails_for"]]
    counts = dict(zip(result["key"], result["n_tested"], strict=True))
    k3_loss = [n for n in default_releases()
               if rl.release(n).framework in claims_offpolicy.K3_LOSS
               and rl.spec(n, rl.release(n).default_kind).estimator == "k3"
               and not rl.spec(n, rl.release(n).default_kind).detached]  # fmt: skip
    assert counts["offpolicy_k3_loss"] == len(k3_loss) >= 6
    assert counts["offpolicy_nemo_rl_weight"] == 2 and counts["offpolicy_rpg_table"] == 3


def test_the_deciding_numbers_are_penalty_gradient_called_directly(study, facts) -> None:  # type: ignore[no-untyped-def]
    s = study.settings
    top = s["kl_targets"][-1]
    z_mu = behaviour_at_kl(s["logits"], s["direction"], top)

    def bias(framework: str, kind: str, mu=None, **options) -> float:  # type: ignore[no-untyped-def]
        return penalty_gradient(s["logits"], s["ref_logits"], framework=framework, kind=kind,
                                behaviour_logits=mu, **options).relative_bias  # fmt: skip

    units = {where: (ok, number) for where, ok, number, _ in OFFPOLICY_CLAIMS[0].test(facts)}
    assert units["trl@1.9.0 grpo"][1] == pytest.approx(bias("trl@1.9.0", "grpo", z_mu), rel=ULPS)
    units = {where: number for where, _, number, _ in OFFPOLICY_CLAIMS[1].test(facts)}
    assert units["nemo_rl@0.6.0 k3"] == pytest.approx(bias("nemo_rl@0.6.0", "k3"), rel=ULPS)
    assert units["nemo_rl@0.7.0 k3"] <= 1e-9
    mus = [None] + [behaviour_at_kl(s["logits"], s["direction"], t) for t in s["kl_targets"][1:]]
    flag = max(bias("trl@1.9.0", "grpo", mu, use_bias_correction_kl=True) for mu in mus)
    units = {where: number for where, _, number, _ in OFFPOLICY_CLAIMS[2].test(facts)}
    assert flag <= 1e-9 and units["trl@1.9.0 grpo"] == flag
    units = {where: number for where, _, number, _ in OFFPOLICY_CLAIMS[3].test(facts)}
    assert units["slime@0.2.0 k1 (default)"] == pytest.approx(1.0, rel=ULPS)  # zero gradient
    units = {where: number for where, _, number, _ in OFFPOLICY_CLAIMS[4].test(facts)}
    # detached rho * k3 is the on-policy k3 loss at any mu: its bias is the on-policy one
    assert units["detached ρ·k3"] == pytest.approx(bias("slime@0.3.1", "k3"), rel=1e-9)


def _mutated(facts: pd.DataFrame, pick, column: str, value) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    out = facts.copy()
    out.loc[pick(out), column] = value
    return out


def _verdict(facts: pd.DataFrame, index: int) -> str:
    return str(evaluate_offpolicy_claims(facts, [OFFPOLICY_CLAIMS[index]])["verdict"].iloc[0])


def _at(release: str, variant: str = "default", kl=None):  # type: ignore[no-untyped-def]
    def pick(df: pd.DataFrame) -> pd.Series:
        sel = (df["release"] == release) & (df["variant"] == variant)
        return sel & (
            df["kl_mu_pi"] == df["kl_mu_pi"].max() if kl is None else np.isclose(df["kl_mu_pi"], kl)
        )

    return pick


@pytest.mark.parametrize(
    ("index", "pick", "column", "value"),
    [
        (0, _at("verl@0.9.0"), "verdict", "KL(pi||ref)"),  # corrected at the largest KL
        (0, _at("trl@1.9.0", kl=0.0), "verdict", "KL(pi||ref)"),
        (0, _at("oat@0.2.3"), "relative_bias", 0.0),  # the bias no longer grows
        (1, _at("nemo_rl@0.7.0", kl=0.0), "verdict", "KL(ref||pi)"),
        (1, _at("nemo_rl@0.6.0", kl=0.0), "verdict", "KL(pi||ref)"),
        (2, _at("trl@1.9.0", "use_bias_correction_kl=True", 0.1), "verdict", "neither"),
        (2, _at("trl@1.9.0", kl=0.1), "verdict", "KL(pi||ref)"),  # the default corrected
        (3, _at("slime@0.2.0", kl=0.0), "verdict", "KL(ref||pi)"),
        (3, _at("slime@0.3.1", "use_unbiased_kl=True", 0.3), "verdict", "neither"),
        (4, _at("slime@0.3.1", "weighting=detached", 0.01), "verdict", "KL(pi||ref)"),
        (4, _at("slime@0.3.1", "weighting=differentiable"), "verdict", "zero"),
    ],
)
def test_each_claim_fails_where_its_statement_is_false(facts, index, pick, column, value) -> None:  # type: ignore[no-untyped-def]
    assert _verdict(facts, index) == "true"
    changed = _mutated(facts, pick, column, value)
    assert pick(facts).sum() >= 1
    assert _verdict(changed, index) in ("partly true", "false")


def test_a_claim_fails_on_rows_really_computed_without_the_option(study, facts) -> None:  # type: ignore[no-untyped-def]
    """Not an edited number: the flag's rows replaced by penalty_gradient's rows without it."""
    plain = offpolicy_variant_table(study, [("trl@0.26.0", "grpo", {}), ("trl@1.9.0", "grpo", {})])
    plain["variant"] = "use_bias_correction_kl=True"
    keep = facts[facts["variant"] != "use_bias_correction_kl=True"]
    fake = pd.concat([keep, plain], ignore_index=True)
    fake.attrs = dict(facts.attrs)
    assert _verdict(fake, 2) == "false"


def test_a_missing_release_fails_rather_than_passing_silently(facts) -> None:  # type: ignore[no-untyped-def]
    gone = facts[facts["release"] != "nemo_rl@0.7.0"].copy()
    gone.attrs = dict(facts.attrs)
    result = evaluate_offpolicy_claims(gone, [OFFPOLICY_CLAIMS[1]])
    assert result["verdict"].iloc[0] == "partly true"
    assert "on-policy missing" in result["fails_for"].iloc[0][0]


def test_variant_rows_are_named_by_their_arguments(study) -> None:  # type: ignore[no-untyped-def]
    rows = offpolicy_variant_table(study, (*VARIANTS[:1], ("trl@1.9.0", "grpo", {})))
    assert list(dict.fromkeys(rows["variant"])) == ["use_bias_correction_kl=True", "default"]
    assert len(rows) == 2 * len(study.settings["kl_targets"])
    with pytest.raises(ValueError, match="offpolicy_bias study"):
        offpolicy_variant_table(parse_study({"study": "gradient_coefficients"}), VARIANTS)


# ---- claims.md --------------------------------------------------------------------------


def _claims(n: int, source: str) -> pd.DataFrame:
    return pd.DataFrame({"claim": [f"{source} claim {i}" for i in range(n)], "source": [source] * n,
                         "verdict": ["true"] * n, "evidence": ["e"] * n,
                         "holds_for": [["x: 1"]] * n, "fails_for": [[]] * n})  # fmt: skip


def test_a_section_continues_numbers_and_letters_and_leaves_the_first_part_unchanged() -> None:
    first = _claims(2, "S1")
    alone = claims_markdown(first, title="T", preamble="P")
    both = pd.concat([first, _claims(3, "S2")], ignore_index=True)
    both.attrs["sections"] = {2: ("Off-policy", "Q")}
    text = claims_markdown(both, title="T", preamble="P")
    assert text.startswith(alone.rstrip("\n") + "\n\n# Off-policy\n\nQ\n\nSources: [B] S2\n")
    assert text.count("\n## ") == len(both)  # what tests/test_figures.py counts against the CSV
    assert "| 3 | S2 claim 0 | [B] |" in text and "## 5. S2 claim 2: true" in text
