"""klest.diagnostics readers and writer: the token-log schema in Parquet, .npz, .pt, JSONL, a
DataFrame and a dict of arrays (issue 16, section 1).

Round trips are bit-identical; chunks are exactly ``chunk_rows`` rows (the last: the rest) and
join to the whole, in every format; Parquet is read batch by batch (a 2e6-row file in 1e5-row
chunks never yields more than 1e5 rows); every bad input gets a one-line LogError naming the
file, the column and the absolute row (JSONL: also the line).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from klest.diagnostics import LogError, TokenChunk, _parquet, iter_chunks, open_source, write_logs

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
torch = pytest.importorskip("torch")

FILES = ("parquet", "npz", "pt", "jsonl")
IN_MEMORY = ("dict", "frame")
FIELDS = ("sequence", "logprob", "ref_logprob", "old_logprob", "rollout_logprob", "mask",
          "position", "logits", "ref_logits")  # fmt: skip


def make_log(n: int = 103, vocab: int = 5, seed: int = 0, logits: bool = True) -> dict:
    """A log with every column: sequences of 1..12 tokens, -inf where the schema allows it."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 13, size=n)
    sequence = np.repeat(np.arange(n), lengths)[:n] * 7 - 50  # any integers, negative too
    position = np.concatenate([np.arange(k) for k in lengths])[:n]
    logprob = -rng.exponential(1.0, n)
    logprob[0] = -0.0
    ref = logprob + rng.normal(0.0, 0.3, n)
    ref = np.minimum(ref, 0.0)
    ref[5] = -np.inf  # a support mismatch: legal
    log = {
        "sequence": sequence.astype(np.int64),
        "logprob": logprob,
        "ref_logprob": ref,
        "old_logprob": np.minimum(logprob + rng.normal(0.0, 0.01, n), 0.0),
        "rollout_logprob": np.where(np.arange(n) == 7, -np.inf, logprob),
        "mask": rng.random(n) < 0.9,
        "position": position.astype(np.int64),
    }
    if logits:
        z = rng.normal(0.0, 2.0, (n, vocab)).astype(np.float32)
        z[3, 1] = -np.inf  # an excluded token: legal
        log["logits"] = z
        log["ref_logits"] = (z + rng.normal(0.0, 0.1, (n, vocab))).astype(np.float32)
    return log


def source(kind: str, log: dict, tmp_path: Path, name: str = "log", **kw) -> object:
    """The log as a source of ``kind``: a file written unchecked, a DataFrame or the dict."""
    if kind == "dict":
        return log
    if kind == "frame":
        return pd.DataFrame({k: (list(v) if np.ndim(v) == 2 else v) for k, v in log.items()})
    return write_logs(tmp_path / f"{name}.{kind}", log, validate=False, **kw)


def read_all(src: object, **kw) -> list[TokenChunk]:
    return list(iter_chunks(src, **kw))


def joined(chunks: list[TokenChunk], field: str) -> np.ndarray | None:
    parts = [getattr(c, field) for c in chunks]
    return None if parts[0] is None else np.concatenate(parts)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---- round trips and chunks ----------------------------------------------------------------


@pytest.mark.parametrize("kind", FILES + IN_MEMORY)
def test_round_trip_is_bit_identical(kind: str, tmp_path: Path) -> None:
    log = make_log()
    chunks = read_all(source(kind, log, tmp_path))
    assert len(chunks) == 1 and chunks[0].start == 0 and len(chunks[0]) == 103
    chunk = chunks[0]
    for field in FIELDS:
        got, want = getattr(chunk, field), log[field]
        if field in ("logits", "ref_logits") and kind == "jsonl":
            want = want.astype(np.float64)  # JSON numbers are doubles: same values
        assert same_bits(got, want), field
    assert np.signbit(chunk.logprob[0])  # -0.0 kept
    assert same_bits(chunk.log_ratio, log["ref_logprob"] - log["logprob"])
    assert same_bits(chunk.counted, log["mask"])


def test_float32_columns_are_read_as_float64_with_the_same_values(tmp_path: Path) -> None:
    log = {k: v for k, v in make_log(logits=False).items()}
    log["logprob"] = log["logprob"].astype(np.float32)
    for kind in FILES:
        chunk = read_all(source(kind, log, tmp_path))[0]
        assert chunk.logprob.dtype == np.float64
        assert same_bits(chunk.logprob, log["logprob"].astype(np.float64))


