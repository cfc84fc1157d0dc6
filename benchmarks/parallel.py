"""``python -m benchmarks.run --devices 1,2 --parallel ddp|fsdp``: every configuration timed on
each device count (1 device is ``--parallel none``), and a scaling table: step time, global
tokens/s, tokens/s per device, scaling efficiency against 1 device, peak memory per device.

A worker on N devices is, for torch, N ranks started by torch's launcher (``torch.distributed.run``;
the spec travels in a file, rank 0 reports), and for JAX one process with N devices (on a CPU,
N host devices set through XLA_FLAGS before JAX starts).
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import stats
from common.errors import UserError

HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count={n}"
SPEC_ENV = "MICROGPT_BENCH_SPEC"  # the worker's spec as a file (torch ranks share no stdin)


def parse_devices(text: str | None, mode: str | None) -> list[int] | None:
    if text is None:
        if mode is not None:
            raise UserError("--parallel needs --devices, e.g. --devices 1,2")
        return None
    try:
        counts = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--devices expects device counts like 1,2, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise UserError(f"--devices expects positive device counts like 1,2, got {text!r}")
    if max(counts) > 1 and mode not in ("ddp", "fsdp"):
        raise UserError("--devices above 1 needs --parallel ddp or --parallel fsdp")
    return counts


def expand(specs: list[dict[str, Any]], counts: list[int] | None, mode: str | None) -> list[dict[str, Any]]:
    """Each planned worker once per device count, labelled ``xN``."""
    if counts is None:
        return specs
    out = []
    for item in specs:
        for n in counts:
            spec = dict(item["spec"])
            spec["overrides"] = spec["overrides"] | {"parallel": mode if n > 1 else "none", "devices": n}
            spec["devices"] = n
            spec["label"] = f"{spec['label']} x{n}"
            if spec.get("profile_dir"):  # each device count traces into a folder of its own
                spec["profile_dir"] = f"{spec['profile_dir']}-x{n}"
            if spec["backend"] == "jax" and n > 1:
                spec["xla_flags"] = " ".join(f for f in (spec.get("xla_flags", ""), HOST_DEVICES_FLAG.format(n=n)) if f)
            out.append(item | {"lane": f"{item['lane']} x{n}", "spec": spec})
    return out


def expand_lanes(lanes: list[dict[str, Any]], counts: list[int] | None) -> list[dict[str, Any]]:
    """The report's lanes, one per lane and device count (as ``expand`` names them). The frameworks
    differ here by design: on many devices torch runs a process per device (torchrun gives each one thread unless
    OMP_NUM_THREADS says otherwise), JAX one process with N devices (XLA_FLAGS asks for them on a
    CPU): each declares those settings, which the settings table then marks as the variant's."""
    if counts is None:
        return lanes
    rows = {"torch": ("compute threads", "$OMP_NUM_THREADS"), "jax": ("$XLA_FLAGS",)}
    return [ln | {"name": f"{ln['name']} x{n}", "about": f"{ln['about']}; {n} device(s)",
                  "declares": ln.get("declares", {}) | (dict.fromkeys(rows[ln["backend"]], f"{ln['backend']} x{n}")
                                                        if n > 1 else {})}
            for ln in lanes for n in counts]


def expand_pairs(pairs: list[tuple[str, str]], counts: list[int] | None) -> list[tuple[str, str]]:
    """The jax/torch pairs of ``pairs``, once per device count (as ``expand_lanes`` names the lanes)."""
    if counts is None:
        return pairs
    return [(f"{j} x{n}", f"{t} x{n}") for j, t in pairs for n in counts]


def worker_command(spec: dict[str, Any]) -> list[str]:
    n = int(spec.get("devices", 1))
    if spec["backend"] == "torch" and n > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                "-m", "benchmarks.worker"]
    return [sys.executable, "-m", "benchmarks.worker"]


def _peak_per_device(memory: dict[str, Any], backend: str, n: int) -> float | None:
    if memory.get("device_peak_bytes"):
        return memory["device_peak_bytes"] / (n if backend == "jax" else 1)  # JAX's stat is the process's
    compiled = memory.get("compiled_step")
    if compiled:  # an SPMD executable's sizes are per device
        return sum(compiled.get(k, 0) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                 "temp_size_in_bytes")) - compiled.get("alias_size_in_bytes", 0)
    rss = memory.get("host_rss_peak_bytes")  # torch on a CPU: one process per device
    return None if rss is None else rss / (n if backend == "jax" else 1)


def scaling_table(runs: list[dict[str, Any]]) -> str:
    """One row per backend and device count: medians over repeats."""
    rows: dict[tuple, list] = {}
    for r in runs:
        if r.get("status") == "ok" and r["spec"].get("devices"):
            rows.setdefault((r["backend"], r["spec"]["devices"]), []).append(r)
    if not rows:
        return ""

    def median(values):
        return stats.summarize(v for v in values if v is not None)["median"]

    lines = ["", "scaling (median of repeats)", f"{'backend':8} {'devices':>7} {'step ms':>9} {'tokens/s':>11} "
             f"{'tok/s/device':>12} {'efficiency':>10} {'peak MiB/device':>15}"]
    base = {}
    for (backend, n), group in sorted(rows.items()):
        step = median(g["metrics"]["step_s"]["median"] for g in group)
        tps = median(g["metrics"]["tokens_per_s"] for g in group)
        mem = median(_peak_per_device(g.get("memory") or {}, backend, n) for g in group)
        if n == 1:
            base[backend] = tps
        eff = (tps / n) / base[backend] if base.get(backend) and tps else None
        lines.append(f"{backend:8} {n:>7} {step * 1e3:>9.2f} {tps:>11,.0f} {tps / n:>12,.0f} "
                     f"{'' if eff is None else f'{eff:.0%}':>10} {'' if mem is None else f'{mem / 2**20:.1f}':>15}")
    return "\n".join(lines) + "\n"
