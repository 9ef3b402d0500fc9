"""klest.lm: a real (tiny) language-model pipeline, offline — build, generate, log, diagnose.

The tokenizer and the two GPT-2-style models are built here from klest's own texts (no
download); the module fixture builds them once (a few seconds). What is checked:

- the engine's processed distribution (temperature, min-p, top-k, top-p in vLLM's order)
  against klest's exact float64 ``Categorical.truncated``, the rollout log-probabilities
  against the processed distribution of the logits the rollout model produced, and the sampler
  against that distribution (a chi-square test at a stated false-failure rate of 1e-6);
- determinism: the same seeds give the same tokenizer, weights and logs, bit for bit;
- bf16 scoring: the trainer's log-probabilities are bf16 values whose distance from float32
  scoring is within the bound derived from the logits' bf16 error (see the test);
- the sequence-level theory (klest.sequence) on two real models: Σ k1 and Σ k3 agree with the
  Rao-Blackwellised sum within 5 paired standard errors (on-policy, float32), importance
  weights restore the on-policy value under a tempered sampler without truncation (E_μ[W] = 1
  there), and under top-p E_μ[W] = π(supp μ) is below 1 by more than 5 SE;
- the end-to-end run through ``klest.diagnose`` (the one test that depends on helper B's
  ``klest.diagnostics.diagnosis``; marked below).

Five-SE tolerances: a two-sided normal tail of 5.7e-7 per comparison, a family-wide
false-failure rate below 1e-5 for the comparisons here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import klest  # noqa: E402
from klest import lm  # noqa: E402
from klest.lm import adapter, sampling, tiny  # noqa: E402

pytestmark = pytest.mark.xdist_group("lm_pipeline")

Z = 5.0
PROMPTS = list(lm.PROMPTS)
SAMPLES = 64  # responses per prompt: 512 sequences
MAX_NEW = 32


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the tiny models gain nothing from more, and beside other test
    processes on 2 cores torch's spinning threads make the module 2-3x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pair() -> tiny.TinyPair:
    return tiny.tiny_pair(seed=0)


def _logs(pair: tiny.TinyPair, **options) -> adapter.LMLogs:
    settings = {"samples_per_prompt": SAMPLES, "max_new_tokens": MAX_NEW, "seed": 0} | options
    return lm.rollout_logs(pair.policy, pair.reference, pair.tokenizer, PROMPTS, **settings)


@pytest.fixture(scope="module")
def trainer_logs(pair: tiny.TinyPair) -> adapter.LMLogs:
    """The default pipeline: the policy rolls out in float32, the trainer scores in bf16."""
    return _logs(pair, logits=True)


@pytest.fixture(scope="module")
def float32_logs(pair: tiny.TinyPair) -> adapter.LMLogs:
    """On-policy and exact up to float32 rounding: rollout and scoring both in float32."""
    return _logs(pair, logits=True, score_dtype="float32")


# ---- the engine's processed distribution -----------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_p": 0.9},
        {"temperature": 1.3, "top_k": 7},
        {"temperature": 0.9, "min_p": 0.05, "top_p": 0.8},
        {"temperature": 0.5, "top_k": 12, "top_p": 0.95, "min_p": 0.01},
    ],
)
def test_processed_logprobs_are_klests_exact_truncated_distribution(settings: dict) -> None:
    rng = np.random.default_rng(7)
    z = rng.standard_normal((40, 50)) * 2.0
    got = sampling.processed_logprobs(torch.as_tensor(z, dtype=torch.float32), **settings)
    want = klest.Categorical(logits=z.astype(np.float32).astype(np.float64)).truncated(
        convention="vllm", **settings
    )
    probs = got.exp().double().numpy()
    assert np.array_equal(probs > 0, want.probs > 0)  # the same kept sets
    np.testing.assert_allclose(probs, want.probs, rtol=1e-5, atol=1e-7)  # float32 arithmetic


def test_greedy_below_vllms_sampling_eps() -> None:
    z = torch.tensor([[0.0, 3.0, 3.0, -1.0]])
    out = sampling.processed_logprobs(z, temperature=1e-6, top_p=0.5)
    assert out.tolist() == [[-math.inf, 0.0, -math.inf, -math.inf]]  # the first argmax


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("temperature", -0.5, "temperature must be >= 0"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("top_p", 0.0, "top_p must be in"),
        ("top_p", 1.5, "top_p must be in"),
        ("top_k", 0, "top_k must be an integer >= 1"),
        ("min_p", -0.1, "min_p must be in"),
    ],
)
def test_bad_sampling_settings_name_the_argument(argument: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sampling.processed_logprobs(torch.zeros(1, 4), **{argument: value})


def test_rollout_logprob_is_the_processed_distributions(pair: tiny.TinyPair) -> None:
    settings = {"temperature": 0.8, "top_p": 0.9, "top_k": 40}
    out = sampling.generate(pair.policy, pair.tokenizer, PROMPTS, samples_per_prompt=4,
                            max_new_tokens=12, seed=3, keep_logits=True, **settings)  # fmt: skip
    raw = out.logits.double().numpy()  # the rollout model's float32 logits, (B, R, V)
    mu = klest.Categorical(logits=raw).truncated(convention="vllm", **settings).probs
    tokens = out.input_ids[:, out.prompt_length :].numpy()
    kept = out.response_mask.numpy()
    p = np.take_along_axis(mu, tokens[..., None], axis=-1)[..., 0][kept]
    assert (p > 0).all(), "a token outside the engine's kept set was sampled"
    np.testing.assert_allclose(out.rollout_logprob.numpy()[kept], np.log(p), rtol=0, atol=2e-5)
    assert (out.rollout_logprob.numpy()[~kept] == 0).all()
    # the raw log-softmax is not what is logged: temperature and truncation change it
    raw_lp = np.take_along_axis(
        raw - np.logaddexp.reduce(raw, axis=-1, keepdims=True), tokens[..., None], axis=-1
    )[..., 0][kept]
    assert np.abs(raw_lp - np.log(p)).max() > 0.05


def test_the_sampler_draws_from_the_processed_distribution(pair: tiny.TinyPair) -> None:
    n, settings = 4000, {"temperature": 0.8, "top_p": 0.95}
    out = sampling.generate(pair.policy, pair.tokenizer, ["The harbour"], samples_per_prompt=n,
                            max_new_tokens=1, seed=11, keep_logits=True, **settings)  # fmt: skip
    raw = out.logits[0, 0].double().numpy()
    assert torch.equal(out.logits[:, 0], out.logits[:1, 0].expand(n, -1))  # one distribution
    mu = klest.Categorical(logits=raw).truncated(convention="vllm", **settings).probs
    counts = np.bincount(out.input_ids[:, -1].numpy(), minlength=len(mu))
    assert counts[mu == 0].sum() == 0
    expected = n * mu
    big = expected >= 5  # pool the rare categories into one cell (if there are any)
    rare = ~big & (mu > 0)
    obs = np.append(counts[big], counts[rare].sum()) if rare.any() else counts[big]
    exp = np.append(expected[big], expected[rare].sum()) if rare.any() else expected[big]
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    assert big.sum() >= 5
    assert chi2 < stats.chi2.isf(1e-6, df=len(obs) - 1)


# ---- determinism -----------------------------------------------------------------------------


def test_the_tiny_pair_is_a_function_of_its_seed() -> None:
    small = {"vocab_size": 300, "reference_steps": 3, "policy_steps": 2, "n_layer": 1}
    a, b, c = (
        tiny.tiny_pair(seed=5, **small),
        tiny.tiny_pair(seed=5, **small),
        tiny.tiny_pair(seed=6, **small),
    )
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    for name in ("reference", "policy"):
        sa, sb, sc = (getattr(x, name).state_dict() for x in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    moved = [not torch.equal(p, q) for p, q in zip(a.reference.parameters(),
                                                  a.policy.parameters(), strict=True)]  # fmt: skip
    assert all(moved)  # the policy is a few steps away from the reference, in every tensor


def test_logs_are_deterministic_under_a_fixed_seed(
    pair: tiny.TinyPair, trainer_logs: adapter.LMLogs
) -> None:
    again = _logs(pair, logits=True)
    pd.testing.assert_frame_equal(again.frame, trainer_logs.frame, check_exact=True)
    assert np.array_equal(again.logits, trainer_logs.logits)
    other = _logs(pair, seed=1)
    assert len(other.frame) != len(trainer_logs.frame) or not other.frame.equals(trainer_logs.frame)
    before = torch.random.get_rng_state()
    _logs(pair, samples_per_prompt=1, max_new_tokens=2)
    assert torch.equal(before, torch.random.get_rng_state())  # torch's global RNG untouched


def test_the_log_rows_follow_the_schema(pair: tiny.TinyPair, trainer_logs: adapter.LMLogs) -> None:
    frame = trainer_logs.frame
    assert list(frame.columns) == ["sequence", "position", "logprob", "ref_logprob",
                                   "rollout_logprob", "mask"]  # fmt: skip
    assert frame["sequence"].nunique() == len(PROMPTS) * SAMPLES
    for _, rows in frame.groupby("sequence"):
        assert rows["position"].tolist() == list(range(len(rows)))
    assert frame["mask"].all() and (frame[["logprob", "ref_logprob"]] <= 0).all().all()
    assert trainer_logs.logits.shape == trainer_logs.ref_logits.shape == (
        len(frame), len(pair.tokenizer))  # fmt: skip
    chunk = next(klest.diagnostics.iter_chunks(trainer_logs.as_dict(), logits=True))
    assert len(chunk) == len(frame) and chunk.logits.shape == trainer_logs.logits.shape
    eos = pair.tokenizer.eos_token_id
    ended = frame.groupby("sequence").size() < MAX_NEW
    last = pd.Series(trainer_logs.tokens).groupby(frame["sequence"].to_numpy()).last()
    assert (last[ended] == eos).all()  # a response shorter than the limit ended with EOS
    assert ended.mean() > 0.5  # the models learnt to end their lines
    texts = trainer_logs.texts(pair.tokenizer)
    assert len(texts) == frame["sequence"].nunique() and all(isinstance(t, str) for t in texts)


def test_a_separate_rollout_model_is_the_one_that_samples(pair: tiny.TinyPair) -> None:
    logs = lm.rollout_logs(pair.policy, pair.reference, pair.tokenizer, PROMPTS,
                           rollout_model=pair.reference, samples_per_prompt=4, max_new_tokens=8,
                           score_dtype="float32")  # fmt: skip
    frame = logs.frame
    assert logs.settings["rollout_model"] == "separate"
    np.testing.assert_allclose(frame["rollout_logprob"], frame["ref_logprob"], rtol=0, atol=2e-5)
    assert (frame["rollout_logprob"] - frame["logprob"]).abs().max() > 0.01


def test_padding_rows_are_masked_out_and_change_nothing(pair: tiny.TinyPair) -> None:
    plain = _logs(pair, samples_per_prompt=8, logits=True)
    padded = _logs(pair, samples_per_prompt=8, logits=True, padding=True)
    assert (~padded.frame["mask"]).any()
    assert padded.frame["mask"].sum() == len(plain.frame)
    a, b = lm.sequence_estimates(plain.as_dict()), lm.sequence_estimates(padded.as_dict())
    pd.testing.assert_frame_equal(a, b)


# ---- bf16 scoring ----------------------------------------------------------------------------


def test_bf16_scoring_is_within_the_bound_from_the_logits_error(
    pair: tiny.TinyPair, trainer_logs: adapter.LMLogs
) -> None:
    """bf16 log-probs: log_softmax of the bf16 logits in bf16, then float32. Against float32
    scoring, token by token: log-softmax is 2-Lipschitz in the max norm of the logits
    (Δlp_i = Δz_i − Σ_j p_j Δz_j), and rounding the result to bf16 (8 significant bits) adds at
    most 2^-8 |lp| (plus bf16's own log_softmax arithmetic: 2^-8 more of |lp| allowed)."""
    rollout = trainer_logs.rollout
    kept = rollout.response_mask
    lp16, z16 = adapter.score(pair.policy, rollout, dtype="bfloat16", keep_logits=True)
    lp32, z32 = adapter.score(pair.policy, rollout, dtype="float32", keep_logits=True)
    assert torch.equal(lp16, lp16.to(torch.bfloat16).float())  # bf16 values: really bf16
    dz = (z16 - z32).abs().amax(dim=-1)
    bound = 2 * dz + 2.0**-7 * lp32.abs()
    diff = (lp16 - lp32).abs()
    assert (diff[kept] <= bound[kept]).all()
    assert diff[kept].max() > 1e-3  # bf16 is not float32 here: the bound is not vacuous
    up, _ = adapter.score(pair.policy, rollout, dtype="bfloat16", upcast=True)
    assert ((up - lp32).abs()[kept] <= 2 * dz[kept] + 1e-5).all()  # float32 log-softmax
    np.testing.assert_array_equal(trainer_logs.frame["logprob"], lp16[kept].double().numpy())


# ---- the sequence-level theory on two real models --------------------------------------------


def test_k1_and_k3_sums_agree_with_rao_blackwell_on_policy(float32_logs: adapter.LMLogs) -> None:
    est = lm.sequence_estimates(float32_logs.as_dict(), sampler="policy").set_index("estimator")
    assert est.attrs["sequences"] == len(PROMPTS) * SAMPLES
    for name in ("sum k1", "sum k3"):
        assert est.loc[name, "unbiased"]
        assert abs(est.loc[name, "diff_vs_rb"]) <= Z * est.loc[name, "diff_vs_rb_se"], name
    assert est.loc["RB", "estimate"] > 10 * est.loc["RB", "se"]  # a KL clearly above 0
    # sum k2 is biased (theory); on these models by far more than the noise
    assert not est.loc["sum k2", "unbiased"]
    assert est.loc["sum k2", "diff_vs_rb"] > Z * est.loc["sum k2", "diff_vs_rb_se"]


def test_importance_weights_restore_the_on_policy_kl_without_truncation(
    pair: tiny.TinyPair, float32_logs: adapter.LMLogs
) -> None:
    truth = lm.sequence_estimates(float32_logs.as_dict(), sampler="policy").set_index("estimator")
    hot = _logs(pair, temperature=1.1, logits=True, score_dtype="float32")
    est = lm.sequence_estimates(hot.as_dict()).set_index("estimator")
    assert not est.loc["RB, x~old unweighted", "unbiased"] and est.loc["RB, W", "unbiased"]
    assert est.attrs["weight_ess"] > 0.3 * est.attrs["sequences"]
    for name in ("sum k1, W", "sum k3, W", "RB, W"):
        se = math.hypot(est.loc[name, "se"], truth.loc["RB", "se"])  # independent samples
        assert abs(est.loc[name, "estimate"] - truth.loc["RB", "estimate"]) <= Z * se, name
    w = lm.sequence_values(hot.as_dict())["W"]
    assert abs(w.mean() - 1) <= Z * w.std(ddof=1) / np.sqrt(len(w))  # E_mu[W] = 1: full support


def test_truncation_removes_policy_mass_that_weights_cannot_restore(pair: tiny.TinyPair) -> None:
    """E_mu[W] = pi(supp mu) <= 1, and top-p removes mass at every step: W's mean is below 1 by
    more than 5 SE; the unweighted rows (what a framework logs) are flagged biased."""
    engine = _logs(pair, temperature=0.7, top_p=0.9, logits=True)
    est = lm.sequence_estimates(engine.as_dict()).set_index("estimator")
    assert not est.loc["sum k1, x~old unweighted", "unbiased"]
    w = lm.sequence_values(engine.as_dict())["W"]
    assert w.mean() + Z * w.std(ddof=1) / np.sqrt(len(w)) < 1
    assert est.attrs["weight_mean"] == pytest.approx(w.mean())
    rho = engine.frame["logprob"] - engine.frame["rollout_logprob"]
    assert (rho < 0).mean() > 0.5  # tempered + truncated: mu above pi on most sampled tokens


# ---- errors and the optional dependencies ----------------------------------------------------


def test_missing_dependencies_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"^klest.lm needs .*: pip install klest\[lm\]$"):
        lm.train_tokenizer()


