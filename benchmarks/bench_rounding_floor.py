"""The rounding floor of a logged full-vocabulary KL: the framework's arithmetic against exact.

    .venv/bin/python benchmarks/bench_rounding_floor.py          # V 1k..256k, ~1-2 minutes
    .venv/bin/python benchmarks/bench_rounding_floor.py --quick  # V 1k and 16k, a few seconds

Logits a = 2 N(0, 1) (policy) and b = a + s N(0, 1) (reference), at ``--positions`` positions
per case; the exact KL(pi||ref) is klest's ``rl.full_kl`` (float64, a few ulp). Each cell is
the mean over positions of |emulated - exact| (the floor: the error the framework's dtype
adds to the logged per-token KL); ``bias`` columns give the signed mean error (what a mean
over many tokens converges to). Formulas (``klest.rl.emulate.FULL_FORMULAS``):

- ``plain``: torch ``log_softmax`` in dtype, ``sum p * (logp - ref_logp)`` in dtype (TRL's
  legacy ``F.kl_div`` full KL gives the same bits; tests/test_rl_emulate.py checks it);
- ``plain/2paths``: the same, with the reference's log-probabilities from another code path,
  ``b - logsumexp(b)`` rounded to dtype (twice rounded) instead of ``log_softmax(b)``;
- ``xent-ent``: EasyDeL's distillation KL before PR #267: cross-entropy minus entropy, each
  computed in float32 and rounded to dtype per position, subtracted in dtype.

``chunked``: the vocabulary sum as partial sums over chunks of 1024 entries accumulated one
after the other in the reduction dtype. ``s = 0`` is an identical pair (exactly 0 for every
formula computed by one code path: the ``plain/2paths`` row is the same pair through two).

Last, EasyDeL #267's check: V = 248,320, bf16, bit-identical logits (true KL 0), 6 seeds,
every formula and reduction, the per-position KL and the mean over positions in bf16.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
from machine import print_machine

from klest import rl
from klest.rl.emulate import emulated_full_kl

F = torch.nn.functional
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CHUNK = 1024


def two_paths(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, chunk: int | None):
    """sum p (logp - ref_logp), ref_logp = b - logsumexp(b) in dtype (a second code path)."""
    a, b = a.to(dtype), b.to(dtype)
    la = F.log_softmax(a, dim=-1)
    lb = b - torch.logsumexp(b, dim=-1, keepdim=True)
    terms = la.exp() * (la - lb)
    if chunk is None:
        return terms.sum(-1).double()
    total = terms[..., :chunk].sum(-1)
    for s in range(chunk, terms.shape[-1], chunk):
        total = total + terms[..., s : s + chunk].sum(-1)
    return total.double()


def case(a, b, dtype, formula: str, chunk):
    if formula == "plain/2paths":
        return two_paths(a, b, dtype, chunk)
    name = {"plain": "plain", "xent-ent": "xent_minus_entropy"}[formula]
    return emulated_full_kl(a, b, dtype=dtype, chunk=chunk, formula=name)


def grid(vocabs, scales, positions: int) -> None:
    formulas = ("plain", "plain/2paths", "xent-ent")
    head = f"{'dtype':5} {'formula':13} {'reduction':9} {'s':>7} {'true KL':>9} " + " ".join(
        f"{f'V={v // 1024}k':>9}" for v in vocabs
    )
    print("\nmean |emulated - exact| over positions (bias: signed mean error)\n" + head)
    rows = {}
    for v in vocabs:
        g = torch.Generator().manual_seed(v)
        base = 2.0 * torch.randn(positions, v, generator=g, dtype=torch.float64)
        noise = torch.randn(positions, v, generator=g, dtype=torch.float64)
        for s in scales:
            b = base + s * noise
            exact = torch.as_tensor(rl.full_kl(base, b))
            for dname, dt in DTYPES.items():
                for formula in formulas:
                    for red, chunk in (("sum", None), ("chunked", CHUNK)):
                        err = case(base, b, dt, formula, chunk) - exact
                        key = (dname, formula, red, s)
                        rows.setdefault(key, {"truth": exact.mean().item()})[v] = (
                            err.abs().mean().item(),
                            err.mean().item(),
                        )
    for key, cells in rows.items():
        dname, formula, red, s = key
        line = f"{dname:5} {formula:13} {red:9} {s:7.0e} {cells['truth']:9.2e} "
        print(line + " ".join(f"{cells[v][0]:9.1e}" for v in vocabs))
    print("\nbias (signed mean error) of the bf16 and fp16 rows at s = 0")
    for key, cells in rows.items():
        if key[3] == 0 and key[0] != "fp32":
            print(f"{key[0]:5} {key[1]:13} {key[2]:9} " + " ".join(
                f"{cells[v][1]:+9.1e}" for v in vocabs))  # fmt: skip


def easydel_267(seeds: int, positions: int) -> None:
    v = 248_320
    print(f"\nEasyDeL #267: V = {v}, bf16, identical logits (true KL 0), N(0,1) logits")
    print(f"{'formula':13} {'reduction':9} {'per-position |KL| mean':>22} {'bf16 mean':>22}")
    for formula in ("plain", "plain/2paths", "xent-ent"):
        for red, chunk in (("sum", None), ("chunked", CHUNK)):
            per, means = [], []
            for seed in range(seeds):
                g = torch.Generator().manual_seed(seed)
                a = torch.randn(positions, v, generator=g).to(torch.bfloat16)
                out = case(a, a, torch.bfloat16, formula, chunk)
                per.append(out.abs().mean().item())
                means.append(out.to(torch.bfloat16).mean().item())  # logged in bf16
            lo, hi = min(means), max(means)
            print(f"{formula:13} {red:9} {sum(per) / seeds:22.2e} {f'{lo:+.4f} .. {hi:+.4f}':>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="V 1k and 16k, 3 scales")
    parser.add_argument("--positions", type=int, default=None, help="positions per case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print_machine()
    print(f"torch {torch.__version__}, 1 thread")
    start = time.perf_counter()
    if args.quick:
        grid([1024, 16_384], [0.0, 1e-2, 1.0], args.positions or 4)
        easydel_267(2, 2)
    else:
        vocabs = [1024, 4096, 16_384, 65_536, 262_144]
        grid(vocabs, [0.0, 1e-3, 1e-2, 1e-1, 1.0], args.positions or 8)
        easydel_267(6, 8)
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
