"""Write examples/logs.npz: a small token log with the exact answer known, for the README's
``klest diagnose examples/logs.npz`` (regenerate with ``python examples/make_logs.py``).

A tabular autoregressive policy π (vocabulary 8, order 2, up to 16 tokens, eos 0), a reference
π_ref = π perturbed, and an inference engine μ = π slightly perturbed that sampled the 400
responses: every schema column (sequence, position, logprob, ref_logprob, rollout_logprob,
mask) and the logits of π and π_ref for the Rao-Blackwell estimator. The exact
sequence-level KL(π‖π_ref) is printed (klest.sequence's DP); note the tokens come from μ,
so the on-policy estimators target it only up to the mismatch that diagnose reports.
"""

from pathlib import Path

import numpy as np

from klest.diagnostics import write_logs
from klest.diagnostics.synthetic import tabular_log
from klest.sequence import TabularAR, sequence_kl

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(16)
    pi = TabularAR.random(vocab=8, order=2, length=16, rng=rng, eos=0)
    ref, engine = pi.perturbed(rng, 0.6), pi.perturbed(rng, 0.05)
    log = tabular_log(pi, ref, n_sequences=400, rng=rng, rollout=engine)
    write_logs(HERE / "logs.npz", log)
    print(f"wrote {HERE / 'logs.npz'}: {log['logprob'].size} tokens; exact sequence-level "
          f"KL(pi||ref) = {sequence_kl(pi, ref):.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
