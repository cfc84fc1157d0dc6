"""``python -m benchmarks.run --task sample``: how fast each backend generates text.

The same model (a preset's shape, nanoGPT's init from one seed, so both backends hold the
same weights) continues the same one-character prompt by ``--sample-tokens`` tokens, with
``microgpt sample``'s defaults (temperature 0.8, top-k 200), in a fresh worker process per
backend and repeat, like the training benchmark. Per run: the first call (JAX compiles its
sampling loop then; torch has nothing to compile), then ``TIMED_CALLS`` calls timed one by
one; the figure is generated tokens per second (rows x new tokens / seconds) of the fastest
call, the one least disturbed by other processes on a shared machine (the median is reported
beside it).
The parent (``benchmarks.run``) plans the runs and prints the table; ``run`` below is the
worker's side.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import stats

TASK = "sample"
DEFAULT_TOKENS = 1000
TIMED_CALLS = 5
TEMPERATURE = 0.8  # microgpt sample's defaults
TOP_K = 200
SCHEMA_VERSION = 2  # 2: each run's process settings, compared across backends

_NUM = {"type": ["number", "null"]}
RUN_SCHEMA = {
    "type": "object",
    "required": ["backend", "repeat", "status"],
    "properties": {"backend": {"type": "string", "enum": ["torch", "jax"]}, "repeat": {"type": "integer"},
                   "status": {"type": "string"}, "tokens_per_s": _NUM, "first_call_s": _NUM,
                   "calls_s": {"type": "array", "items": {"type": "number"}}},
}
SCHEMA = {
    "type": "object",
    "required": ["schema_version", "task", "created", "command_line", "settings", "environment", "process_settings",
                 "runs", "summary"],
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "task": {"type": "string", "enum": [TASK]},
        "runs": {"type": "array", "items": RUN_SCHEMA},
        "summary": {"type": "object"},
    },
}


# -- the worker's side ----------------------------------------------------------------------------

def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker: build the model, call ``generate`` once cold, then TIMED_CALLS times."""
    from backends import load_backend, process
    from benchmarks import sysinfo
    from benchmarks.worker import load_tokens
    from common import config as config_mod
    from common.params import init_weights

    backend = spec["backend"]
    splits, vocab = load_tokens(spec["data"])
    model_config, train_config = config_mod.build_configs(spec["preset"], spec.get("overrides") or {}, vocab)
    train = load_backend(backend)
    with process.settings(train, train_config):
        trainer = train.Trainer(model_config, train_config, init_weights(model_config, int(spec.get("seed", 1337))))
        rows, tokens = int(spec["num_samples"]), int(spec["tokens"])
        prompt = np.tile(np.asarray(splits["val"][:1], dtype=np.int32)[None, :], (rows, 1))

        def call(seed: int) -> float:
            t0 = time.perf_counter()
            out = trainer.generate(prompt, tokens, temperature=TEMPERATURE, top_k=TOP_K, seed=seed)
            elapsed = time.perf_counter() - t0  # generate returns numpy: every token is on the host
            assert out.shape == (rows, 1 + tokens)
            return elapsed

        first = call(0)
        calls = [call(1 + i) for i in range(TIMED_CALLS)]
    best, median = float(min(calls)), float(np.median(calls))
    return {"backend": backend, "status": "ok", "task": TASK, "first_call_s": first, "calls_s": calls,
            "best_s": best, "median_s": median, "tokens_per_s": rows * tokens / best,
            "tokens_per_s_median": rows * tokens / median, "ms_per_token": 1e3 * best / tokens,
            "environment": {"device": str(getattr(trainer, "device", "?"))}, "loadavg": sysinfo.loadavg(),
            "process": process.speed_settings(train, trainer.device, trainer.dtype)}


# -- the parent's side ----------------------------------------------------------------------------

def plan_specs(backends: list[str], repeats: int, preset: str, overrides: dict[str, Any], data: dict[str, Any],
               tokens: int, num_samples: int, seed: int) -> list[dict[str, Any]]:
    specs = []
    for r in range(repeats):
        for backend in backends:  # interleaved, as the training benchmark
            specs.append({"task": TASK, "backend": backend, "repeat": r, "preset": preset, "overrides": overrides,
                          "data": data, "tokens": tokens, "num_samples": num_samples, "seed": seed,
                          "label": f"{backend} sample {r + 1}/{repeats}"})
    return specs


def summarize(runs: list[dict[str, Any]], backends: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"backends": {}, "ratios": {}}
    for b in backends:
        ok = [r for r in runs if r["backend"] == b and r["status"] == "ok"]
        med = (lambda key: float(np.median([r[key] for r in ok])) if ok else None)
        out["backends"][b] = {"runs": len([r for r in runs if r["backend"] == b]), "valid_runs": len(ok),
                              "tokens_per_s": med("tokens_per_s"), "tokens_per_s_median": med("tokens_per_s_median"),
                              "ms_per_token": med("ms_per_token"), "first_call_s": med("first_call_s")}
    if {"torch", "jax"} <= set(out["backends"]):
        t, j = out["backends"]["torch"], out["backends"]["jax"]
        for key in ("tokens_per_s", "tokens_per_s_median", "ms_per_token", "first_call_s"):
            out["ratios"][key] = stats.ratio(j[key], t[key])
    return out


