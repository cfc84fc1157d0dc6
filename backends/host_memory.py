"""Host memory: let the C allocator keep freed memory for the next step. Framework-free.

A training step on the CPU allocates and frees the same large activation buffers every step
(at ``shakespeare-char`` the attention scores alone are 100 MB per layer). glibc's malloc
serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed, so each step page-faults and zeroes all of that
memory again: out-of-place elementwise ops then run several times slower than the memory
allows. PyTorch's CPU tuning guide answers this by preloading jemalloc or tcmalloc; glibc can
be told the same thing directly, with no preload and no dependency: serve large blocks from
the heap too, and never hand the heap's top back to the system, so a freed buffer is
reused by the next step. XLA manages its own buffers and is barely affected either way.

This is a process-wide setting, so it is made by the programs (``microgpt``, the benchmark
worker), not on import. ``MICROGPT_MALLOC=system`` leaves malloc as it is, to measure the
difference. On other C libraries (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "MICROGPT_MALLOC"
# mallopt(3) parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied: str | None = None


def keep_freed_memory() -> str:
    """Tune glibc's malloc to reuse freed memory (see the module doc); returns a one-line
    description for reports. Idempotent: the first call decides."""
    global _applied
    if _applied is not None:
        return _applied
    choice = os.environ.get(ENV, "reuse")
    if choice == "system":
        _applied = f"system default ({ENV}=system)"
    elif choice != "reuse":
        _applied = f"system default ({ENV}={choice!r} is not 'reuse' or 'system')"
    elif not sys.platform.startswith("linux"):
        _applied = f"system default (not glibc: {sys.platform})"
    else:
        _applied = _tune_glibc()
    return _applied


def _tune_glibc() -> str:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return "system default (not glibc)"
    version.restype = ctypes.c_char_p
    # M_MMAP_MAX 0: no block is served by mmap, so freed blocks go back to the heap for reuse.
    # M_TRIM_THRESHOLD -1: never give the heap's top back (mallopt(3): "-1 disables trimming").
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, -1) != 1:
        return "system default (mallopt refused)"
    return f"glibc {version().decode()}: freed memory kept for reuse (M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1)"
