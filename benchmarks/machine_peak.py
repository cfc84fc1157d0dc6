"""The machine's best float32 matmul: the headline peak every MFU in the report is measured against.

Each framework brings its own matmul engines (torch: its BLAS through ``torch.matmul``, and on a
CPU its bundled oneDNN; JAX: XLA's), and they differ on the same CPU by up to 2x. The machine's
peak is the best any installed engine reaches, whichever backends this invocation times: each
worker probes its own framework's engines (``backends/<name>/bench.py: engine_peaks``), an
installed framework that is not timed is probed in a short process of its own, and every probe
is cached per machine (``common/matmul_rate.py``), keeping the best seen. The report names the
engine that set it; each backend's MFU against its own framework's matmul is a second figure.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from benchmarks import launch
from common import matmul_rate

# engine names each framework's probes record (backends/<name>/bench.py: ENGINES)
ENGINE_PREFIX = {"torch": "torch", "jax": "XLA"}


def installed(framework: str) -> bool:
    return importlib.util.find_spec(framework) is not None


def probe_missing(device: str, timed: list[str], device_flag: str) -> list[str]:
    """Probe, each in a process of its own, the installed frameworks this invocation did not time
    and whose engines have no cached peak on ``device`` yet; returns what it could not probe."""
    failed = []
    for framework, prefix in ENGINE_PREFIX.items():
        if framework in timed or not installed(framework) or not matmul_rate.machine_best(device, [prefix])[1]:
            continue
        spec = {"task": "engine_peaks", "backend": framework, "device": device_flag}
        if launch.run_worker(spec, False)["status"] != "ok":
            failed.append(framework)
    return failed


def headline(device: str) -> dict[str, Any] | None:
    """``{"flops_per_s", "source", "engine"}`` of the best engine cached for ``device``, or None."""
    best, _ = matmul_rate.machine_best(device)
    if best is None:
        return None
    return {"flops_per_s": best["flops_per_s"], "engine": best.get("engine"),
            "source": f"the machine's best float32 matmul among the engines installed: {best.get('engine')} "
                      f"({best.get('source', '?')})"}
