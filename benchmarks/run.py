"""``python -m benchmarks.run``: time MicroGPT's training step in PyTorch and in JAX, side by side.

Every backend, configuration and repeat runs in a fresh worker process
(``benchmarks.worker``); with several repeats the backends are interleaved
(torch jax torch jax ...) so that drift on a shared machine hits both alike.
The parent never imports a framework.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks import report as report_mod
from benchmarks import devices, launch, machine_peak, parallel, process_table, variants
from benchmarks.options import (BACKEND_CHOICES, DEFAULT_STEPS, DEVICE_CHOICES, DTYPE_CHOICES,  # noqa: F401 (re-exported)
                                FALLBACK_STEPS, PROG, build_parser, checked_overrides, parse_sweep,
                                resolve_data)
from benchmarks.schema import SCHEMA_VERSION
from common import config as config_mod
from common.errors import UserError, option_names, reject_unknown_flags, run_command

def plan(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Check every argument and build the settings and the worker specs, before any worker starts."""
    steps, warmup = DEFAULT_STEPS.get(args.preset, FALLBACK_STEPS)
    steps = steps if args.steps is None else args.steps
    warmup = warmup if args.warmup is None else args.warmup
    overrides = checked_overrides(args, extra, {"steps": steps, "warmup": warmup, "repeats": args.repeats,
                                                "batch-size": args.batch_size, "profile-steps": args.profile_steps},
                                  ("device", "dtype", "compile", "compile_mode", "tf32", "batch_size"))
    sweep = parse_sweep(args.sweep)
    if sweep and sweep[0] in ("device", "dtype", "compile", "compile_mode", "tf32"):
        raise UserError(f"--sweep {sweep[0]} is not supported; sweep a model or batch setting, e.g. batch_size")
    if sweep and args.batch_size is not None and sweep[0] == "batch_size":
        raise UserError("--sweep batch_size and --batch-size both set the batch size; drop one")
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    # The learning rate is at its peak from the first step (the schedule's warmup would keep it
    # near zero for every step timed here): step cost is the same, and the sanity gate can see
    # the loss fall.
    overrides.setdefault("warmup_iters", 0)
    config_mod.build_configs(args.preset, overrides)  # a bad config fails here, before the corpus
    backends = ["torch", "jax"] if args.backend == "all" else [args.backend]
    lanes = variants.lanes(backends, bool(args.compile), args.compile_mode, args.xla_variant, args.malloc)
    launch.check_outputs(args, sweep[0] if sweep else None, lanes)  # before any worker: never a late traceback
    data = resolve_data(args.data, args.quiet)
    values = sweep[1] if sweep else [None]
    groups = []
    for value in values:
        ov = dict(overrides)
        if sweep:
            ov[sweep[0]] = value
        model, train = config_mod.build_configs(args.preset, ov, data["vocab_size"])
        if data["kind"] == "corpus" and model.block_size + 1 > data["smallest_split"]:
            raise UserError(f"the corpus's smallest split has {data['smallest_split']} tokens, fewer than "
                            f"block_size + 1 = {model.block_size + 1}; use a longer text or a smaller --block_size")
        groups.append({"sweep": {sweep[0]: value} if sweep else None, "overrides": ov,
                       "batch_size": train.batch_size, "block_size": model.block_size})
    # the last check: each backend's device, in a short process per backend (none for --device cpu)
    backend_devices = devices.resolve(backends, args.device)
    progress = not args.quiet and sys.stdout.isatty()
    specs = []
    for g, group in enumerate(groups):
        for r in range(args.repeats):
            for lane in lanes:
                tag = "" if not group["sweep"] else " " + ",".join(f"{k}={v}" for k, v in group["sweep"].items())
                spec = {
                    "backend": lane.backend, "lane": lane.name, "preset": args.preset,
                    "overrides": group["overrides"] | lane.overrides, "xla_flags": lane.xla_flags,
                    "malloc": lane.malloc, "data": data,
                    "steps": steps, "warmup": warmup, "seed": args.seed, "progress": progress,
                    "fresh_peak": bool(args.fresh_peak) and r == 0 and g == 0,
                    "label": f"{lane.name}{tag} {r + 1}/{args.repeats}",
                    "profile_dir": None, "profile_steps": args.profile_steps,
                }
                if args.profile and r == 0:
                    sub = lane.name.replace(" ", "-") + ("" if not group["sweep"] else "-" + "-".join(
                        f"{k}={v}" for k, v in group["sweep"].items()))
                    spec["profile_dir"] = str(Path(args.profile).resolve() / sub)
                specs.append({"group": g, "repeat": r, "backend": lane.backend, "lane": lane.name,
                              "sweep": group["sweep"], "spec": spec})
    counts = parallel.parse_devices(args.devices, args.parallel)
    specs = parallel.expand(specs, counts, args.parallel)
    about = [{"name": ln.name, "backend": ln.backend, "variant": ln.variant, "malloc": ln.malloc,
              "declares": ln.declares, "about": variants.describe(ln)} for ln in lanes]
    settings = {
        "backends": backends, "lanes": parallel.expand_lanes(about, counts),
        "preset": args.preset, "device": args.device, "dtype": args.dtype,
        "compile": any(ln.overrides.get("compile") for ln in lanes), "tf32": bool(args.tf32), "steps": steps,
        "warmup": warmup,
        "repeats": args.repeats, "batch_size": args.batch_size,
        "sweep": {"key": sweep[0], "values": sweep[1]} if sweep else None,
        "data": {k: data[k] for k in ("kind", "path", "vocab_size", "note")},
        "overrides": overrides, "seed": args.seed, "profile": args.profile,
        "order": [f"{s['lane']}:{s['repeat']}:{s['group']}" for s in specs],
        "devices": args.devices, "parallel": args.parallel,
        "pairs": parallel.expand_pairs(variants.pairs(lanes), counts),  # (jax lane, torch lane) per jax/torch ratio
        "backend_devices": backend_devices,  # benchmarks/devices.py; None when not asked (one backend, cpu)
    }
    return {"settings": settings, "groups": groups, "specs": specs, "progress": progress}


