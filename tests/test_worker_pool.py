"""Pool workers die with their parent (SIGKILL, SIGTERM), ignore Ctrl-C, and stop at once on an
exception (issue 10, item 8). Processes are found through /proc, so most tests are Linux-only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from klest.engine.worker_pool import worker_pool

PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="needs /proc")
START_TIMEOUT = 15.0  # seconds for the workers to appear
DEATH_TIMEOUT = 5.0  # seconds for every worker to be gone once its parent is dead

# One case, far more draws than the test lets it run (minutes on 2 cores): it is always killed.
CONFIG = """\
name = "orphans"
estimators = ["k1", "k3"]
n = 4_000_000_000
seed = 1

[[cases]]
label = "shift"
q = { family = "normal", loc = 0.0, scale = 1.0 }
p = { family = "normal", loc = 0.1, scale = 1.0 }
"""


def _klest() -> list[str]:
    script = Path(sys.executable).with_name("klest")
    return [str(script)] if script.exists() else [shutil.which("klest") or "klest"]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None if there is none."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """Every live descendant of pid: {pid: start time} (start times guard against pid reuse)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] != "Z":
            children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            found[child] = start
            todo.append(child)
    return found


def _alive(processes: dict[int, int]) -> dict[int, int]:
    """The processes that still run (zombies and reused pids do not count)."""
    alive = {}
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[2] == start:
            alive[pid] = start
    return alive


def _start(command: list[str], out: Path, **popen: object) -> subprocess.Popen[bytes]:
    """Start command with its output to files: orphans holding a pipe would hang the test."""
    with open(out / "stdout", "wb") as stdout, open(out / "stderr", "wb") as stderr:
        return subprocess.Popen(command, stdout=stdout, stderr=stderr, **popen)


def _stop(parent: subprocess.Popen[bytes]) -> None:
    parent.kill()
    parent.wait()


def _wait_for_workers(parent: subprocess.Popen[bytes], count: int) -> dict[int, int]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = _descendants(parent.pid)
        if len(found) >= count:
            return found
        if parent.poll() is not None:
            pytest.fail(f"the run ended (exit code {parent.returncode}) before its workers started")
        time.sleep(0.05)
    pytest.fail(f"{count} workers did not start within {START_TIMEOUT} s")


def _seconds_until_gone(processes: dict[int, int]) -> float:
    """Seconds until none of processes runs; fails after DEATH_TIMEOUT."""
    started = time.monotonic()
    while (alive := _alive(processes)) and time.monotonic() - started < DEATH_TIMEOUT:
        time.sleep(0.02)
    assert not alive, f"workers {sorted(alive)} still run {DEATH_TIMEOUT} s after the parent died"
    return time.monotonic() - started


@pytest.fixture
def cleanup() -> Iterator[dict[int, int]]:
    """Processes a test started: whatever still runs at the end is killed (failing tests)."""
    started: dict[int, int] = {}
    yield started
    for pid in _alive(started):
        os.kill(pid, signal.SIGKILL)


def _start_run(tmp_path: Path, **popen: object) -> subprocess.Popen[bytes]:
    config = tmp_path / "orphans.toml"
    config.write_text(CONFIG)
    command = [*_klest(), "run", str(config), "--workers", "2", "--out", str(tmp_path / "out")]
    return _start(command, tmp_path, **popen)


@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_klest_run_leaves_no_workers(tmp_path, cleanup, sig):
    _kill_and_expect_no_workers(_start_run(tmp_path), sig, cleanup)


def _kill_and_expect_no_workers(parent: subprocess.Popen[bytes], sig: int, cleanup) -> None:
    """Once ``parent``'s two pool workers run, send it ``sig``: its workers must go too."""
    try:
        workers = _wait_for_workers(parent, 2)
        cleanup.update(workers)
        parent.send_signal(sig)
        parent.wait(timeout=DEATH_TIMEOUT)
        _seconds_until_gone(workers)
    finally:
        _stop(parent)


@needs_proc
def test_ctrl_c_reaches_the_parent_only(tmp_path, cleanup):
    parent = _start_run(tmp_path, start_new_session=True)  # its own process group, as a shell
    try:
        workers = _wait_for_workers(parent, 2)
        cleanup.update(workers)
        time.sleep(0.5)  # let the workers get into their tasks
        os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        parent.wait(timeout=10)
        _seconds_until_gone(workers)
    finally:
        _stop(parent)
    err = (tmp_path / "stderr").read_text()
    assert parent.returncode == 130, err
    assert "Traceback" not in err and "Process " not in err, err  # no worker spoke
    assert "interrupted" in err


SIMULATE = """\
import klest
q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.1, scale=1.0)
klest.simulate(q, p, ["k1", "k3"], n=4_000_000_000, seed=0, workers=2)
"""


@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_simulate_workers_die_with_a_killed_parent(tmp_path, cleanup, sig):
    """No handler here: SIGTERM kills the parent outright, as SIGKILL does."""
    _kill_and_expect_no_workers(_start([sys.executable, "-c", SIMULATE], tmp_path), sig, cleanup)


