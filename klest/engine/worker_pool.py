"""Process pools whose workers die with their parent, however the parent dies.

A plain :class:`~concurrent.futures.ProcessPoolExecutor` leaves its workers running (reparented
to PID 1) when the parent is killed with SIGKILL or an unhandled SIGTERM, and on Ctrl-C every
worker prints its own ``KeyboardInterrupt`` traceback. :func:`worker_pool` returns the same
executor with guarded worker processes:

- **Parent death.** Each worker runs a watchdog thread that waits on
  :func:`multiprocessing.parent_process`'s sentinel (closed by the kernel when the parent dies,
  for every start method and platform) and polls ``os.getppid()``; it ends the worker with
  ``os._exit``. On Linux, a worker started from the parent's main OS thread also asks the kernel
  for SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``), then re-checks its parent
  pid, so that a parent dying before the ``prctl`` is not missed. PDEATHSIG fires when the
  *thread* that started the worker exits: ``ProcessPoolExecutor`` starts workers from whichever
  thread submits (3.11: all at the first ``submit`` with ``fork``, lazily with ``spawn`` and
  ``forkserver``, and from its manager thread with ``max_tasks_per_child``), so workers started
  from any other thread (or by the fork server, whose child they are) rely on the watchdog
  only, which never fires while the parent lives.
- **Ctrl-C, SIGTERM.** Workers ignore SIGINT, so a Ctrl-C to the process group reaches the
  parent only, and die of SIGTERM even if the parent (forked) had a handler for it; both are
  blocked from before a worker is started until this is in place. When the ``with``
  block is left by an exception (``KeyboardInterrupt``, ``SystemExit`` from a SIGTERM handler,
  ...) queued tasks are cancelled and the workers terminated at once instead of finishing
  their tasks; on normal exit the pool shuts down as usual.

Workers only choose which tasks they run, so results do not depend on any of this.

>>> with worker_pool(2) as pool:
...     sorted(pool.map(abs, [-3, 1, -2]))
[1, 2, 3]
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.context import BaseContext, SpawnProcess
from typing import Any

__all__ = ["guarded_context", "worker_pool"]

WATCHDOG_POLL = 0.25  # seconds between os.getppid() checks (the sentinel wakes it at once)
TERMINATE_GRACE = 2.0  # seconds a terminated worker gets before SIGKILL
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_BLOCKABLE = hasattr(signal, "pthread_sigmask")
_HELD = {signal.SIGINT, signal.SIGTERM}  # blocked from before a worker starts until it is guarded


@dataclass(frozen=True)
class _Guard:
    """What a worker needs to know about its parent (recorded at start, picklable)."""

    parent_pid: int
    direct: bool  # the parent forked or spawned it itself (not a fork server)
    pdeathsig: bool  # started from the parent's main OS thread on Linux


class _Guarded:
    """Mixin for a ``multiprocessing`` Process class: record the guard, install it in the child."""

    _klest_guard: _Guard

    def start(self) -> None:
        method = self._start_method  # type: ignore[attr-defined]
        direct = method in ("fork", "spawn")
        main_os_thread = sys.platform.startswith("linux") and threading.get_native_id() == (
            os.getpid()
        )
        self._klest_guard = _Guard(os.getpid(), direct, direct and main_os_thread)
        if not _BLOCKABLE:
            super().start()  # type: ignore[misc]
            return
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        try:
            super().start()  # type: ignore[misc]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def run(self) -> None:
        _protect(self._klest_guard)
        super().run()  # type: ignore[misc]


class _GuardedSpawnProcess(_Guarded, SpawnProcess):
    pass


_PROCESS_CLASSES: dict[str, type] = {"spawn": _GuardedSpawnProcess}

if sys.platform != "win32":
    from multiprocessing.context import ForkProcess, ForkServerProcess

    class _GuardedForkProcess(_Guarded, ForkProcess):
        pass

    class _GuardedForkServerProcess(_Guarded, ForkServerProcess):
        pass

    _PROCESS_CLASSES.update(fork=_GuardedForkProcess, forkserver=_GuardedForkServerProcess)


def _protect(guard: _Guard) -> None:
    """In a new worker: ignore SIGINT, die of SIGTERM, die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a pending Ctrl-C is discarded here
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler forked from the parent
    if _BLOCKABLE:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
    if guard.pdeathsig:
        _set_parent_death_signal()
    if guard.direct and os.getppid() != guard.parent_pid:
        os._exit(1)  # the parent died before the guard was in place
    parent = multiprocessing.parent_process()
    sentinel = None if parent is None else parent.sentinel
    threading.Thread(
        target=_watch, args=(guard, sentinel), name="klest-parent-watchdog", daemon=True
    ).start()


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the watchdog alone remains
        pass