def describe(entry: dict[str, Any]) -> str:
    r = entry
    if r["status"] == "ok":
        m = r["metrics"]
        mfu = m["mfu_measured"]
        return (f"{m['step_s']['median'] * 1e3:.2f} ms/step median, {m['tokens_per_s']:,.0f} tokens/s"
                + (f", MFU {100 * mfu:.1f}% of this process's matmul probe" if mfu is not None else "")
                + f", compile {r['cold'].get('compile_s') or 0:.2f} s, first step {r['cold']['first_step_s']:.3f} s")
    return f"{r['status']}: {r.get('error')}"


def devices_line(runs: list[dict[str, Any]]) -> str:
    """Where each lane ran, as its worker reported it: ``devices: torch on cuda (NVIDIA H100 ...), ...``."""
    seen: dict[str, str] = {}
    for r in runs:
        device = (r.get("environment") or {}).get("device") or {}
        if device:
            seen.setdefault(r["lane"], f"{device.get('type')} ({device.get('name')})")
    return "devices: " + ", ".join(f"{lane} on {where}" for lane, where in seen.items()) + "\n" if seen else ""


def build_report(argv: list[str], planned: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    settings = planned["settings"]
    peaks_by_device = {}
    for r in runs:  # the machine's best matmul over every installed engine, per device timed on
        key = report_mod.device_key(r)
        if r["status"] == "ok" and key not in peaks_by_device:
            machine_peak.probe_missing(key, settings["backends"], settings["device"])
            peaks_by_device[key] = machine_peak.headline(key) or r.get("matmul_peak")
    for r in runs:
        if r["status"] == "ok":
            r["metrics"] = report_mod.run_metrics(r, peaks_by_device.get(report_mod.device_key(r)))
    summary = []
    for g, group in enumerate(planned["groups"]):
        aggs = {}
        for lane in settings["lanes"]:
            these = [r for r in runs if r["group"] == g and r["lane"] == lane["name"]]
            if these:
                aggs[lane["name"]] = report_mod.aggregate(these)
        pairs = {f"{j}/{t}": report_mod.ratios(aggs, j, t) for j, t in settings["pairs"] if j in aggs and t in aggs}
        summary.append({"sweep": group["sweep"], "batch_size": group["batch_size"], "block_size": group["block_size"],
                        "backends": aggs, "ratios": report_mod.ratios(aggs), "pair_ratios": pairs})
    backend_envs = {}
    for r in runs:
        if r.get("environment") and r["lane"] not in backend_envs:
            backend_envs[r["lane"]] = r["environment"]
    return launch.finite({
        "schema_version": SCHEMA_VERSION,
        **launch.report_head(argv, settings, backends=backend_envs),
        "process_settings": process_table.compare(runs, settings["lanes"]),
        "runs": [{k: v for k, v in r.items() if k != "group"} for r in runs],
        "summary": summary,
    })


def run(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    reject_unknown_flags(extra, option_names(parser), config_mod.model_keys() + config_mod.train_keys())
    if args.task == "sample":
        from benchmarks import sampling

        return sampling.run_task(args, extra, argv)
    for flag in ("sample_tokens", "num_samples"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} is for --task sample; drop it or add --task sample")
    planned = plan(args, extra)
    specs = planned["specs"]
    runs: list[dict[str, Any]] = []
    for i, item in enumerate(specs):
        result = launch.run_worker(item["spec"], planned["progress"])
        if result.get("status") == "user_error":
            # e.g. --device gpu without one: the first worker says so; nothing else is started
            raise UserError(result["error"])
        entry = {"backend": item["backend"], "lane": item["lane"], "repeat": item["repeat"], "sweep": item["sweep"],
                 "group": item["group"],
                 **{k: v for k, v in result.items() if k != "backend"}, "spec": item["spec"]}
        entry.setdefault("error", None)
        if entry["status"] == "ok":  # provisional: build_report uses the best probe of all runs
            entry["metrics"] = report_mod.run_metrics(entry)
        runs.append(entry)
        if not args.quiet:
            print(f"[{i + 1}/{len(specs)}] {item['spec']['label']}: {describe(entry)}", file=sys.stderr, flush=True)
    report = build_report(argv, planned, runs)
    sys.stdout.write(devices_line(runs) + report_mod.format_report(report) + parallel.scaling_table(runs))
    launch.write_outputs(args, report, report_mod.to_csv)
    if args.plot:
        from benchmarks import plots

        plots.write_plots(report, args.plot)
    return 0 if all(r["status"] == "ok" for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