POOL = """\
import os, sys, threading, time
from klest.engine.worker_pool import worker_pool
def start(pool, seen):
    while len(seen) < 2:  # both workers have run a task: they are past their start-up
        seen |= {f.result() for f in [pool.submit(os.getpid) for _ in range(4)]}
        time.sleep(0.01)
with worker_pool(2, mp_context=sys.argv[1]) as pool:
    seen = set()
    if sys.argv[2] == "thread":  # started from a thread that ends: no PDEATHSIG
        thread = threading.Thread(target=start, args=(pool, seen))
        thread.start()
        thread.join()
    start(pool, seen)
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    print(*sorted(seen), flush=True)
    time.sleep(60)
"""


@needs_proc
@pytest.mark.parametrize(
    ("method", "starter"),
    [("fork", "main"), ("spawn", "main"), ("forkserver", "main"), ("fork", "thread")],
)
def test_workers_of_every_start_method_die_with_their_parent(tmp_path, cleanup, method, starter):
    """With forkserver the workers are children of the fork server, not of the parent, and
    workers forked from a thread that ends get no PDEATHSIG: only the watchdog (the parent's
    sentinel, its pid) can see the parent die."""
    parent = _start([sys.executable, "-c", POOL, method, starter], tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (line := (tmp_path / "stdout").read_text()).endswith("\n"):
            assert parent.poll() is None and time.monotonic() < deadline, "no workers started"
            time.sleep(0.05)
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2, line
        workers = {pid: stat[2] for pid in pids if (stat := _stat(pid))}
        helpers = _descendants(parent.pid)  # fork server, resource tracker: also die with it
        cleanup.update(workers | helpers)
        time.sleep(0.2)  # into their sleep(60) tasks
        parent.kill()
        parent.wait(timeout=DEATH_TIMEOUT)
        _seconds_until_gone(workers | helpers)
    finally:
        _stop(parent)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_outlive_the_thread_that_started_them(method):
    """PDEATHSIG fires when the *thread* that forked a worker ends: a pool first used from a
    short-lived thread must keep its workers (they rely on the watchdog instead)."""
    with worker_pool(2, mp_context=method) as pool:
        thread = threading.Thread(target=lambda: pool.submit(os.getpid).result())
        thread.start()
        thread.join()
        time.sleep(0.5)
        pids = {future.result() for future in [pool.submit(os.getpid) for _ in range(50)]}
        assert pids <= set(pool._processes)
        assert all(process.is_alive() for process in pool._processes.values())


def test_workers_ignore_sigint():
    with worker_pool(1) as pool:
        assert pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN


def _a_sigterm_handler(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def test_workers_do_not_inherit_a_sigterm_handler():
    """``klest run`` turns SIGTERM into an exception while it runs; a forked worker must not:
    it would survive ``terminate()`` (the exception is sent back as a task's result)."""
    previous = signal.signal(signal.SIGTERM, _a_sigterm_handler)
    try:
        with worker_pool(1, mp_context="fork") as pool:
            assert pool.submit(signal.getsignal, signal.SIGTERM).result() == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_exception_in_the_block_stops_the_workers_at_once(monkeypatch):
    thread_errors: list[object] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), worker_pool(2) as pool:
        futures = [pool.submit(time.sleep, 10) for _ in range(4)]
        processes = list(pool._processes.values())
        raise KeyboardInterrupt
    assert time.monotonic() - started < 5
    assert not any(process.is_alive() for process in processes)
    assert all(future.cancelled() or future.exception() for future in futures)
    assert not thread_errors  # the executor's manager thread ended cleanly


def test_futures_cancelled_in_the_block_do_not_break_the_shutdown(monkeypatch):
    """As ``pool.map`` does when its caller is interrupted: cancelled futures still queued when
    the workers are terminated made CPython 3.11's manager thread die with InvalidStateError."""
    thread_errors: list[object] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    with pytest.raises(KeyboardInterrupt), worker_pool(2) as pool:
        futures = [pool.submit(time.sleep, 10) for _ in range(20)]
        time.sleep(0.2)
        assert sum(future.cancel() for future in futures) >= 10
        raise KeyboardInterrupt
    assert not thread_errors


def test_normal_exit_waits_for_the_tasks():
    with worker_pool(2) as pool:
        futures = [pool.submit(pow, 2, k) for k in range(10)]
    assert [future.result(timeout=0) for future in futures] == [2**k for k in range(10)]


def test_normal_exit_can_cancel_the_queued_tasks():
    started = time.monotonic()
    with worker_pool(1, cancel_futures=True) as pool:
        futures = [pool.submit(time.sleep, 0.5) for _ in range(20)]
        time.sleep(0.2)
    assert time.monotonic() - started < 5  # not the 10 s of all 20 tasks
    assert futures[0].exception() is None and sum(f.cancelled() for f in futures) >= 15