@pytest.mark.parametrize("chunk_rows", [1, 7, 10**6])
@pytest.mark.parametrize("kind", FILES + IN_MEMORY)
def test_chunks_are_exact_and_join_to_the_whole(kind: str, chunk_rows: int, tmp_path: Path) -> None:
    log = make_log()
    src = source(kind, log, tmp_path, row_group_rows=10) if kind == "parquet" else None
    chunks = read_all(src or source(kind, log, tmp_path), chunk_rows=chunk_rows)
    sizes = [len(c) for c in chunks]
    assert sizes == [chunk_rows] * (103 // chunk_rows) + (
        [103 % chunk_rows] if 103 % chunk_rows else []
    )
    assert [c.start for c in chunks] == list(np.cumsum([0, *sizes[:-1]]))
    for field in FIELDS:
        want = (
            log[field].astype(np.float64) if kind == "jsonl" and "logits" in field else log[field]
        )
        assert same_bits(joined(chunks, field), want), field


def test_parquet_is_read_batch_by_batch(tmp_path: Path) -> None:
    n = 2_000_000
    rng = np.random.default_rng(1)
    lp = -rng.exponential(1.0, n)
    log = {"sequence": np.arange(n) // 500, "logprob": lp, "ref_logprob": lp - 0.01,
           "junk": np.zeros(n)}  # fmt: skip
    path = write_logs(tmp_path / "big.parquet", log, row_group_rows=250_000)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    src = open_source(path)
    assert src.names == ("sequence", "logprob", "ref_logprob")  # "junk" is never read
    largest, count, total, arrow, before = 0, 0, 0.0, 0, pa.total_allocated_bytes()
    for chunk in iter_chunks(path, chunk_rows=100_000):
        assert chunk.start == count * 100_000
        largest, count = max(largest, len(chunk)), count + 1
        total += chunk.logprob.sum()
        arrow = max(arrow, pa.total_allocated_bytes() - before)
    assert (largest, count) == (100_000, 20)
    # Arrow's own memory stays below two row groups of the three columns read (pre-buffering,
    # newer pyarrow's default, would keep every row group read: ~3.5x this at the end)
    assert arrow < 2 * 250_000 * 3 * 8
    want = sum(lp[a : a + 100_000].sum() for a in range(0, n, 100_000))
    assert total == want


@pytest.mark.parametrize("chunk_rows", [3, 4, 7, 10**6])
def test_parquet_chunks_filled_from_small_batches(chunk_rows, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_parquet, "PIECE_ROWS", 4)  # batches of 4 rows straddle the chunks
    log = make_log(n=51)
    chunks = read_all(source("parquet", log, tmp_path, row_group_rows=5), chunk_rows=chunk_rows)
    assert [len(c) for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1)
    assert [c.start for c in chunks] == [k * chunk_rows for k in range(len(chunks))]
    for field in FIELDS:
        assert same_bits(joined(chunks, field), log[field]), field
    ragged = pa.array([[0.0, 1.0]] * 9 + [[0.0]] + [[0.0, 1.0]] * 41, pa.list_(pa.float32()))
    table = pa.table(
        {k: log[k] for k in ("sequence", "logprob", "ref_logprob")} | {"logits": ragged}
    )
    pq.write_table(table, tmp_path / "ragged.parquet", row_group_size=8)
    with pytest.raises(
        LogError, match=r"column 'logits', row (9|10): (1|2) logits, row \d+ has (1|2)"
    ):
        read_all(tmp_path / "ragged.parquet", chunk_rows=chunk_rows)


def test_write_logs_in_parts_row_groups_and_validation(tmp_path: Path) -> None:
    log = make_log(n=60)
    parts = [{k: v[a : a + 20] for k, v in log.items()} for a in (0, 20, 40)]
    for kind in FILES:
        path = write_logs(tmp_path / f"parts.{kind}", iter(parts), row_group_rows=15)
        chunk = read_all(path)[0]
        assert same_bits(chunk.ref_logprob, log["ref_logprob"])
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups == 6
    parts[2]["logprob"] = parts[2]["logprob"].copy()
    parts[2]["logprob"][3] = np.nan
    with pytest.raises(
        LogError, match=r"write_logs\(.*bad\.parquet\): column 'logprob', row 43: NaN"
    ):
        write_logs(tmp_path / "bad.parquet", parts)
    assert not list(tmp_path.glob("*bad*"))  # nothing half written


