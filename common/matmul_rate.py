"""The measured matmul peak: the timing loop of a matmul probe, and the per-machine cache of the
best rate seen. Framework-free.

Each backend's ``bench.matmul_peak`` (``backends/<name>/bench.py``) builds its own n x n
matrices on its device and hands this module a ``matmul()`` callable that multiplies them
and waits for the result; the benchmark harness reports MFU against the rates found here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from common.corpus import cache_dir
from common.writes import WriteError, atomic_write_bytes

PEAK_CACHE = "matmul_peak.json"


def peak_cache_path() -> Path:
    return cache_dir() / PEAK_CACHE


def cached_peak(key: str) -> dict[str, Any] | None:
    entry = _read_cache(peak_cache_path()).get(key)
    if not isinstance(entry, dict) or "engine" not in entry:  # none, or from before engines were recorded
        return None
    return dict(entry, cached=True, cache_path=str(peak_cache_path()))


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


def cpus() -> int:
    """The CPUs this process may run on: the thread count every engine's probe is keyed by."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def record_peak(key: str, rates: dict[int, dict[str, float]], describe: Callable[[int], str], *,
                engine: str, device: str) -> dict[str, Any]:
    """The probe's result (best over sizes), merged into the per-machine cache, with the engine
    that ran it (``torch.matmul``, ``torch oneDNN``, ``XLA``...) and the device (``type|name``).

    A peak is a peak: a busy machine only ever lowers a measurement, so the cache keeps the
    best probe so far (a quiet moment's figure is not overwritten by a contended one).
    """
    n = max(rates, key=lambda k: rates[k]["best"])
    result: dict[str, Any] = {
        "flops_per_s": rates[n]["best"], "source": describe(n), "n": n,
        "sizes": {str(k): v for k, v in rates.items()}, "median_flops_per_s": rates[n]["median"],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "key": key,
        "engine": engine, "device": device, "cpus": cpus(),
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
    except WriteError:
        pass  # a read-only (or full) cache is no reason to fail a benchmark
    return dict(result, cached=False, cache_path=str(path))


def machine_best(device: str, engines_wanted: Iterable[str] = ()) -> tuple[dict[str, Any] | None, list[str]]:
    """The best float32 matmul peak cached for ``device`` (``type|name``, with this process's CPU
    count) over every engine probed on it, and those of ``engines_wanted`` (engine names, or their
    prefixes) not cached yet."""
    best, seen = None, set()
    for entry in _read_cache(peak_cache_path()).values():
        if not isinstance(entry, dict) or entry.get("device") != device or entry.get("cpus") != cpus():
            continue
        if "float32" not in str(entry.get("key", "")):
            continue
        seen.add(str(entry.get("engine")))
        if best is None or entry.get("flops_per_s", 0) > best["flops_per_s"]:
            best = dict(entry, cache_path=str(peak_cache_path()))
    return best, [e for e in engines_wanted if not any(s.startswith(e) for s in seen)]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
