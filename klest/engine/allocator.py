"""Keep glibc from returning the engine's scratch memory to the OS after every block.

Each block allocates several arrays of block_size float64 (0.5 MB at the default size).
glibc serves such sizes with mmap, or trims them off the heap top as soon as they are freed,
so every block pays page faults on memory it just released — measured here at 40% of the
engine's time. Raising the mmap threshold to 4 MB and the trim threshold to 32 MB keeps
those pages mapped (at most 32 MB retained). No effect outside glibc.

This is process-wide, and it cannot be scoped: ``mallopt`` sets the allocator of the whole
process (every library in it) until the process ends. So klest

- never applies it on import: only when the engine runs blocks (:func:`klest.simulate`, in
  the calling process and in its pool or Dask worker processes), and, when the block size is
  given, only for blocks whose arrays glibc would serve with mmap (>= 128 KiB, 16,384 draws);
- applies it at most once per process, and logs that at DEBUG level (logger
  ``klest.engine.allocator``);
- lets you opt out: set the environment variable ``KLEST_TUNE_MALLOC=0`` (also reaches
  worker processes, which inherit it), or call :func:`disable_tuning` before the first
  simulation. The results do not depend on it (only the speed does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["ENV_VAR", "disable_tuning", "tune_allocator", "tuned"]

#: the opt-out: "0" (or "false", "no", "off") leaves glibc's allocator alone
ENV_VAR = "KLEST_TUNE_MALLOC"
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 4 << 20
_TRIM_THRESHOLD = 32 << 20
#: glibc's default mmap threshold: smaller blocks never reach mmap, nothing to tune
_GLIBC_DEFAULT_MMAP_THRESHOLD = 128 << 10

_LOG = logging.getLogger(__name__)
_DONE = False  # decided for this process (applied, refused by glibc, or not glibc)
_TUNED = False  # glibc accepted the thresholds
_DISABLED = False


def _opted_out() -> bool:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    return _DISABLED or value in ("0", "false", "no", "off")


def disable_tuning() -> None:
    """Never tune the allocator in this process, nor in worker processes started after this
    call (sets ``KLEST_TUNE_MALLOC=0`` in ``os.environ``, which they inherit; a Dask cluster
    started elsewhere needs the variable in its own environment). Has no effect on a process
    already tuned: glibc's settings cannot be taken back."""
    global _DISABLED
    _DISABLED = True
    os.environ[ENV_VAR] = "0"


def tuned() -> bool:
    """Whether this process's allocator has been tuned by klest."""
    return _TUNED


def tune_allocator(block_size: int | None = None) -> bool:
    """Apply the thresholds once per process, unless opted out (see the module docstring) or
    ``block_size`` draws of float64 are below glibc's mmap threshold; returns whether this
    process's allocator is tuned."""
    global _DONE, _TUNED
    if _DONE or _opted_out() or not sys.platform.startswith("linux"):
        return _TUNED
    if block_size is not None and 8 * block_size < _GLIBC_DEFAULT_MMAP_THRESHOLD:
        return _TUNED
    _DONE = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    _TUNED = bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok)
    _LOG.debug(
        "klest tuned glibc's allocator for this process: mallopt(M_MMAP_THRESHOLD, 4 MiB), "
        "mallopt(M_TRIM_THRESHOLD, 32 MiB) -> %s (opt out: %s=0)",
        "accepted" if _TUNED else "refused",
        ENV_VAR,
    )
    return _TUNED
