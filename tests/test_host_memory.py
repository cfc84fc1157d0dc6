"""backends/host_memory: freed buffers are reused instead of page-faulted in again each step.

Each case runs in a fresh interpreter (numpy only), because the setting is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, numpy as np
from backends.host_memory import keep_freed_memory
print(keep_freed_memory())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**25); del a  # 256 MiB, like a step's activations: allocated, freed ...
before = faults()
for _ in range(3):  # ... and allocated again by the next step
    a = np.ones(2**25); del a
print((faults() - before) // 3)
"""


def _run(malloc: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MICROGPT_MALLOC"}
    if malloc is not None:
        env["MICROGPT_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    description, faults = out.stdout.strip().splitlines()
    return description, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tuning is glibc's mallopt; elsewhere a no-op")
def test_freed_memory_is_reused_without_page_faults():
    description, faults = _run(None)
    assert description.startswith("glibc") and "M_MMAP_MAX=0" in description
    assert faults < 50, f"{faults} page faults per 256 MiB re-allocation: freed memory was not reused"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tuning is glibc's mallopt; elsewhere a no-op")
def test_system_default_faults_again_so_the_test_above_can_fail():
    description, faults = _run("system")
    assert description == "system default (MICROGPT_MALLOC=system)"
    assert faults > 100, "glibc's default no longer returns large blocks to the system; revisit host_memory"


def test_unknown_setting_leaves_malloc_alone_and_says_why():
    description, _ = _run("jemalloc")
    assert description.startswith("system default") and "'jemalloc'" in description