def format_report(report: dict[str, Any]) -> str:
    s, summary = report["settings"], report["summary"]
    backends = list(summary["backends"])
    cols = backends + (["jax/torch"] if summary["ratios"] else [])
    lines = [f"sampling {s['preset']} (block {s['block_size']}): {s['num_samples']} row(s) x {s['tokens']} new tokens, "
             f"temperature {TEMPERATURE}, top-k {TOP_K}; fastest of {TIMED_CALLS} calls per run, median over "
             f"{s['repeats']} run(s)",
             f"{'':<26}" + "".join(f"{c:>14}" for c in cols)]
    for key, label, fmt in (("tokens_per_s", "tokens/s (fastest call)", "{:,.0f}"),
                            ("tokens_per_s_median", "tokens/s (median call)", "{:,.0f}"),
                            ("ms_per_token", "ms per token (fastest)", "{:.3f}"),
                            ("first_call_s", "first call s (compile)", "{:.2f}")):
        cells = [summary["backends"][b][key] for b in backends]
        if summary["ratios"]:
            cells.append(summary["ratios"].get(key))
        lines.append(f"{label:<26}" + "".join(
            f"{'n/a' if v is None else (fmt.format(v) if i < len(backends) else f'{v:.2f}'):>14}"
            for i, v in enumerate(cells)))
    for r in report["runs"]:
        if r["status"] != "ok":
            lines.append(f"{r['backend']} repeat {r['repeat']}: {r['status']}: {r.get('error')}")
    from benchmarks import process_table

    lines += ["", process_table.format_table(report["process_settings"])]
    lines.append(f"command: {report['command_line']}")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["backend", "runs", "valid_runs", "tokens_per_s", "tokens_per_s_median", "ms_per_token", "first_call_s"]


def to_csv(report: dict[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for b, agg in report["summary"]["backends"].items():
        writer.writerow({"backend": b, **{k: agg.get(k) for k in CSV_COLUMNS[1:]}})
    if report["summary"]["ratios"]:
        writer.writerow({"backend": "jax/torch", **report["summary"]["ratios"]})
    return buf.getvalue()


def run_task(args, extra: list[str], argv: list[str]) -> int:
    """``--task sample`` in the parent: check everything, run the workers, print and write the report."""
    import sys

    from benchmarks import devices, launch, process_table
    from benchmarks.options import checked_overrides, resolve_data
    from common import config as config_mod
    from common.errors import UserError

    for flag, given in (("--sweep", args.sweep), ("--compile", args.compile), ("--compile-mode", args.compile_mode),
                        ("--xla-variant", args.xla_variant), ("--steps", args.steps), ("--warmup", args.warmup),
                        ("--batch-size", args.batch_size), ("--plot", args.plot), ("--profile", args.profile),
                        ("--malloc", args.malloc)):
        if given:
            raise UserError(f"{flag} is for the training benchmark (--task train); drop it with --task sample")
    tokens = DEFAULT_TOKENS if args.sample_tokens is None else args.sample_tokens
    rows = 1 if args.num_samples is None else args.num_samples
    overrides = checked_overrides(args, extra, {"sample-tokens": tokens, "num-samples": rows, "repeats": args.repeats},
                                  ("device", "dtype", "tf32"))
    model, _ = config_mod.build_configs(args.preset, overrides)
    launch.check_outputs(args)
    data = resolve_data(args.data, args.quiet)
    backends = ["torch", "jax"] if args.backend == "all" else [args.backend]
    backend_devices = devices.resolve(backends, args.device)  # one device type for both, or one line
    specs = plan_specs(backends, args.repeats, args.preset, overrides, data, tokens, rows, args.seed)
    runs = []
    for i, spec in enumerate(specs):
        result = launch.run_worker(spec, progress=False)
        if result.get("status") == "user_error":
            raise UserError(result["error"])
        entry = {**result, "backend": spec["backend"], "lane": spec["backend"], "repeat": spec["repeat"]}
        entry.setdefault("error", None)
        runs.append(entry)
        if not args.quiet:
            what = (f"{entry['tokens_per_s']:,.0f} tokens/s, first call {entry['first_call_s']:.2f} s"
                    if entry["status"] == "ok" else f"{entry['status']}: {entry.get('error')}")
            print(f"[{i + 1}/{len(specs)}] {spec['label']}: {what}", file=sys.stderr, flush=True)
    settings = {"task": TASK, "backends": backends, "preset": args.preset, "block_size": model.block_size,
                "device": args.device, "dtype": args.dtype, "tokens": tokens, "num_samples": rows,
                "repeats": args.repeats, "timed_calls": TIMED_CALLS, "temperature": TEMPERATURE, "top_k": TOP_K,
                "overrides": overrides, "seed": args.seed, "backend_devices": backend_devices,
                "data": {k: data[k] for k in ("kind", "path", "vocab_size", "note")}}
    report = launch.finite({
        "schema_version": SCHEMA_VERSION, "task": TASK,
        **launch.report_head(argv, settings),
        "process_settings": process_table.compare(runs, [{"name": b} for b in backends]),
        "runs": [{k: v for k, v in r.items() if k != "traceback"} for r in runs],
        "summary": summarize(runs, backends),
    })
    sys.stdout.write(format_report(report))
    launch.write_outputs(args, report, to_csv)
    return 0 if all(r["status"] == "ok" for r in runs) else 1
