"""JAX hooks for the benchmark harness (``benchmarks/``), which never imports jax itself
(and which this module never imports: dependencies point benchmarks -> backends -> common).

Mirrors ``backends/torch/bench.py``: the same functions with the same signatures.

- ``environment(trainer)``: framework versions, device, thread settings, matmul precision, XLA_FLAGS.
- ``ready(arrays)``: block until arrays put on the device have arrived.
- ``compile_stats()``: XLA compilations so far in this process, and the time they took.
- ``reset_peak_memory(trainer)`` / ``peak_memory(trainer)``: peak RSS, the device's peak
  (``memory_stats``, where the device keeps them) and the compiled step's memory analysis.
- ``matmul_probe(device, dtype, n)``: one n x n matmul, waited for (timed by ``common.matmul_rate``).
- ``matmul_peak(device, dtype, fresh)``: the measured float32 matmul rate of the device,
  cached per machine in the user cache.
- ``profile(trainer, x, y, steps, out_dir)``: a jax.profiler trace of a few steps.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from backends.jax.device import describe_device
from common import hostinfo, matmul_rate

BACKEND = "jax"

# Every XLA compilation in this process (jit, AOT .compile(), eager op dispatch) reports its
# backend-compile duration here; counting them before and after a region shows recompilations.
# [torch≠jax] torch._dynamo keeps its own counters; JAX reports each compilation to a listener
_COMPILES = {"count": 0, "seconds": 0.0}
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event == _COMPILE_EVENT:
        _COMPILES["count"] += 1
        _COMPILES["seconds"] += float(duration)


jax.monitoring.register_event_duration_secs_listener(_on_duration)


# -- environment ---------------------------------------------------------------------------

def device_name(device) -> str:
    return describe_device(device)["name"]


def _device_type(device) -> str:  # [torch≠jax] JAX's platform "gpu" is torch's device type "cuda"
    return describe_device(device)["type"]


def _version(name: str) -> str | None:
    # [torch≠jax] jaxlib, flax and optax are packages of their own; torch carries its versions (torch.version)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(trainer=None) -> dict[str, Any]:
    device = trainer.device if trainer is not None else jax.devices()[0]
    env: dict[str, Any] = {
        "framework": "jax",
        "versions": {"jax": jax.__version__, "jaxlib": _version("jaxlib"), "flax": _version("flax"),
                     "optax": _version("optax")},
        "device": {"type": _device_type(device), "name": device_name(device), "kind": device.device_kind,
                   "platform": device.platform, "count": len(jax.devices(device.platform)),
                   "default_backend": jax.default_backend()},
        "threads": {"XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                    "cpu_count": os.cpu_count(),
                    "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "note": "XLA:CPU sizes its thread pool from the CPUs it may use unless XLA_FLAGS say otherwise"},
        "precision": {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
                      "jax_enable_x64": bool(jax.config.jax_enable_x64)},
        "memory": {"XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
                   "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
                   "XLA_PYTHON_CLIENT_ALLOCATOR": os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR")},
    }
    if trainer is not None:
        env["dtype"] = trainer.dtype
        env["compile"] = True  # jax always jit-compiles the step
        env["attention"] = trainer.train_config.attention
        env["optimizer"] = {"class": "optax chain: clip_by_global_norm, adamw (jitted with the step)"}
    return env


def ready(arrays) -> None:
    """Arrays put on the device by ``Trainer.to_device`` are there once this returns."""
    jax.block_until_ready(list(arrays))


# -- compilations ----------------------------------------------------------------------------

def compile_stats() -> dict[str, Any]:
    """XLA compilations so far in this process and their backend-compile seconds.

    A rise of ``compilations`` between two calls means XLA compiled something new: a
    recompilation of the step (new shapes, dtypes or static arguments) or an eager op.
    """
    return {"compilations": _COMPILES["count"], "compile_s": _COMPILES["seconds"],
            "source": f"jax.monitoring {_COMPILE_EVENT} events"}


# -- memory ------------------------------------------------------------------------------------

def reset_peak_memory(trainer) -> dict[str, Any]:
    """Start the peak counters afresh, so peaks cover what follows (the timed steps).

    [torch≠jax] PJRT has no reset for ``peak_bytes_in_use``: on a GPU the device peak
    covers the whole process (set-up and compilation included)."""
    out = {"rss": hostinfo.reset_host_rss_peak(), "rss_at_reset_bytes": hostinfo.host_rss(), "device": False}
    return out


def _compiled_memory(trainer) -> dict[str, Any] | None:
    # [torch≠jax] XLA analyses a compiled program's memory before it runs; eager torch has no program
    compiled = trainer.compiled_step  # the AOT executable from Trainer.compile
    if compiled is None:
        return None
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if stats is None:
        return None
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
              "generated_code_size_in_bytes")
    return {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def peak_memory(trainer) -> dict[str, Any]:
    rss = hostinfo.host_rss_peak()
    out: dict[str, Any] = {"host_rss_peak_bytes": rss["bytes"], "host_rss_source": rss["source"],
                           "device_peak_bytes": None, "device_source": None}
    try:
        stats = trainer.device.memory_stats()
    except Exception:
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
        out["device_source"] = "jax Device.memory_stats() peak_bytes_in_use (whole process)"
        out["device_bytes_limit"] = stats.get("bytes_limit")
    compiled = _compiled_memory(trainer)
    if compiled is not None:
        out["compiled_step"] = compiled
        out["compiled_step_source"] = "trainer's AOT executable .memory_analysis()"
    return out


# -- the device's matmul peak ---------------------------------------------------------------

def _probe_key(device, dtype: str, sizes: tuple[int, ...]) -> str:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"jax {jax.__version__} | {_device_type(device)} | {device_name(device)} | threads={threads} | "
            f"{dtype} | precision=highest | XLA_FLAGS={os.environ.get('XLA_FLAGS', '')} | n={'/'.join(map(str, sizes))}")


def matmul_probe(device, dtype: str, n: int) -> Callable[[], None]:
    """One n x n matmul on ``device``, waited for: what ``common.matmul_rate.time_matmul`` times."""
    if isinstance(device, str):
        device = jax.devices(device)[0]
    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}[dtype]
    mm = jax.jit(lambda p, q: jnp.matmul(p, q, precision=jax.lax.Precision.HIGHEST))
    ka, kb = jax.random.split(jax.random.key(n))
    a = jax.device_put(jax.random.normal(ka, (n, n), jdtype), device)
    b = jax.device_put(jax.random.normal(kb, (n, n), jdtype), device)

    def matmul() -> None:
        mm(a, b).block_until_ready()

    return matmul


def matmul_peak(device, dtype: str = "float32", fresh: bool = False) -> dict[str, Any]:
    """The best rate of an n x n float32 matmul on ``device`` (a few sizes, many short repeats),
    in FLOP/s, and how it was found.

    Measured once per machine (and thread count, framework version, XLA_FLAGS) and cached in
    ``$XDG_CACHE_HOME/microgpt/matmul_peak.json``; ``fresh`` probes again, and the cache keeps
    the best probe so far (``common.matmul_rate``: the timing loop and the cache). The matmul runs
    at ``Precision.HIGHEST``: true float32, no TF32 or bf16 passes on a GPU.
    """
    if isinstance(device, str):
        device = jax.devices(device)[0]
    sizes = (1024, 2048) if device.platform == "cpu" else (4096, 8192)
    key = _probe_key(device, dtype, sizes)
    if not fresh and (cached := matmul_rate.cached_peak(key)):
        return cached
    rates = matmul_rate.probe_rates(lambda n: matmul_probe(device, dtype, n), sizes)
    threads = key.split("threads=")[1].split(" ")[0]
    flags = os.environ.get("XLA_FLAGS", "")
    return matmul_rate.record_peak(key, rates, lambda n: (
        f"measured: jnp.matmul {dtype} (precision HIGHEST) on {device_name(device)}, {threads} CPUs allowed, "
        f"median of the 5 fastest repeats, best over n x n sizes {'/'.join(map(str, sizes))} (best at n={n})"),
        engine="XLA" + (f" (XLA_FLAGS {flags})" if flags else ""), device=f"{_device_type(device)}|{device_name(device)}")


ENGINES = {"cpu": ("XLA",), "cuda": ("XLA",)}


def engine_peaks(device, fresh: bool = False) -> list[dict[str, Any]]:
    """The float32 matmul peak of every engine JAX brings for ``device``: XLA's, with this process's
    XLA_FLAGS (cached like ``matmul_peak``)."""
    return [matmul_peak(device, "float32", fresh)]


# -- profile ------------------------------------------------------------------------------------

def profile(trainer, x, y, steps: int, out_dir) -> str:
    """Trace ``steps`` training steps with jax.profiler (outside any timed region).

    Writes a TensorBoard profile (``plugins/profile/<run>/*.xplane.pb``) and a Perfetto
    trace (``*.trace.json.gz``, for ui.perfetto.dev) under ``out_dir``; returns the
    Perfetto trace's path (or the directory if none was written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loss = trainer.step(x, y)  # anything still queued finishes before the trace starts
    trainer.wait(loss)
    with jax.profiler.trace(str(out), create_perfetto_trace=True):
        for i in range(steps):
            with jax.profiler.StepTraceAnnotation("train_step", step_num=i):
                loss = trainer.step(x, y)
                trainer.wait(loss)
    traces = sorted(out.glob("**/*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    return str(traces[-1]) if traces else str(out)


# -- what each traced op is (benchmarks/attribution.py: the same categories for every backend) ------

def op_classifier(trainer) -> Callable[[str, dict, tuple], str | None]:
    """``classify(name, args, ancestors)`` for the events of a ``profile`` trace of this trainer: the
    category of an XLA op of the compiled step (read from its HLO, ``backends/jax/hlo.py``), or None
    for what is not one (Python frames, the runtime, waiting)."""
    from backends.jax import hlo

    compiled = trainer.compiled_step
    if compiled is None:  # the step was jitted, not compiled ahead of time: lower it now
        raise RuntimeError("op_classifier needs trainer.compile(x, y) first")
    cfg, tc = trainer.model_config, trainer.train_config
    table = hlo.categories(compiled.as_text(), tokens=tc.batch_size * cfg.block_size, vocab=cfg.vocab_size,
                           n_embd=cfg.n_embd)

    def classify(name: str, args: dict, ancestors: tuple) -> str | None:
        op = args.get("hlo_op", name)
        if args.get("hlo_module", "jit__train_step") != "jit__train_step":
            return "other"
        return table.get(op, "other" if "hlo_op" in args else None)

    return classify
