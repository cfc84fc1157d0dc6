"""Process-wide settings, made in one place: by the programs, never by a constructor, and the
same for every backend.

Some settings belong to the process, not to a model: a ``Trainer`` that made them would
change every other model in the process behind its back. So the programs make them, once:

=====================  ===================================================  =====================
setting                what and why                                         made by
=====================  ===================================================  =====================
the C allocator        ``MICROGPT_MALLOC``: tcmalloc where installed, else  every program, at its
                       ``reuse`` (glibc keeps freed memory for the next     start (``start``),
                       step; ``backends.host_memory``); the same for torch  for every backend
                       and JAX
matmul precision       float32 matmuls in full precision unless ``tf32``    every entry point
                       (torch's ``allow_tf32`` flags; JAX's                 (``settings``)
                       ``jax_default_matmul_precision``)
torch's global seed    dropout draws from torch's global generator,         every entry point
                       seeded with ``train_config.seed``
JAX 64-bit mode        float64 needs ``jax_enable_x64`` before any array    every entry point
                       is made
=====================  ===================================================  =====================

The programs are ``microgpt`` (``backends.cli``: train, sample, eval, parity, convert), the
benchmark's workers (``benchmarks.worker``) and ``benchmarks.ops``'s children. Threads and CPU
affinity are the frameworks' defaults, inherited from the environment alike. Each backend's
``process_settings`` restores what it changed when the run ends, so a test process can run
float64 and float32 one after the other. ``speed_settings`` describes all of it, in the same
words for every backend: the benchmark prints it side by side and marks any difference.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from backends import host_memory
from backends.interface import Backend
from common.config import TrainConfig

# Environment variables that can change a step's speed in either framework (or its allocator).
SPEED_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
                  "GOMP_SPINCOUNT", "OMP_PROC_BIND", "OMP_PLACES", "KMP_BLOCKTIME", "KMP_AFFINITY",
                  "XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION",
                  "JAX_CPU_ENABLE_ASYNC_DISPATCH", "XLA_PYTHON_CLIENT_PREALLOCATE",
                  "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR", "TORCHINDUCTOR_FREEZING",
                  "TORCH_CUDNN_V8_API_ENABLED", "NVIDIA_TF32_OVERRIDE", "CUDA_VISIBLE_DEVICES",
                  "LD_PRELOAD", "MALLOC_CONF", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_",
                  "MALLOC_TRIM_THRESHOLD_", "TCMALLOC_RELEASE_RATE", host_memory.ENV)


def start() -> str:
    """What every program does first: the allocator (``MICROGPT_MALLOC``); its one-line description."""
    return host_memory.apply()


@contextlib.contextmanager
def settings(backend: Backend, train_config: TrainConfig) -> Iterator[None]:
    """Make the process-wide settings ``train_config`` needs in ``backend`` for the duration."""
    with backend.process_settings(train_config):
        yield


def speed_settings(backend: Backend, device: Any, dtype: str) -> dict[str, str]:
    """Everything this process runs under that can change a step's speed, one line each, under
    the same names for every backend: what the benchmark's settings table compares."""
    framework = backend.speed_settings(device)  # the device, compute threads, float32 matmuls
    return {"device": framework.pop("device"), "compute dtype": dtype, **framework,
            "CPU affinity": cpu_list(), "allocator": start(),
            **{f"${name}": os.environ.get(name, "unset") for name in SPEED_ENV_VARS}}


def cpu_list() -> str:
    """The CPUs this process may run on, as ``0-3,6`` (what ``taskset`` and XLA's thread pool see)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return f"any of {os.cpu_count()}"
    runs: list[list[int]] = []
    for c in cpus:
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