def _watch(guard: _Guard, sentinel: Any) -> None:
    while True:
        if sentinel is not None:
            try:
                if multiprocessing.connection.wait([sentinel], timeout=WATCHDOG_POLL):
                    os._exit(1)
            except OSError:  # sentinel unusable: poll the parent pid only
                sentinel = None
                continue
        else:
            threading.Event().wait(WATCHDOG_POLL)
        if guard.direct and os.getppid() != guard.parent_pid:
            os._exit(1)


class _GuardedContext:
    """A multiprocessing context whose ``Process`` is guarded; everything else is the base's."""

    def __init__(self, base: BaseContext) -> None:
        method = base.get_start_method()
        if method not in _PROCESS_CLASSES:
            raise ValueError(f"mp_context: unsupported start method {method!r}")
        self._base = base
        self._process_class = _PROCESS_CLASSES[method]
        self.processes: list[Any] = []

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # multiprocessing spells it so
        process = self._process_class(*args, **kwargs)
        self.processes.append(process)  # few: max_workers, plus replacements
        return process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def guarded_context(method: str | BaseContext | None = None) -> Any:
    """A multiprocessing context (``ProcessPoolExecutor(mp_context=...)``) whose workers die
    with their parent and ignore SIGINT. ``method``: a start method name, a context, or None
    (the default context).

    >>> guarded_context("spawn").get_start_method()
    'spawn'
    """
    base = method if isinstance(method, BaseContext) else multiprocessing.get_context(method)
    return _GuardedContext(base)


@contextmanager
def worker_pool(
    max_workers: int,
    *,
    mp_context: str | BaseContext | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    cancel_futures: bool = False,
) -> Iterator[ProcessPoolExecutor]:
    """A :class:`~concurrent.futures.ProcessPoolExecutor` of ``max_workers`` guarded workers
    (see the module docstring): they die with the parent and ignore SIGINT. Leaving the block
    normally shuts the pool down, waiting for the running tasks and (unless ``cancel_futures``)
    the queued ones; leaving it by an exception cancels the queued tasks and terminates the
    workers at once.

    >>> import os
    >>> with worker_pool(1) as pool:
    ...     pool.submit(os.getppid).result() == os.getpid()
    True
    """
    context = guarded_context(mp_context)
    pool = ProcessPoolExecutor(
        max_workers=max_workers, mp_context=context, initializer=initializer, initargs=initargs
    )
    try:
        yield pool
    except BaseException:
        _terminate(pool, context.processes)
        raise
    pool.shutdown(wait=True, cancel_futures=cancel_futures)


def _terminate(pool: ProcessPoolExecutor, processes: list[Any]) -> None:
    """Terminate every worker now (SIGKILL after a grace period), then shut the pool down: the
    pool is broken, its futures fail with ``BrokenProcessPool``.

    Deaths are awaited on the sentinels: the executor's manager thread reaps the processes.
    Queued futures are cancelled first, and the manager thread must have dropped them (and any
    the caller cancelled, as ``pool.map`` does) before the workers die: CPython 3.11's manager
    thread otherwise dies setting ``BrokenProcessPool`` on a cancelled future
    (``InvalidStateError``), with a traceback.
    """
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + TERMINATE_GRACE
    while (
        manager is not None
        and manager.is_alive()
        and getattr(pool, "_cancel_pending_futures", False)  # reset once the manager has done it
        and time.monotonic() < deadline
    ):
        time.sleep(0.002)
    sentinels = {}
    for process in processes:
        try:
            sentinels[process.sentinel] = process
            process.terminate()
        except (ValueError, ProcessLookupError):  # never started, or closed
            pass
    deadline = time.monotonic() + TERMINATE_GRACE
    late = list(sentinels)
    while late and (remaining := deadline - time.monotonic()) > 0:
        done = multiprocessing.connection.wait(late, timeout=remaining)
        late = [sentinel for sentinel in late if sentinel not in done]
    for sentinel in late:
        sentinels[sentinel].kill()
    if manager is not None:
        manager.join(timeout=10)  # shutdown(wait=False) has forgotten it