# ---- errors --------------------------------------------------------------------------------


def _set(field: str, row: int, value: object, dtype: object = None):
    def mutate(log: dict) -> dict:
        column = np.array(log[field], dtype=dtype or log[field].dtype)
        column[row] = value
        return {**log, field: column}

    return mutate


def _rename(old: str, new: str):
    return lambda log: {(new if k == old else k): v for k, v in log.items()}


# (case, sources it applies to, mutation of a 12-row log, what the message must say)
ERRORS = [
    ("missing", FILES + IN_MEMORY, _rename("ref_logprob", "ref_logprobs"),
     r"missing required column 'ref_logprob' \(did you mean 'ref_logprobs'\?\)"),
    ("missing-logprob", FILES + IN_MEMORY, _rename("logprob", "log_prob"),
     r"missing required column 'logprob' \(did you mean 'log_prob'\?\)"),
    ("nan", FILES + IN_MEMORY, _set("logprob", 3, np.nan), r"'logprob', row 3: NaN"),
    ("+inf", FILES + IN_MEMORY, _set("ref_logprob", 2, np.inf), r"'ref_logprob', row 2: \+inf"),
    ("-inf", FILES + IN_MEMORY, _set("logprob", 4, -np.inf), r"'logprob', row 4: -inf"),
    ("nan-old", FILES + IN_MEMORY, _set("old_logprob", 9, np.nan), r"'old_logprob', row 9: NaN"),
    ("positive", FILES + IN_MEMORY, _set("rollout_logprob", 5, 1e-3),
     r"'rollout_logprob', row 5: log-probability 0.001 > 0"),
    ("float-id", FILES + IN_MEMORY, _set("sequence", 2, 1.5, np.float64),
     r"'sequence', row 2: 1.5 is not an integer"),
    ("mask-2", FILES + IN_MEMORY, _set("mask", 1, 2, np.int64),
     r"'mask', row 1: 2 is not a boolean or 0/1"),
    ("mask-half", FILES + IN_MEMORY, _set("mask", 6, 0.5, np.float64),
     r"'mask', row 6: 0.5 is not a boolean or 0/1"),
    ("position", FILES + IN_MEMORY, _set("position", 8, -1), r"'position', row 8: -1 < 0"),
    ("bool-logprob", ("parquet", "npz", "pt", "dict"), lambda g: {**g, "logprob": g["mask"]},
     r"'logprob'.*(bool)"),
    ("logits-nan", ("parquet", "npz", "pt", "jsonl", "dict"), _set("logits", 10, np.nan),
     r"'logits', row 10: entry 0 is nan"),
    ("length", ("npz", "pt", "dict"), lambda g: {**g, "ref_logprob": g["ref_logprob"][:-1]},
     r"column 'ref_logprob' has 11 rows, column 'logprob' has 12 \(length mismatch\)"),
    ("logits-length", ("npz", "pt", "dict"), lambda g: {**g, "logits": g["logits"][:-2]},
     r"column 'logits' has 10 rows of logits, column 'logprob' has 12 \(length mismatch\)"),
    ("2-d", ("npz", "pt", "dict"), lambda g: {**g, "logprob": g["logprob"].reshape(3, 4)},
     r"column 'logprob': shape \(3, 4\); expected one row per token"),
    ("strings", ("parquet", "npz", "jsonl", "dict", "frame"),
     lambda g: {**g, "logprob": g["logprob"].astype(str)},
     r"'logprob'.*(type string|dtype <U|'-?0\.\d+' is not a number)"),
]  # fmt: skip
CASES = [(case, kind, m, msg) for case, kinds, m, msg in ERRORS for kind in kinds]


def assert_one_line(err: pytest.ExceptionInfo, where: str) -> None:
    message = str(err.value)
    assert "\n" not in message and message.startswith(where), message
    assert err.value.__cause__ is None and err.value.__suppress_context__ in (True, False)


