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

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from backends.torch.device import describe_device
from backends.torch.op_names import CATEGORY, MATMULS, fused_kernel_category, is_collective
from common import hostinfo, matmul_rate

BACKEND = "torch"


# -- environment ---------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    return describe_device(device)["name"]


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
    # [torch≠jax] ATen's intra-op thread pool (OpenMP or TBB) is a build choice torch reports; XLA:CPU has none
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
    out = {"rss": hostinfo.reset_host_rss_peak(), "rss_at_reset_bytes": hostinfo.host_rss(), "device": False}
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
    # [torch≠jax] torch waits for a device (torch.cuda.synchronize); JAX waits for arrays (block_until_ready)
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
        f"median of the 5 fastest repeats, best over n x n sizes {'/'.join(map(str, sizes))} (best at n={n})"),
        engine="torch.matmul", device=f"{device.type}|{device_name(device)}")


ENGINES = {"cpu": ("torch.matmul", "torch oneDNN"), "cuda": ("torch.matmul",)}


def engine_peaks(device, fresh: bool = False) -> list[dict[str, Any]]:
    """The float32 matmul peak of every engine torch brings for ``device`` (cached like
    ``matmul_peak``): its BLAS through ``torch.matmul`` (MKL on x86), and on a CPU also its bundled
    oneDNN (``mkldnn_linear``), which on some CPUs beats the BLAS torch picks by default."""
    device = torch.device(device)
    out = [matmul_peak(device, "float32", fresh)]
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        sizes = (1024, 2048)
        key = _probe_key(device, "float32", sizes) + " | oneDNN mkldnn_linear"
        cached = None if fresh else matmul_rate.cached_peak(key)
        out.append(cached or matmul_rate.record_peak(key, matmul_rate.probe_rates(_onednn_probe, sizes), lambda n: (
            f"measured: torch oneDNN (torch._C._nn.mkldnn_linear) float32 on {device_name(device)}, "
            f"{torch.get_num_threads()} threads, best over n x n sizes 1024/2048 (best at n={n})"),
            engine="torch oneDNN", device=f"cpu|{device_name(device)}"))
    return out


def _onednn_probe(n: int) -> Callable[[], None]:
    # [torch≠jax] torch brings oneDNN beside its BLAS, a second CPU matmul engine; JAX's one engine is XLA
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=gen).to_mkldnn()
    w = torch.randn(n, n, generator=gen)
    return lambda: torch._C._nn.mkldnn_linear(a, w, None)  # on the CPU: done when it returns


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
    with _kernels_named(trainer.train_config.compile):
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


@contextlib.contextmanager
def _kernels_named(compiled: bool) -> Iterator[None]:
    """Under torch.compile on a CPU, Inductor's generated C++ kernels run inside one
    ``## Call CompiledFxGraph ##`` event, which the attribution can only call "framework", unless
    Inductor is asked to record each kernel by name (``cpp.enable_kernel_profile``): for the
    trace, the graphs are rebuilt that way (the untraced step before the trace does it), and
    dropped after, so nothing timed ever ran the recording build. (On a GPU the profiler names
    Triton's kernels by itself.)

    [torch≠jax] a JAX trace names every XLA op by its HLO instruction, with nothing to switch on."""
    if not compiled:
        yield
        return
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    try:
        with inductor_config.patch({"cpp.enable_kernel_profile": True}):
            yield
    finally:
        torch._dynamo.reset()


# -- what each traced op is (benchmarks/attribution.py: the same categories for every backend) ------
# [torch≠jax] torch's profiler names aten ops, Inductor's kernels and collectives, classified here by
# name (the tables in torch/op_names.py); JAX's ops are classified from the HLO (jax/hlo.py)

def op_classifier(trainer) -> Callable[[str, dict, tuple], str | None]:
    """``classify(name, args, ancestors)`` for the events of a ``profile`` trace of this trainer:
    a category of ``benchmarks.attribution.CATEGORIES``, or None for what is not an op (Python,
    autograd's bookkeeping, the profiler). A backward matmul (under an autograd node) is a
    weight gradient when it contracts over the step's B*T tokens, an input gradient otherwise."""
    tokens = trainer.train_config.batch_size * trainer.model_config.block_size

    def classify(name: str, args: dict, ancestors: tuple) -> str | None:
        if name.startswith("Optimizer."):  # torch.optim's record_function around step / zero_grad
            return "optimizer"
        if is_collective(name):
            return "communication"
        if not name.startswith("aten::"):
            return fused_kernel_category(name)  # None: not an op (Python, autograd, the profiler)
        if name in MATMULS:
            if name in ("aten::bmm", "aten::baddbmm"):
                return "attention"  # q @ k^T and att @ v, batched over (B, heads)
            if not any("Backward" in a or a.startswith("autograd::") for a in ancestors):
                return "forward matmul"
            dims = args.get("Input Dims") or []
            lhs = dims[1] if name == "aten::addmm" and len(dims) > 2 else (dims[0] if dims else [])
            return "weight-grad matmul" if len(lhs) == 2 and lhs[1] == tokens else "input-grad matmul"
        return CATEGORY.get(name, "other")

    return classify
