"""Experiment configs: every error path (file and key path in one line), sweeps, overrides, hash."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import klest
from klest.engine.runner import DEFAULT_BLOCK_SIZE
from klest.studies.experiment import ConfigError, load_config, parse_config, run_experiment

HEAD = 'estimators = ["k1", "k2"]\nn = 1000\n'
CASE = '[[cases]]\nq = { family = "normal" }\np = { family = "normal", loc = 0.5 }\n'


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# (config text, key path, a fragment of the problem)
ERRORS = [
    # TOML syntax, top level
    ('estimators = ["k1"\nn = 3\n', "", "invalid TOML: Unclosed array (at line 2"),
    (HEAD + "nn = 3\n" + CASE, "nn", "unknown key; did you mean 'n'?"),
    ('estimator = ["k1"]\nn = 3\n' + CASE, "estimator", "did you mean 'estimators'?"),
    (HEAD + "frobnicate = 1\n" + CASE, "frobnicate", "unknown key; expected one of: name, title"),
    ("n = 10\n" + CASE, "estimators", "missing"),
    ('estimators = ["k1"]\n' + CASE, "n", "missing"),
    (HEAD, "cases", "missing; add at least one [[cases]] table"),
    (HEAD + "cases = []\n", "cases", "must not be empty"),
    (HEAD + "cases = 3\n", "cases", "expected an array of tables ([[cases]]), got integer 3"),
    # wrong types and bad values
    ('estimators = ["k1"]\nn = "10"\n' + CASE, "n", "expected an integer, got string '10'"),
    ('estimators = ["k1"]\nn = 1e6\n' + CASE, "n", "got float 1000000.0 (write 1000000)"),
    ('estimators = ["k1"]\nn = 2.5\n' + CASE, "n", "expected an integer, got float 2.5"),
    ('estimators = ["k1"]\nn = true\n' + CASE, "n", "expected an integer, got boolean True"),
    ('estimators = ["k1"]\nn = 0\n' + CASE, "n", "must be >= 1, got 0"),
    ('estimators = ["k1"]\nn = -5\n' + CASE, "n", "must be >= 1, got -5"),
    (HEAD + "seed = -1\n" + CASE, "seed", "must be >= 0, got -1"),
    (HEAD + "block_size = 0\n" + CASE, "block_size", "must be >= 1, got 0"),
    (HEAD + "title = 3\n" + CASE, "title", "expected a string, got integer 3"),
    (HEAD + 'name = "a b"\n' + CASE, "name", "it names a directory"),
    (HEAD + 'name = ""\n' + CASE, "name", "must not be empty"),
    (HEAD + "start = 2024-01-01\n" + CASE, "start", "unknown key"),
    # estimators
    ('estimators = "k1"\nn = 3\n' + CASE, "estimators", "expected an array of estimator names"),
    ("estimators = []\nn = 3\n" + CASE, "estimators", "must not be empty"),
    ('estimators = ["k1", 3]\nn = 3\n' + CASE, "estimators[1]", "expected an estimator name"),
    ('estimators = ["k1", "k33"]\nn = 3\n' + CASE, "estimators[1]", "unknown estimator 'k33'"),
    ('estimators = ["low_var"]\nn = 3\n' + CASE, "estimators[0]", "did you mean 'low_var_kl'?"),
    ('estimators = ["k1", "kl"]\nn = 3\n' + CASE, "estimators[1]", "'kl' is k1, which is already"),
    # cases
    (HEAD + CASE + "lable = 'x'\n", "cases[0].lable", "did you mean 'label'?"),
    (HEAD + CASE + "seed = 3\n", "cases[0].seed", "not allowed: case i draws from SeedSequence"),
    (HEAD + CASE + "n = 0\n", "cases[0].n", "must be >= 1, got 0"),
    (HEAD + CASE + 'estimators = ["k9"]\n', "cases[0].estimators[0]", "unknown estimator 'k9'"),
    (HEAD + CASE + "label = 5\n", "cases[0].label", "expected a string, got integer 5"),
    (HEAD + "[[cases]]\np = { family = 'normal' }\n", "cases[0].q", "missing; e.g. q = {"),
    (HEAD + "[[cases]]\nq = 'normal'\np = { family = 'normal' }\n", "cases[0].q", "table like"),
    (HEAD + "[[cases]]\nq = { loc = 1.0 }\np = { family = 'normal' }\n", "cases[0].q.family",
     "missing"),
    (HEAD + "[[cases]]\nq = { family = 'normall' }\np = { family = 'normal' }\n",
     "cases[0].q.family", "unknown family 'normall'; did you mean 'normal'?"),
    (HEAD + "[[cases]]\nq = { family = 2 }\np = { family = 'normal' }\n", "cases[0].q.family",
     "expected a family name (string), got integer 2"),
    (HEAD + "[[cases]]\nq = { family = 'normal' }\np = { family = 'normal', locc = 1 }\n",
     "cases[0].p.locc", "unknown parameter of normal; did you mean 'loc'?"),
    (HEAD + "[[cases]]\nq = { family = 'normal' }\np = { family = 'normal', scale = '1' }\n",
     "cases[0].p.scale", "expected a number, got string '1'"),
    (HEAD + "[[cases]]\nq = { family = 'categorical', probs = ['a'] }\n"
     "p = { family = 'categorical', probs = [1.0] }\n", "cases[0].q.probs",
     "expected an array of numbers"),
    # invalid distribution parameters (klest's ValueError, mapped to the key)
    (HEAD + CASE + CASE + "[[cases]]\nq = { family = 'normal' }\n"
     "p = { family = 'normal', scale = -1.0 }\n", "cases[2].p.scale",
     "must be reals in (0, inf), got -1.0"),
    (HEAD + "[[cases]]\nq = { family = 'uniform', low = 2.0, high = 1.0 }\n"
     "p = { family = 'uniform' }\n", "cases[0].q.low", "must be < 'high', got low=2.0, high=1.0"),
    (HEAD + "[[cases]]\nq = { family = 'categorical', probs = [0.5, 0.5], logits = [0, 0] }\n"
     "p = { family = 'categorical', probs = [0.5, 0.5] }\n", "cases[0].q",
     "give exactly one of the parameters 'probs' or 'logits', got both"),
    (HEAD + "[[cases]]\nq = { family = 'categorical', probs = [0.5, 0.6] }\n"
     "p = { family = 'categorical', probs = [0.5, 0.5] }\n", "cases[0].q.probs", "must sum to 1"),
    (HEAD + "[[cases]]\nq = { family = 'gamma', shape = 2.0 }\np = { family = 'gamma' }\n",
     "cases[0].p.shape", "missing (gamma needs shape)"),
    (HEAD + "[[cases]]\nq = { family = 'poisson' }\np = { family = 'normal' }\n", "cases[0]",
     "q (poisson) is discrete but p (normal) is continuous"),
    (HEAD + "[[cases]]\nq = { family = 'normal' }\n"
     "p = { family = 'multivariate_normal', mean = [0, 0], cov = [[1, 0], [0, 1]] }\n",
     "cases[0]", "q and p live on different spaces: () vs (2,)"),
    (HEAD + "[[cases]]\nq = { family = 'categorical', probs = [[0.5, 0.5], [0.5, 0.5]] }\n"
     "p = { family = 'categorical', probs = [[0.5, 0.5], [0.5, 0.5]] }\n", "cases[0].q",
     "a batch of distributions"),
    (HEAD + CASE + "label = 'a'\n" + CASE + "label = 'a'\n", "cases[1].label",
     "label 'a' is given to two cases (also to case 0)"),
    # sweeps
    (HEAD + CASE + "sweep = 3\n", "cases[0].sweep", "expected a table, got integer 3"),
    (HEAD + CASE + "sweep = { values = [1] }\n", "cases[0].sweep.param", "missing"),
    (HEAD + CASE + "sweep = { param = 'loc', values = [1] }\n", "cases[0].sweep.param",
     "must be 'q.<parameter>' or 'p.<parameter>', got 'loc'"),
    (HEAD + CASE + "sweep = { param = 'p.scal', values = [1] }\n", "cases[0].sweep.param",
     "'scal' is not a parameter of normal; did you mean 'scale'?"),
    (HEAD + CASE + "sweep = { param = 'p.loc', values = [1] }\n", "cases[0].p.loc",
     "also set by cases[0].sweep"),
    (HEAD + CASE + "sweep = { param = 'q.loc' }\n", "cases[0].sweep",
     "needs one of values, linspace or geomspace"),
    (HEAD + CASE + "sweep = { param = 'q.loc', values = [1], linspace = [0, 1, 3] }\n",
     "cases[0].sweep", "give only one of values, linspace or geomspace"),
    (HEAD + CASE + "sweep = { param = 'q.loc', value = [1] }\n", "cases[0].sweep.value",
     "did you mean 'values'?"),
    (HEAD + CASE + "sweep = { param = 'q.loc', values = [] }\n", "cases[0].sweep.values",
     "expected a non-empty array"),
    (HEAD + CASE + "sweep = { param = 'q.loc', values = [1, 'a'] }\n",
     "cases[0].sweep.values[1]", "expected a number or an array of numbers, got string 'a'"),
    (HEAD + CASE + "sweep = { param = 'q.loc', linspace = [0, 1] }\n", "cases[0].sweep.linspace",
     "expected [start, stop, num]"),
    (HEAD + CASE + "sweep = { param = 'q.loc', linspace = [0, 1, 0] }\n",
     "cases[0].sweep.linspace[2]", "must be >= 1, got 0"),
    (HEAD + CASE + "sweep = { param = 'q.loc', linspace = [0, inf, 3] }\n",
     "cases[0].sweep.linspace[1]", "expected a finite number"),
    (HEAD + CASE + "sweep = { param = 'q.loc', geomspace = [0, 1, 3] }\n",
     "cases[0].sweep.geomspace", "start and stop must be non-zero with one sign"),
    (HEAD + "[[cases]]\nq = { family = 'normal' }\np = { family = 'normal' }\n"
     "sweep = { param = 'p.scale', values = [1.0, 2.0, -1.0] }\n", "cases[0].sweep.values[2]",
     "p.scale = -1.0: must be reals in (0, inf), got -1.0"),
    (HEAD + "[[cases]]\nq = { family = 'normal' }\np = { family = 'normal' }\n"
     "sweep = { param = 'p.scale', linspace = [1.0, -1.0, 3] }\n", "cases[0].sweep.linspace",
     "p.scale = 0.0: must be reals in (0, inf), got 0.0"),
    (HEAD + CASE + "sweep = { param = 'q.loc', values = [1, 2], x = [1] }\n",
     "cases[0].sweep.x", "has 1 entries but the sweep has 2 values"),
    (HEAD + CASE + "sweep = { param = 'q.loc', values = [1, 2], x = ['a', 'b'] }\n",
     "cases[0].sweep.x", "expected an array of numbers"),
    (HEAD + "[[cases]]\nq = { family = 'categorical', probs = [0.5, 0.5] }\n"
     "p = { family = 'categorical' }\nsweep = { param = 'p.probs', values = [[0.2, 0.8]] }\n",
     "cases[0].sweep.x", "the swept values are arrays"),
    (HEAD + CASE + "label = 'mu = {mu}'\nsweep = { param = 'q.loc', values = [1, 2] }\n",
     "cases[0].label", "cannot fill the template 'mu = {mu}'"),
    (HEAD + CASE + "label = 'mu = {value:d}'\nsweep = { param = 'q.loc', values = [1] }\n",
     "cases[0].label", "cannot fill the template"),
    (HEAD + CASE + "label = 'mu = {value:.0f}'\nsweep = { param = 'q.loc', values = [1, 1.2] }\n",
     "cases[0].label", "label 'mu = 1' is given to two cases"),
    (HEAD + CASE + "label = 'mu'\nsweep = { param = 'q.loc', values = [1, 2] }\n",
     "cases[0].label", "label 'mu' is given to two cases"),
    # output
    (HEAD + CASE + "[output]\ntable = 1\n", "output.table", "did you mean 'table_columns'?"),
    (HEAD + CASE + "[output]\ntable_columns = ['bias/truth']\n", "output.table_columns[0]",
     "unknown value 'bias/truth'; did you mean 'bias/true'?"),
    (HEAD + CASE + "[output]\ntable_columns = []\n", "output.table_columns", "must not be empty"),
    (HEAD + CASE + "[output]\ntable_columns = 'bias'\n", "output.table_columns",
     "expected an array of strings"),
    (HEAD + CASE + "[output]\nformats = ['csv', 'pdf']\n", "output.formats[1]",
     "unknown value 'pdf'"),
    (HEAD + CASE + "[output]\nformats = ['csv', 'csv']\n", "output.formats[1]", "listed twice"),
    (HEAD + CASE + "[output]\ndigits = 0\n", "output.digits", "must be >= 1, got 0"),
    (HEAD + CASE + "[output]\ndigits = 18\n", "output.digits", "must be <= 17, got 18"),
    (HEAD + CASE + "[output]\nlayout = 'wide'\n", "output.layout", "unknown layout 'wide'"),
    (HEAD + CASE + "output = 3\n", "cases[0].output", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "problem"), ERRORS)
def test_every_config_error_names_file_and_key_path(tmp_path, text, key, problem) -> None:
    path = write(tmp_path, text)
    err = error_of(path)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: "), message
    assert err.key == key
    assert problem in message, message


def test_file_errors(tmp_path) -> None:
    missing = tmp_path / "absent.toml"
    assert str(error_of(missing)) == f"{missing}: no such file"
    assert "is a directory" in str(error_of(tmp_path))
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b"title = '\xe9'\n")
    assert str(error_of(binary)).startswith(f"{binary}: not UTF-8 text")


def test_parse_config_errors_name_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^<string>: name: missing \(required when"):
        parse_config({"estimators": ["k1"], "n": 3, "cases": []})
    with pytest.raises(ConfigError, match=r"^cfg: expected a table of config keys, got array"):
        parse_config([1, 2], source="cfg")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^a.toml: n: must be >= 1, got 0$"):
        parse_config({"estimators": ["k1"], "n": 0}, source="a.toml")


def test_defaults_and_per_case_overrides(tmp_path) -> None:
    path = write(
        tmp_path,
        """
        estimators = ["kl", "mse", "k3"]
        n = 1000
        [[cases]]
        q = { family = "normal" }
        p = { family = "laplace", scale = 2.0 }
        [[cases]]
        label = "custom"
        group = "second"
        q = { family = "poisson", rate = 2 }
        p = { family = "poisson", rate = 3 }
        n = 50
        estimators = ["rev_kl"]
        """,
        name="my-study.toml",
    )
    config = load_config(path)
    assert (config.name, config.title, config.seed) == ("my-study", "my-study", 0)
    assert config.block_size == DEFAULT_BLOCK_SIZE and config.source == path
    assert config.estimators == ("k1", "k2", "k3")  # aliases resolved
    first, second = config.cases
    assert (first.index, first.label, first.n, first.estimators) == (
        0,
        "case 0",
        1000,
        ("k1", "k2", "k3"),
    )
    assert first.q == klest.Normal(loc=0.0, scale=1.0) and first.p == klest.Laplace(scale=2.0)
    assert first.sweep_param is None and first.sweep_value is None and first.group == "case 0"
    assert (second.label, second.group, second.n, second.estimators) == (
        "custom",
        "second",
        50,
        ("rev_kl",),
    )
    assert second.p == klest.Poisson(rate=3.0)
    assert config.output.table_columns == ("bias/true", "stdev/true")
    assert config.raw["cases"][1]["n"] == 50  # the mapping as loaded


def test_sweeps_expand_in_place_with_contiguous_indices(tmp_path) -> None:
    path = write(
        tmp_path,
        """
        name = "sweeps"
        estimators = ["k1"]
        n = 100
        [[cases]]
        label = "first"
        q = { family = "normal" }
        p = { family = "normal", loc = 0.1 }
        [[cases]]
        label = "mu = {value:g}"
        q = { family = "normal" }
        p = { family = "normal", scale = 2.0 }
        sweep = { param = "p.loc", linspace = [0.0, 1.0, 3] }
        [[cases]]
        q = { family = "normal" }
        p = { family = "normal" }
        sweep = { param = "p.scale", geomspace = [0.5, 2.0, 3] }
        n = 7
        [[cases]]
        label = "T = {x:g} ({i})"
        group = "temperature"
        q = { family = "categorical", logits = [0.0, 1.0] }
        p = { family = "categorical" }
        sweep = { param = "p.logits", values = [[0.0, 0.5], [0.0, 2.0]], x = [2.0, 0.5] }
        """,
    )
    cases = load_config(path).cases
    assert [c.index for c in cases] == list(range(9))
    assert [c.label for c in cases] == [
        "first", "mu = 0", "mu = 0.5", "mu = 1", "p.scale = 0.5", "p.scale = 1",
        "p.scale = 2", "T = 2 (0)", "T = 0.5 (1)",
    ]  # fmt: skip
    assert [c.sweep_value for c in cases[1:4]] == [0.0, 0.5, 1.0]
    assert [c.p for c in cases[1:4]] == [klest.Normal(loc=m, scale=2.0) for m in (0.0, 0.5, 1.0)]
    assert {c.group for c in cases[1:4]} == {"p.loc"} and cases[1].sweep_param == "p.loc"
    np.testing.assert_allclose([c.sweep_value for c in cases[4:7]], [0.5, 1.0, 2.0], rtol=1e-15)
    assert {c.n for c in cases[4:7]} == {7} and cases[1].n == 100
    assert [c.sweep_value for c in cases[7:]] == [2.0, 0.5]
    assert cases[8].p == klest.Categorical(logits=[0.0, 2.0]) and cases[8].group == "temperature"


def test_with_overrides_replaces_n_everywhere_and_seed() -> None:
    config = parse_config(
        {"name": "o", "estimators": ["k1"], "n": 10, "seed": 1,
         "cases": [{"q": {"family": "normal"}, "p": {"family": "normal"}, "n": 5},
                   {"q": {"family": "normal"}, "p": {"family": "normal", "loc": 1}}]}
    )  # fmt: skip
    assert [c.n for c in config.cases] == [5, 10]
    changed = config.with_overrides(n=99, seed=7)
    assert (changed.n, changed.seed, [c.n for c in changed.cases]) == (99, 7, [99, 99])
    assert config.with_overrides() == config
    for bad in ({"n": 0}, {"n": 1.5}, {"seed": -1}, {"seed": True}):
        with pytest.raises(ValueError):
            config.with_overrides(**bad)


SAME_A = """
name = "h"
estimators = ["k1", "k2"]
n = 1000
seed = 0
[[cases]]
label = "mu = {value:g}"
q = { family = "normal", loc = 0, scale = 1 }
p = { family = "normal" }
sweep = { param = "p.loc", values = [0.0, 0.5, 1.0] }
"""
SAME_B = """
estimators = ["kl", "k2"]   # an alias
block_size = 65536          # the default, spelled out
n = 1_000

