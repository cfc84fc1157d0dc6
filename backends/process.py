"""Process-wide settings, made in one place: by the entry points, never by a constructor.

Some settings belong to the process, not to a model: a ``Trainer`` that made them would
change every other model in the process behind its back. So the programs make them, once,
around the whole run, through :func:`settings`:

=====================  ===================================================  =====================
setting                what and why                                         made by
=====================  ===================================================  =====================
host memory            glibc keeps freed memory for reuse (``mallopt``;     ``microgpt``, the
                       ``backends.host_memory``): a CPU step re-zeroes its  benchmark worker
                       large activations otherwise. Programs only; torch    (torch runs only)
                       only (``KEEPS_FREED_MEMORY``).
matmul precision       float32 matmuls in full precision unless ``tf32``    every entry point
                       (torch's ``allow_tf32`` flags; JAX's
                       ``jax_default_matmul_precision``)
torch's global seed    dropout draws from torch's global generator,         every entry point
                       seeded with ``train_config.seed``
JAX 64-bit mode        float64 needs ``jax_enable_x64`` before any array    every entry point
                       is made
=====================  ===================================================  =====================

The entry points are ``microgpt`` (``backends.cli``: train, sample, parity), the benchmark
worker (``benchmarks.worker``) and the parity suite (``backends.parity.run_parity``). Each
backend's ``process_settings`` restores what it changed when the run ends, so a test process
can run float64 and float32 one after the other. A float64 Trainer in a JAX process without
64-bit mode fails with one line saying so.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from backends.interface import Backend
from common.config import TrainConfig


@contextlib.contextmanager
def settings(backend: Backend, train_config: TrainConfig, *, host_memory: bool = False) -> Iterator[None]:
    """Make the process-wide settings ``train_config`` needs in ``backend`` for the duration.

    ``host_memory`` also tunes the C allocator, which cannot be undone: programs only."""
    if host_memory:
        host_memory_setting(backend)
    with backend.process_settings(train_config):
        yield


def host_memory_setting(backend: Backend) -> str:
    """Tune malloc for ``backend`` if it gains from it (idempotent); one line saying what is set."""
    if not KEEPS_FREED_MEMORY[backend.BACKEND]:
        return f"system default (the {backend.BACKEND} backend reuses its own buffers)"
    from backends.host_memory import keep_freed_memory

    return keep_freed_memory()


# Whether a backend's programs tune malloc to keep freed memory. [torch≠jax] eager torch allocates
# and frees its activations every step (15.8 s against 11.2 s a shakespeare-char step without and
# with, on an AMD EPYC); XLA reuses its own buffers: the same step ran at 18.8 s without and 19.6 s
# with, and the setting only kept freed compile-time memory, 592 against 506 MiB peak RSS at baby.
KEEPS_FREED_MEMORY = {"torch": True, "jax": False}
