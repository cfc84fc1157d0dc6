"""The peaks MFU is measured against. Framework-free.

1. Vendor peak FLOP/s of known GPUs (dense, no structured sparsity), per precision in use.
Sources: NVIDIA A100 Tensor Core GPU datasheet (2021); NVIDIA H100 Tensor Core GPU
datasheet (2023); NVIDIA H200 Tensor Core GPU datasheet (2024). The datasheets quote
TF32/BF16 "with sparsity"; the dense figures below are half of those.
Any other device (every CPU included) gets None: "n/a" rather than a wrong number.

2. The measured matmul peak: the timing loop for each backend's probe, the per-machine cache
of the device's best, and the peak during a run (probes just before and after its steps).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

T = 1e12

# name -> (match(device name) , {precision: FLOP/s}); precision is fp32, tf32 or bf16
_GPUS: list[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, float]]] = [
    # label, substrings that must all appear, substrings that must not, peaks
    ("H200 NVL", ("H200", "NVL"), (), {"fp32": 60 * T, "tf32": 417.5 * T, "bf16": 835.5 * T}),
    ("H200 SXM", ("H200",), ("NVL",), {"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T}),
    ("H100 NVL", ("H100", "NVL"), (), {"fp32": 60 * T, "tf32": 417.5 * T, "bf16": 835.5 * T}),
    ("H100 PCIe", ("H100", "PCIE"), (), {"fp32": 51 * T, "tf32": 378 * T, "bf16": 756 * T}),
    ("H100 SXM", ("H100",), ("NVL", "PCIE"), {"fp32": 67 * T, "tf32": 494.7 * T, "bf16": 989.4 * T}),
    ("A100", ("A100",), (), {"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T}),
]
_SOURCES = {"A100": "NVIDIA A100 datasheet", "H100": "NVIDIA H100 datasheet", "H200": "NVIDIA H200 datasheet"}


def precision_in_use(dtype: str, tf32: bool) -> str | None:
    if dtype == "bfloat16":
        return "bf16"
    if dtype == "float32":
        return "tf32" if tf32 else "fp32"
    return None  # float64 and the rest: no tensor-core figure


def vendor_peak(device_type: str, device_name: str, dtype: str, tf32: bool) -> dict:
    """``{"flops_per_s": float | None, "source": str}`` for the device and the precision in use."""
    if device_type != "cuda" and device_type != "gpu":
        return {"flops_per_s": None, "source": f"n/a: no vendor peak for {device_type} devices"}
    upper = device_name.upper()
    precision = precision_in_use(dtype, tf32)
    for label, must, must_not, peaks in _GPUS:
        if all(s in upper for s in must) and not any(s in upper for s in must_not):
            if precision is None:
                return {"flops_per_s": None, "source": f"n/a: no {dtype} figure for {label}"}
            return {"flops_per_s": peaks[precision],
                    "source": f"{_SOURCES[label[:4]]}: {label} dense {precision.upper()} "
                              f"{peaks[precision] / T:g} TFLOP/s"}
    return {"flops_per_s": None, "source": f"n/a: {device_name!r} is not a GPU with a known vendor peak"}


# -- the measured matmul peak: the timing loop and the per-machine cache, framework-free ---------
# Each backend's ``bench.matmul_peak`` builds its own n x n matrices on its device and hands
# this module a ``matmul()`` callable that multiplies them and waits for the result.

PEAK_CACHE = "matmul_peak.json"


def peak_cache_path() -> Path:
    from common.corpus import cache_dir

    return cache_dir() / PEAK_CACHE


def cached_peak(key: str) -> dict[str, Any] | None:
    cache = _read_cache(peak_cache_path())
    return dict(cache[key], cached=True, cache_path=str(peak_cache_path())) if key in cache else None


def time_matmul(matmul: Callable[[], None], n: int, budget_s: float = 1.0) -> dict[str, float]:
    """Rates of ``matmul()`` (an n x n product, waited for): many short repeats within
    ``budget_s``, so that on a shared machine some land in a quiet moment. ``best`` is the
    rate of the median of the five fastest (a quiet moment, not a timer glitch)."""
    for _ in range(2):  # compile, warm up the BLAS handles and the clock
        matmul()
    times: list[float] = []
    budget_end = time.perf_counter() + budget_s
    while len(times) < 5 or (len(times) < 200 and time.perf_counter() < budget_end):
        t0 = time.perf_counter()
        matmul()
        times.append(time.perf_counter() - t0)
    fast = sorted(times)[:5]
    return {"best": 2 * n**3 / fast[len(fast) // 2], "median": 2 * n**3 / sorted(times)[len(times) // 2],
            "repeats": len(times)}


def probe_rates(make_probe: Callable[[int], Callable[[], None]], sizes: Iterable[int],
                budget_s: float = 1.0) -> dict[int, dict[str, float]]:
    """``time_matmul`` of an n x n probe for each size, ``budget_s`` seconds each. Each probe
    (``make_probe(n)``: its matrices on the device) is built just before it is timed and
    dropped after, so no probe memory outlives its measurement."""
    return {n: time_matmul(make_probe(n), n, budget_s) for n in sizes}


def during_run(before: dict[int, dict[str, float]], after: dict[int, dict[str, float]]) -> dict[str, Any]:
    """The matmul peak available while the steps ran: the device-peak probe's sizes, timed again
    just before and just after the timed steps, in the same process. On a shared machine the
    rate the hardware gives drifts by tens of percent over seconds (other tenants on the same
    cores); a step and a probe taken together see the same conditions, so their ratio is the
    stable figure. The best (size, side) wins, as for the device peak."""
    flops, n, side = max((rates["best"], n, side) for side, probe in (("before", before), ("after", after))
                         for n, rates in probe.items())
    return {"flops_per_s": flops, "n": n, "side": side,
            "before": {str(k): v for k, v in before.items()}, "after": {str(k): v for k, v in after.items()},
            "source": f"n x n matmul probes ({'/'.join(map(str, before))}) just before and after the timed steps; "
                      f"the best median of 5 fastest repeats (n={n}, {side})"}


def record_peak(key: str, rates: dict[int, dict[str, float]], describe: Callable[[int], str]) -> dict[str, Any]:
    """The probe's result (best over sizes), merged into the per-machine cache.

    A peak is a peak: a busy machine only ever lowers a measurement, so the cache keeps the
    best probe so far (a quiet moment's figure is not overwritten by a contended one).
    """
    from common.corpus import atomic_write_bytes

    n = max(rates, key=lambda k: rates[k]["best"])
    result: dict[str, Any] = {
        "flops_per_s": rates[n]["best"], "source": describe(n), "n": n,
        "sizes": {str(k): v for k, v in rates.items()}, "median_flops_per_s": rates[n]["median"],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "key": key,
    }
    path = peak_cache_path()
    cache = _read_cache(path)  # another worker may have written meanwhile
    previous = cache.get(key)
    result["probes"] = 1 + int(previous.get("probes", 1) if previous else 0)
    result["this_probe_flops_per_s"] = result["flops_per_s"]
    if previous and previous.get("flops_per_s", 0) > result["flops_per_s"]:
        result.update({k: previous[k] for k in ("flops_per_s", "source", "measured_at", "median_flops_per_s")
                       if k in previous})
    result["source"] = result["source"].split(" [")[0] + f" [best of {result['probes']} probe(s) on this machine]"
    cache[key] = result
    try:
        atomic_write_bytes(path, json.dumps(cache, indent=1).encode())
    except OSError:
        pass  # a read-only cache is no reason to fail a benchmark
    return dict(result, cached=False, cache_path=str(path))


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