def test_import_klest_lm_loads_no_heavy_dependency() -> None:
    code = "import json, sys, klest.lm; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & {"torch", "transformers", "tokenizers"}


def test_bad_arguments_are_one_line_errors(pair: tiny.TinyPair) -> None:
    with pytest.raises(ValueError, match="prompts must be a non-empty sequence"):
        lm.rollout_logs(pair.policy, pair.reference, pair.tokenizer, "The river")
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        lm.generate(pair.policy, pair.tokenizer, ["The", []])
    with pytest.raises(ValueError, match="score_dtype must be one of"):
        lm.rollout_logs(pair.policy, pair.reference, pair.tokenizer, ["The"], score_dtype="int8")
    with pytest.raises(ValueError, match="vocab_size=100000: the text only supports"):
        lm.train_tokenizer(vocab_size=100_000)
    with pytest.raises(ValueError, match="sampler must be"):
        lm.sequence_estimates({"sequence": [0], "logprob": [-1.0], "ref_logprob": [-1.0]},
                              sampler="mu")  # fmt: skip


# ---- end to end through klest.diagnose (depends on helper B's klest.diagnostics.diagnosis) ---


def test_end_to_end_generate_log_diagnose(trainer_logs: adapter.LMLogs, tmp_path) -> None:
    path = trainer_logs.write(tmp_path / "run.parquet")
    d = klest.diagnose(path)  # helper B's klest.diagnostics.diagnosis.diagnose
    summary = d.summary.set_index(["estimator", "level"])
    mine = lm.sequence_estimates(path, sampler="policy").set_index("estimator")
    for base in ("k1", "k2", "k3"):
        row = summary.loc[(base, "sequence")]
        assert row["estimate"] == pytest.approx(mine.loc[f"sum {base}", "estimate"], rel=1e-9)
    assert ("rb", "sequence") in summary.index
    assert summary.loc[("rb", "sequence"), "estimate"] == pytest.approx(
        mine.loc["RB", "estimate"], rel=1e-6
    )
    assert d.mismatch is not None  # rollout_logprob logged: the engine/trainer block