@pytest.mark.parametrize(("case", "kind", "mutate", "message"), CASES,
                         ids=[f"{c}-{k}" for c, k, _, _ in CASES])  # fmt: skip
def test_bad_input_gets_a_one_line_error(case, kind, mutate, message, tmp_path: Path) -> None:
    src = source(kind, mutate(make_log(n=12, seed=2)), tmp_path)
    where = {"dict": "<dict>", "frame": "<DataFrame>"}.get(kind, str(src))
    if kind == "jsonl":  # the line too (1-based; no blank lines here)
        message = re.sub(r"row (\d+)", lambda m: rf"row {m[1]} \(line {int(m[1]) + 1}\)", message)
    with pytest.raises(LogError, match=message) as err:
        read_all(src, chunk_rows=5)
    assert_one_line(err, where)


@pytest.mark.parametrize("kind", FILES + IN_MEMORY)
def test_the_row_is_absolute_in_a_later_chunk_and_masked_rows_say_so(kind, tmp_path) -> None:
    log = make_log(n=50)
    log["mask"][40] = False
    log = _set("ref_logprob", 40, np.nan)(log)
    line = r" \(line 41\)" if kind == "jsonl" else ""
    with pytest.raises(LogError, match=rf"'ref_logprob', row 40{line}: NaN .*\[a masked row"):
        read_all(source(kind, log, tmp_path), chunk_rows=7)


def test_legal_edge_values_are_kept(tmp_path: Path) -> None:
    log = make_log(n=12, logits=False)
    log = _set("logprob", 2, 5e-7)(log)  # rounding above 0
    log = _set("old_logprob", 3, -np.inf)(log)
    chunk = read_all(source("parquet", log, tmp_path))[0]
    assert chunk.logprob[2] == 5e-7 and chunk.old_logprob[3] == -np.inf


def test_file_level_errors(tmp_path: Path) -> None:
    def fails(src, message: str) -> None:
        with pytest.raises(LogError, match=message) as err:
            read_all(src)
        assert_one_line(err, str(src))

    empty = {k: v[:0] for k, v in make_log(logits=False).items()}
    for kind in ("parquet", "npz", "pt"):
        fails(source(kind, empty, tmp_path, name="empty"), r"no rows \(an empty log\)")
        garbage = tmp_path / f"garbage.{kind}"
        garbage.write_bytes(b"PAR1 this is not a log file \x00\xff" * 20)
        fails(garbage, r"cannot read as (Parquet|\.npz|a torch file): ")
    good = source("parquet", make_log(), tmp_path)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    fails(cut, r"cannot read as Parquet")
    good = source("npz", make_log(), tmp_path)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:-200])
    fails(cut, r"cannot read as \.npz")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    fails(tmp_path / "blank.jsonl", r"no rows")
    (tmp_path / "zero.jsonl").write_bytes(b"")
    fails(tmp_path / "zero.jsonl", r"no rows")
    fails(tmp_path / "absent.parquet", r"no such file")
    fails(tmp_path / "log.csv", r"unknown log format '\.csv'")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    fails(tmp_path / "list.pt", r"holds a list; expected a dict of tensors")
    np.savez(tmp_path / "objects.npz", sequence=np.array([0, None], dtype=object),
             logprob=np.zeros(2), ref_logprob=np.zeros(2))  # fmt: skip
    fails(tmp_path / "objects.npz", r"member 'sequence.npy' holds Python objects")
    with pytest.raises(TypeError, match="source must be a path"):
        iter_chunks(3.0)
    with pytest.raises(ValueError, match="chunk_rows must be an integer >= 1"):
        iter_chunks(make_log(), chunk_rows=0)


