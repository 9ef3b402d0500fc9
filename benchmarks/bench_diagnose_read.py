"""Time and peak memory of reading a token log: ``klest.diagnostics.iter_chunks`` on Parquet.

    .venv/bin/python benchmarks/bench_diagnose_read.py                 # 10^7 tokens (~10 s)
    .venv/bin/python benchmarks/bench_diagnose_read.py --tokens 3e7    # bigger
    .venv/bin/python benchmarks/bench_diagnose_read.py --quick         # 10^6 tokens, a smoke test
    .venv/bin/python benchmarks/bench_diagnose_read.py --diagnose      # also klest.diagnose

Issue 16's target for the whole ``klest diagnose`` at 10^7 tokens is <= 30 s on one core and
<= 500 MB peak memory. This benchmark writes a synthetic log of ``--tokens`` rows with every
schema column (sequence, logprob, ref_logprob, old_logprob, rollout_logprob, mask, position;
responses of 1..512 tokens) to a temporary Parquet file in row groups of ``--row-group-rows``
(``write_logs``, part by part: the writer never holds the whole log) and prints its size. Then,
in a fresh process pinned to one CPU (``sched_setaffinity``; pyarrow's pools set to one thread),
it times one pass of ``iter_chunks(path, chunk_rows=...)`` that validates every row and sums
the log-ratio l = ref_logprob - logprob over the counted tokens, and reports the wall time, the
throughput and the peak resident memory (``VmHWM`` of /proc/self/status, reset through
``/proc/self/clear_refs`` after the imports): the absolute peak (the figure the target is
about: interpreter, numpy, pandas and pyarrow included) and the part beyond the imports.
``--diagnose`` times ``klest.diagnostics.diagnose(path)`` the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TARGET_SECONDS, TARGET_MB = 30.0, 500.0


def _parts(tokens: int, rows: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """The synthetic log, ``rows`` tokens per part (whole responses may span two parts)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 513, size=tokens // 256 + 1024)
    while lengths.sum() < tokens:
        lengths = np.concatenate([lengths, rng.integers(1, 513, size=1024)])
    ends = np.cumsum(lengths)
    for a in range(0, tokens, rows):
        b = min(a + rows, tokens)
        rows_ = np.arange(a, b)
        seq = np.searchsorted(ends, rows_, side="right")
        first = np.where(seq > 0, ends[seq - 1], 0)
        lp = -rng.exponential(0.6, b - a)
        yield {
            "sequence": seq.astype(np.int64),
            "logprob": lp,
            "ref_logprob": np.minimum(lp + rng.normal(0.0, 0.2, b - a), 0.0),
            "old_logprob": np.minimum(lp + rng.normal(0.0, 0.01, b - a), 0.0),
            "rollout_logprob": np.minimum(lp + rng.normal(0.0, 0.05, b - a), 0.0),
            "mask": rng.random(b - a) < 0.97,
            "position": (rows_ - first).astype(np.int64),
        }


def _one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def run_case(case: str, path: str, chunk_rows: int) -> dict:
    _one_core()
    import numpy as np
    from machine import reset_peak, rss_mb  # this script's directory is on sys.path

    from klest.diagnostics import iter_chunks

    fn = None
    if case == "diagnose":  # its imports only in its own process: the read case stays lean
        from klest.diagnostics import diagnose as fn
    base = rss_mb("VmRSS")
    reset_peak()
    start = time.perf_counter()
    if fn is not None:
        result = fn(path, chunk_rows=chunk_rows)
        extra = {"rows": len(getattr(result, "summary", []))}
    else:
        n, counted, total = 0, 0, 0.0
        for chunk in iter_chunks(path, chunk_rows=chunk_rows):
            keep = chunk.counted
            n += len(chunk)
            counted += int(keep.sum())
            total += float(np.sum(chunk.log_ratio[keep]))
        extra = {"tokens": n, "counted": counted, "mean_l": total / counted}
    seconds = time.perf_counter() - start
    peak = rss_mb("VmHWM")
    return {"seconds": seconds, "peak_mb": peak, "extra_mb": peak - base,
            "base_mb": base, **extra}  # fmt: skip


def _measure(case: str, path: str, chunk_rows: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", case, "--path", path, f"--chunk-rows={chunk_rows}"],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=1e7, help="tokens (default 1e7)")
    parser.add_argument("--quick", action="store_true", help="10^6 tokens: a smoke test")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="iter_chunks' chunk")
    parser.add_argument("--row-group-rows", type=int, default=1_000_000, help="Parquet row group")
    parser.add_argument("--diagnose", action="store_true", help="time klest diagnose as well")
    parser.add_argument("--dir", help="write the log here (default: a temporary directory)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.path, args.chunk_rows)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import print_machine

    from klest.diagnostics import write_logs

    print_machine()
    tokens = 10**6 if args.quick else int(args.tokens)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "log.parquet")
        start = time.perf_counter()
        write_logs(path, _parts(tokens, args.row_group_rows), row_group_rows=args.row_group_rows)
        size = os.path.getsize(path) / 2**20
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"log: {tokens:,} tokens, 7 columns, row groups of {args.row_group_rows:,}: "
              f"{size:.0f} MB of Parquet, written in {time.perf_counter() - start:.1f} s "
              f"(load average {load})")  # fmt: skip
        print(f"one process pinned to one CPU, chunk_rows = {args.chunk_rows:,}")
        cases = ["read", "diagnose"] if args.diagnose else ["read"]
        for case in cases:
            r = _measure(case, path, args.chunk_rows)
            label = "iter_chunks (read + validate)" if case == "read" else "klest.diagnose"
            scale = 1e7 / tokens
            met = r["seconds"] * scale <= TARGET_SECONDS and r["peak_mb"] <= TARGET_MB
            verdict = "(--quick: a smoke test)" if args.quick else ("met" if met else "MISSED")
            rate = tokens / r["seconds"] / 1e6
            print(f"  {label:30s} {r['seconds']:6.2f} s ({rate:5.1f} M tokens/s), peak RSS "
                  f"{r['peak_mb']:4.0f} MB ({r['extra_mb']:4.0f} MB beyond the "
                  f"{r['base_mb']:.0f} MB after imports)")  # fmt: skip
            print(f"  {'':30s} target for the whole diagnose at 10^7 tokens: <= "
                  f"{TARGET_SECONDS:.0f} s, <= {TARGET_MB:.0f} MB peak: {verdict}")  # fmt: skip
            if case == "read":
                print(f"  {'':30s} {r['tokens']:,} tokens, {r['counted']:,} counted, "
                      f"mean l = {r['mean_l']:.6f}")  # fmt: skip


if __name__ == "__main__":
    main()
