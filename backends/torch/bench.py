"""PyTorch hooks for the benchmark harness (``benchmarks/``), which never imports torch itself
(and which this module never imports: dependencies point benchmarks -> backends -> common).

Mirrors ``backends/jax/bench.py``: the same functions with the same signatures.

- ``environment(trainer)``: framework versions, device, thread counts, matmul precision.
- ``ready(arrays)``: block until arrays put on the device have arrived.
- ``compile_stats()``: compilations so far in this process, and the time they took.
- ``reset_peak_memory(trainer)`` / ``peak_memory(trainer)``: peak RSS, and the device's peak.
- ``matmul_probe(device, dtype, n)``: one n x n matmul, waited for (timed by ``common.matmul_rate``).
- ``matmul_peak(device, dtype, fresh)``: the measured float32 matmul rate of the device,
  cached per machine in the user cache.
- ``profile(trainer, x, y, steps, out_dir)``: a torch.profiler trace of a few steps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from common import hostinfo, matmul_rate
from common.hostinfo import cpu_model

BACKEND = "torch"


# -- environment ---------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model()


def environment(trainer=None) -> dict[str, Any]:
    device = trainer.device if trainer is not None else torch.device("cpu")
    env: dict[str, Any] = {
        "framework": "torch",
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn":
                     torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None},
        "device": {"type": device.type, "name": device_name(device),
                   "count": torch.cuda.device_count() if device.type == "cuda" else 1},
        "threads": {"torch.get_num_threads": torch.get_num_threads(),
                    "torch.get_num_interop_threads": torch.get_num_interop_threads(),
                    "parallel_backend": _parallel_backend(),
                    "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    **{name: os.environ.get(name) for name in
                       ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}},
        "precision": {
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        },
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    if trainer is not None:
        env["dtype"] = trainer.dtype
        env["compile"] = bool(trainer.train_config.compile)
        opt = trainer.optimizer.defaults
        env["optimizer"] = {"class": type(trainer.optimizer).__name__,
                            "fused": opt.get("fused"), "foreach": opt.get("foreach")}
        env["attention"] = trainer.train_config.attention
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["device"]["memory_bytes"] = props.total_memory
        env["device"]["capability"] = f"{props.major}.{props.minor}"
    return env


def _parallel_backend() -> str | None:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend"):
            return line.split(":", 1)[1].strip()
    return None


def ready(arrays) -> None:
    """Arrays put on the device by ``Trainer.to_device`` are there once this returns."""
    if any(isinstance(a, torch.Tensor) and a.device.type == "cuda" for a in arrays):
        torch.cuda.synchronize()


# -- compilations ----------------------------------------------------------------------------

def compile_stats() -> dict[str, Any]:
    """torch.compile's graphs compiled so far in this process (0 in eager mode) and their time.

    A rise of ``compilations`` between two calls means dynamo traced and compiled again:
    a recompilation (a guard failed) or a graph break that compiled a new piece.
    """
    if "torch._dynamo" not in sys.modules:  # eager: dynamo never loaded, nothing compiled
        return {"compilations": 0, "compile_s": 0.0, "source": "torch._dynamo not loaded (eager)"}
    from torch._dynamo import utils

    stats = utils.counters["stats"]
    seconds = sum(utils.compilation_time_metrics.get("_compile.compile_inner", []))
    return {"compilations": int(stats.get("unique_graphs", 0)), "compile_s": float(seconds),
            "graph_breaks": int(sum(utils.counters["graph_break"].values())),
            "source": "torch._dynamo counters (stats.unique_graphs; _compile.compile_inner seconds)"}


# -- memory ------------------------------------------------------------------------------------

def reset_peak_memory(trainer) -> dict[str, Any]:
    """Start the peak counters afresh, so peaks cover what follows (the timed steps)."""
    out = {"rss": hostinfo.reset_host_rss_peak(), "device": False}
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
        out["device"] = True
    return out


def peak_memory(trainer) -> dict[str, Any]:
    rss = hostinfo.host_rss_peak()
    out: dict[str, Any] = {"host_rss_peak_bytes": rss["bytes"], "host_rss_source": rss["source"],
                           "device_peak_bytes": None, "device_source": None}
    if trainer.device.type == "cuda":
        out["device_peak_bytes"] = int(torch.cuda.max_memory_allocated(trainer.device))
        out["device_reserved_peak_bytes"] = int(torch.cuda.max_memory_reserved(trainer.device))
        out["device_source"] = "torch.cuda.max_memory_allocated"
    return out


# -- the device's matmul peak ---------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _probe_key(device: torch.device, dtype: str, sizes: tuple[int, ...]) -> str:
    return (f"torch {torch.__version__} | {device.type} | {device_name(device)} | threads={torch.get_num_threads()} | "
            f"{dtype} | tf32={torch.backends.cuda.matmul.allow_tf32} | n={'/'.join(map(str, sizes))}")


def matmul_probe(device, dtype: str, n: int) -> Callable[[], None]:
    """One n x n matmul on ``device``, waited for: what ``common.matmul_rate.time_matmul`` times."""
    device = torch.device(device)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[dtype]
    gen = torch.Generator(device="cpu").manual_seed(n)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=tdtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=tdtype)

    def matmul() -> None:
        a @ b
        _sync(device)

    return matmul


def matmul_peak(device, dtype: str = "float32", fresh: bool = False) -> dict[str, Any]:
    """The best rate of an n x n float32 matmul on ``device`` (a few sizes, many short repeats),
    in FLOP/s, and how it was found.

    Measured once per machine (and thread count, framework version, precision setting) and
    cached in ``$XDG_CACHE_HOME/microgpt/matmul_peak.json``; ``fresh`` probes again, and the
    cache keeps the best probe so far (``common.matmul_rate``: the timing loop and the cache).
    """
    device = torch.device(device)
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    key = _probe_key(device, dtype, sizes)
    if not fresh and (cached := matmul_rate.cached_peak(key)):
        return cached
    rates = matmul_rate.probe_rates(lambda n: matmul_probe(device, dtype, n), sizes)
    tf32 = f", TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}" if device.type == "cuda" else ""
    return matmul_rate.record_peak(key, rates, lambda n: (
        f"measured: torch.matmul {dtype}{tf32} on {device_name(device)}, {torch.get_num_threads()} threads, "
        f"median of the 5 fastest repeats, best over n x n sizes {'/'.join(map(str, sizes))} (best at n={n})"))


# -- profile ------------------------------------------------------------------------------------

def profile(trainer, x, y, steps: int, out_dir) -> str:
    """Trace ``steps`` training steps with torch.profiler (outside any timed region).

    Writes ``torch_trace.json`` (Chrome trace: chrome://tracing or ui.perfetto.dev) and
    ``torch_ops.txt`` (operators by self time) into ``out_dir``; returns the trace's path.
    """
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    trainer.wait(trainer.step(x, y))  # as in the jax hook: one untraced step first
    with torch_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            with record_function("train_step"):
                trainer.wait(trainer.step(x, y))
    trace = out / "torch_trace.json"
    prof.export_chrome_trace(str(trace))
    sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    (out / "torch_ops.txt").write_text(f"torch.profiler, {steps} steps, sorted by {sort}\n{table}\n")
    return str(trace)