def test_jsonl_line_errors(tmp_path: Path) -> None:
    path = source("jsonl", make_log(n=6, logits=False), tmp_path)
    lines = path.read_text().splitlines()

    def fails(text: list[str], message: str) -> None:
        path.write_text("\n".join(text) + "\n")
        with pytest.raises(LogError, match=message) as err:
            read_all(path, chunk_rows=2)
        assert_one_line(err, str(path))

    fails([*lines[:2], lines[2][:-3], *lines[3:]], r"line 3: not valid JSON \(")
    fails([*lines[:3], "[1, 2]", *lines[4:]], r"line 4: a JSON list, expected an object")
    record = json.loads(lines[4])
    del record["ref_logprob"]
    fails([*lines[:4], json.dumps(record), *lines[5:]], r"line 5: no 'ref_logprob'")
    short = {k: v for k, v in json.loads(lines[0]).items() if k != "position"}
    fails([json.dumps(short), *lines[1:]], r"line 2: 'position' is not on the first line")
    record = {**json.loads(lines[1]), "logprob": None}
    fails([lines[0], json.dumps(record), *lines[2:]], r"column 'logprob', row 1 \(line 2\): None")
    record = {**json.loads(lines[2]), "sequence": "abc"}
    fails([*lines[:2], "", json.dumps(record), *lines[3:]],
          r"column 'sequence', row 2 \(line 4\): 'abc' is not a number")  # fmt: skip
    (tmp_path / "bytes.jsonl").write_bytes(b'{"sequence": 1}\n\xff\xfe\n')
    with pytest.raises(LogError, match="not UTF-8"):
        read_all(tmp_path / "bytes.jsonl")


def test_parquet_type_and_null_errors(tmp_path: Path) -> None:
    log = make_log(n=10, logits=False)
    table = pa.table({**log, "ref_logprob": pa.array([*log["ref_logprob"][:6], None,
                                                      *log["ref_logprob"][7:]])})  # fmt: skip
    pq.write_table(table, tmp_path / "null.parquet", row_group_size=4)
    with pytest.raises(LogError, match=r"column 'ref_logprob', row 6: missing value \(null\)"):
        read_all(tmp_path / "null.parquet", chunk_rows=3)
    pq.write_table(pa.table({**log, "sequence": pa.array([str(s) for s in log["sequence"]])}),
                   tmp_path / "ids.parquet")  # fmt: skip
    with pytest.raises(LogError, match=r"column 'sequence' has type string: expected integers"):
        iter_chunks(tmp_path / "ids.parquet")  # raised before any row is read
    ragged = pa.array([[0.0, 1.0]] * 4 + [[0.0]] + [[0.0, 1.0]] * 5, pa.list_(pa.float32()))
    pq.write_table(pa.table({**log, "logits": ragged}), tmp_path / "ragged.parquet")
    with pytest.raises(LogError, match=r"column 'logits', row 4: 1 logits, row 3 has 2"):
        read_all(tmp_path / "ragged.parquet", chunk_rows=3)


def test_pandas_missing_values_and_extension_dtypes(tmp_path: Path) -> None:
    log = make_log(n=8, logits=False)
    frame = pd.DataFrame(log).astype({"sequence": "Int64", "mask": "boolean", "logprob": "Float64"})
    chunk = read_all(frame)[0]
    assert same_bits(chunk.sequence, log["sequence"]) and same_bits(chunk.mask, log["mask"])
    assert same_bits(chunk.logprob, log["logprob"])
    for kind in FILES:  # written with their numpy dtypes
        assert same_bits(read_all(write_logs(tmp_path / f"ext.{kind}", frame))[0].mask, log["mask"])
    frame.loc[5, "sequence"] = pd.NA
    with pytest.raises(LogError, match=r"<DataFrame>: column 'sequence', row 5: missing value"):
        iter_chunks(frame)
    mixed = pd.DataFrame({**log, "logprob": [*log["logprob"][:2], "x", *log["logprob"][3:]]})
    with pytest.raises(LogError, match=r"column 'logprob', row 2: 'x' is not a number"):
        read_all(mixed)