[[cases]]
sweep.linspace = [0, 1, 3]
sweep.param = "p.loc"
label = "mu = {value:g}"
[cases.p]
scale = 1.0
family = "normal"
[cases.q]
family = "normal"
"""


def test_config_hash_is_stable_over_semantically_identical_configs(tmp_path) -> None:
    a = load_config(write(tmp_path, SAME_A, "a.toml"))
    b = load_config(write(tmp_path, SAME_B, "h.toml"))
    assert a == b and a.config_hash() == b.config_hash()
    changes = [
        SAME_B.replace("n = 1_000", "n = 1_001"),
        "seed = 1\n" + SAME_B,
        SAME_B.replace("[0, 1, 3]", "[0, 1, 4]"),
        SAME_B.replace('["kl", "k2"]', '["k2", "k1"]'),
        SAME_B.replace("65536", "1024"),
        SAME_B.replace("scale = 1.0", "scale = 2.0"),
        SAME_B.replace("mu = {value:g}", "m = {value:g}"),
    ]
    hashes = {load_config(write(tmp_path, text, "h.toml")).config_hash() for text in changes}
    assert len(hashes) == len(changes) and a.config_hash() not in hashes


def test_config_hash_does_not_depend_on_the_interpreter(tmp_path) -> None:
    path = write(tmp_path, SAME_A, "a.toml")
    code = (
        "from klest.studies.experiment import load_config; "
        f"print(load_config({str(path)!r}).config_hash())"
    )
    env = {"PYTHONHASHSEED": "12345", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == load_config(path).config_hash()


def test_each_case_is_reproducible_on_its_own(tmp_path) -> None:
    config = load_config(write(tmp_path, SAME_A, "a.toml"))
    frame = run_experiment(config, seed=3)
    assert len(frame) == 6 and frame["case_index"].tolist() == [0, 0, 1, 1, 2, 2]
    case = config.cases[2]
    alone = klest.simulate(case.q, case.p, ["k1", "k2"], n=1000, seed=3, case=2).to_frame()
    rows = frame[frame["case_index"] == 2]
    assert np.array_equal(rows["mean"].to_numpy(), alone["mean"].to_numpy())
    assert rows["case"].tolist() == ["mu = 1", "mu = 1"] and set(rows["seed"]) == {3}
    assert rows["p.loc"].tolist() == [1.0, 1.0] and rows["q.family"].tolist() == ["normal"] * 2
    assert set(rows["sweep_value"]) == {1.0} and set(rows["n_draws"]) == {1000}
