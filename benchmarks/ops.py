"""``python -m benchmarks.ops``: the main op of each step category, timed alone in both frameworks.

The step profile (``python -m benchmarks.run --profile DIR``) says which category one framework
loses time in; this pins the gap to one op. Each op is built at the preset's shapes the way the
model runs it (``backends/<name>/ops.py``): the MLP's matmuls forward, for the weight gradient and
for the input gradient, attention forward and backward (with the preset's dropout), GELU, the
dropout mask, LayerNorm and the loss forward and backward, one AdamW update of every parameter,
and the head transpose. Each backend runs in its own fresh process per repeat, interleaved, and
the table gives the median time of each op, the jax/torch ratio and the matmuls' GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from common import config as config_mod
from common import outputs
from common.errors import OneLineParser, UserError, run_command

PROG = "python -m benchmarks.ops"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1]
                      + " Extra --key=value arguments override the preset's config.")
    p.add_argument("--backend", default="all", help="torch, jax, or all (default)")
    p.add_argument("--preset", default="baby", help=f"shapes: {', '.join(config_mod.PRESETS)} (default baby)")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per backend (default 2)")
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per op and process (default 1.0)")
    p.add_argument("--device", default="auto", help="auto, cpu or gpu")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every time as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return p


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child process: build the ops of one backend and time each (median of many repeats)."""
    import importlib

    from backends import load_backend, process

    mc, tc = config_mod.build_configs(spec["preset"], spec["overrides"])
    module = load_backend(spec["backend"])
    with process.settings(module, tc):
        ops = importlib.import_module(f"backends.{spec['backend']}.ops").micro_ops(mc, tc)
        settings = process.speed_settings(module, module.select_device(tc.device), "float32")
        out = {}
        for name, (run, flops, shape) in ops.items():
            run(), run()  # compile, warm the caches and the thread pool
            times: list[float] = []
            end = time.perf_counter() + spec["seconds"]
            while len(times) < 3 or (len(times) < 100 and time.perf_counter() < end):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            out[name] = {"times_s": times, "flops": flops, "shape": shape}
    return {"ops": out, "process": settings}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def format_table(results: dict[str, dict[str, dict]], backends: list[str]) -> str:
    names = list(dict.fromkeys(n for b in backends for n in results.get(b, {})))
    header = ["op", "shape"] + [f"{b} ms" for b in backends]
    both = "torch" in backends and "jax" in backends
    header += (["jax/torch"] if both else []) + [f"{b} GFLOP/s" for b in backends]
    rows = [header]
    for name in names:
        entry = {b: results[b].get(name) for b in backends}
        shape = next(e["shape"] for e in entry.values() if e)
        med = {b: _median(e["times_s"]) if e else None for b, e in entry.items()}
        row = [name, shape] + [f"{med[b] * 1e3:.3f}" if med[b] else "n/a" for b in backends]
        if both:
            row.append(f"{med['jax'] / med['torch']:.2f}" if med["jax"] and med["torch"] else "n/a")
        row += [f"{entry[b]['flops'] / med[b] / 1e9:.1f}" if entry[b] and entry[b]["flops"] else "" for b in backends]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    args, extra = build_parser().parse_known_args(argv)
    backends = ["torch", "jax"] if args.backend == "all" else [args.backend]
    if any(b not in ("torch", "jax") for b in backends):
        raise UserError(f"unknown backend {args.backend!r}; choose one of: torch, jax, all")
    if args.repeats < 1 or not args.seconds > 0:
        raise UserError("--repeats must be >= 1 and --seconds > 0")
    overrides = config_mod.parse_overrides(extra) | {"device": args.device}
    mc, _ = config_mod.build_configs(args.preset, overrides)  # a bad config fails here, in one line
    if args.json:  # before any work: a bad location costs one line, never the minutes of timing
        outputs.check_file(args.json, "--json", args.overwrite)
    from backends import host_memory
    from benchmarks import devices, process_table
    from benchmarks.launch import worker_env

    host_memory.check_available(host_memory.selected())  # MICROGPT_MALLOC: one line if it cannot be had
    devices.resolve(backends, args.device)  # one device type for both, or one line, before any timing

    results: dict[str, dict[str, dict]] = {b: {} for b in backends}
    runs: list[dict[str, Any]] = []  # each child's process settings, compared across backends
    for r in range(args.repeats):
        for backend in backends:  # interleaved: drift on a shared machine hits both alike
            spec = {"backend": backend, "preset": args.preset, "overrides": overrides, "seconds": args.seconds}
            proc = subprocess.run([sys.executable, "-m", "benchmarks.ops", "--child"], input=json.dumps(spec),
                                  capture_output=True, text=True,
                                  env=host_memory.child_env(host_memory.selected(), worker_env()))
            try:
                found = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, ValueError):
                raise UserError(f"the {backend} process failed: "
                                f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}") from None
            runs.append({"lane": backend, "process": found["process"]})
            for name, entry in found["ops"].items():
                slot = results[backend].setdefault(name, {"flops": entry["flops"], "shape": entry["shape"],
                                                          "times_s": []})
                slot["times_s"] += entry["times_s"]
    print(f"{args.preset}: single ops, median of all repeats ({args.repeats} processes per backend), "
          f"{os.cpu_count()} CPUs")
    print(format_table(results, backends))
    settings = process_table.compare(runs, [{"name": b} for b in backends])
    print("\n" + process_table.format_table(settings))
    if args.json:
        outputs.atomic_write_text(args.json, json.dumps({"preset": args.preset, "overrides": overrides,
                                                         "process_settings": settings, "results": results}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--child"]:
        from backends import process

        process.start()  # the allocator, as every program (MICROGPT_MALLOC)
        print(json.dumps(measure(json.loads(sys.stdin.read()))))
        return 0
    return run_command(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