def test_names_are_never_guessed() -> None:
    log = make_log(n=8, logits=False)
    extra = {**log, "reward": np.ones(8), "response_ids": np.zeros(8)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_source(extra).names == open_source(log).names  # unknown: ignored, silent
    renamed = {k: v for k, v in log.items() if k != "mask"} | {"response_mask": log["mask"]}
    with pytest.warns(UserWarning, match=r"'response_mask' is ignored.*did you mean 'mask'\?"):
        chunk = read_all(renamed)[0]
    assert chunk.mask is None  # a warning, not a rename
    with pytest.raises(LogError, match=r"did you mean 'per_token_logps'\?"):
        iter_chunks({"sequence": [0], "per_token_logps": [-1.0], "ref_logprob": [-1.0]})


# ---- logits side arrays and in-memory inputs -------------------------------------------------


def test_logits_options(tmp_path: Path) -> None:
    log = make_log(n=30)
    side = {k: log.pop(k) for k in ("logits", "ref_logits")}
    main = source("parquet", log, tmp_path)
    sibling = write_logs(tmp_path / "side.npz", side, validate=False)
    for given in (sibling, side, write_logs(tmp_path / "side.pt", side, validate=False)):
        chunks = read_all(main, chunk_rows=4, logits=given)
        assert same_bits(joined(chunks, "logits"), side["logits"])
        assert same_bits(joined(chunks, "ref_logits"), side["ref_logits"])
    with pytest.raises(LogError, match=r"side\.npz: 30 rows of logits, .* has 29 tokens"):
        iter_chunks(source("parquet", {k: v[:-1] for k, v in log.items()}, tmp_path, "short"),
                    logits=sibling)  # fmt: skip
    with pytest.raises(LogError, match=r"side\.npz: 30 rows of logits, .*jsonl has more tokens"):
        read_all(source("jsonl", make_log(n=31, logits=False), tmp_path), logits=sibling)
    with pytest.raises(LogError, match=r"logits=True requires them"):
        iter_chunks(main, logits=True)
    both = source("npz", make_log(n=30), tmp_path)
    with pytest.raises(LogError, match=r"holds its own logits"):
        iter_chunks(both, logits=side)
    assert all(c.logits is None and c.ref_logits is None for c in iter_chunks(both, logits=False))
    compressed = tmp_path / "compressed.npz"
    full = make_log(n=30)
    np.savez_compressed(compressed, **{**full, "logits": np.asfortranarray(full["logits"])})
    chunks = read_all(compressed, chunk_rows=4)
    for field in FIELDS:
        assert same_bits(joined(chunks, field), full[field]), field


def test_torch_tensors_and_a_frame_of_arrays(tmp_path: Path) -> None:
    log = make_log(n=20)
    tensors = {k: torch.from_numpy(v) for k, v in log.items()}
    tensors["logits"] = tensors["logits"].to(torch.bfloat16)
    tensors["logprob"] = tensors["logprob"].requires_grad_(True)
    chunk = read_all(tensors, chunk_rows=100)[0]
    assert same_bits(chunk.logprob, log["logprob"])
    assert chunk.logits.dtype == np.float32
    assert same_bits(chunk.logits, tensors["logits"].float().numpy())
    pt = write_logs(tmp_path / "bf16.pt", {**log, "logits": log["logits"]}, validate=False)
    torch.save({**tensors, "logprob": tensors["logprob"].detach()}, pt)
    assert same_bits(read_all(pt)[0].logits, tensors["logits"].float().numpy())
    frame = pd.read_parquet(source("parquet", log, tmp_path))  # logits: a column of arrays
    assert frame["logits"].dtype == object
    chunks = read_all(frame, chunk_rows=6)
    assert same_bits(joined(chunks, "logits"), log["logits"])


def test_reading_loads_only_what_the_format_needs(tmp_path: Path) -> None:
    log = make_log(n=10)
    paths = [source(kind, log, tmp_path) for kind in ("npz", "jsonl")]
    code = (
        "import sys; from klest.diagnostics import iter_chunks\n"
        "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pyarrow'})\n"
        "before = heavy()\n"
        f"for p in {[str(p) for p in paths]!r}: list(iter_chunks(p))\n"
        "import json; print(json.dumps([before, heavy()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout)
    # pandas 3 itself imports pyarrow (its string dtype): only what reading adds counts
    assert "torch" not in before + after and after == before


def test_npz_members_are_streamed_not_loaded(tmp_path: Path, monkeypatch) -> None:
    path = source("npz", make_log(n=40), tmp_path)
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zipfile.ZipFile(path).infolist())
    reads: list[int] = []
    original = zipfile.ZipExtFile.read

    def spy(self, n=-1):
        reads.append(n)
        return original(self, n)

    monkeypatch.setattr(zipfile.ZipExtFile, "read", spy)
    read_all(path, chunk_rows=8)
    assert -1 not in reads and max(reads) <= 8 * 5 * 4 + 200  # one chunk of logits, or a header
