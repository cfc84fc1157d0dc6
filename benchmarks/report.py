"""From raw worker results to figures: per-run metrics, aggregates over repeats, the
jax/torch ratios, the table on stdout and the CSV."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable

from benchmarks import peaks
from benchmarks.stats import ratio, summarize
from common.config import ModelConfig
from common.flops import flops_per_iter

# (key in an aggregate, label, unit scale, format); every figure also gets a jax/torch ratio
FIGURES: list[tuple[str, str, float, str]] = [
    ("valid_runs", "valid runs", 1, "{:.0f}"),
    ("step_s.median", "step time median (ms)", 1e3, "{:.2f}"),
    ("step_s.p10", "step time p10 (ms)", 1e3, "{:.2f}"),
    ("step_s.p90", "step time p90 (ms)", 1e3, "{:.2f}"),
    ("step_s.min", "step time min (ms)", 1e3, "{:.2f}"),
    ("step_s.max", "step time max (ms)", 1e3, "{:.2f}"),
    ("step_s.n", "timed steps n", 1, "{:.0f}"),
    ("amortised_step_s", "amortised step (ms, 1 sync)", 1e3, "{:.2f}"),
    ("tokens_per_s", "tokens/s (median step)", 1, "{:,.0f}"),
    ("tokens_per_s_amortised", "tokens/s (amortised)", 1, "{:,.0f}"),
    ("flops_per_s", "achieved GFLOP/s", 1e-9, "{:.1f}"),
    ("measured_peak_flops_per_s", "machine's best f32 matmul GFLOP/s", 1e-9, "{:.1f}"),
    ("mfu_measured", "MFU vs machine's best matmul", 100, "{:.1f}%"),
    ("own_probe_flops_per_s", "own framework's matmul GFLOP/s", 1e-9, "{:.1f}"),
    ("mfu_own_probe", "MFU vs own framework's matmul", 100, "{:.1f}%"),
    ("peak_during_run_flops_per_s", "matmul peak during run GFLOP/s", 1e-9, "{:.1f}"),
    ("mfu_during_run", "MFU vs matmul peak during run", 100, "{:.1f}%"),
    ("vendor_peak_flops_per_s", "vendor peak TFLOP/s", 1e-12, "{:.1f}"),
    ("mfu_vendor", "MFU vs vendor peak", 100, "{:.1f}%"),
    ("compile_s", "compile (s)", 1, "{:.2f}"),
    ("lower_s", "  of which lower (s)", 1, "{:.2f}"),
    ("first_step_s", "first step (s)", 1, "{:.3f}"),
    ("initial_loss", "initial loss", 1, "{:.4f}"),
    ("final_loss", "final loss", 1, "{:.4f}"),
    ("recompilations", "recompilations (timed)", 1, "{:.0f}"),
    ("host_rss_peak_bytes", "peak RSS (MiB)", 1 / 2**20, "{:.0f}"),
    ("host_rss_growth_bytes", "  of which grown in the timed steps (MiB)", 1 / 2**20, "{:.0f}"),
    ("device_peak_bytes", "device peak memory (MiB)", 1 / 2**20, "{:.0f}"),
]


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def device_key(run: dict[str, Any]) -> str:
    device = (run.get("environment") or {}).get("device") or {}
    return f"{device.get('type', '?')}|{device.get('name', '?')}"


def run_metrics(run: dict[str, Any], device_peak: dict[str, Any] | None = None) -> dict[str, Any]:
    """Figures of one run, from its raw result (None where the run has no such figure).
    ``device_peak`` (``benchmarks.machine_peak.headline``: the best engine installed) replaces the
    run's own matmul probe as the headline peak."""
    cfg = run.get("config") or {}
    model = ModelConfig(**cfg["model"]) if "model" in cfg else None
    batch = (cfg.get("train") or {}).get("batch_size")
    tokens_per_iter = batch * model.block_size if model and batch else None
    fpi = flops_per_iter(model, batch) if model and batch else None
    times = _get(run, "latency.times_s") or []
    lat = summarize(times)
    median = lat["median"]
    amortised = _get(run, "throughput.step_s")
    env = run.get("environment") or {}
    device = env.get("device") or {}
    measured = device_peak or run.get("matmul_peak") or {}
    # the run's own probe: this framework's float32 matmul, in this process
    own = (run.get("matmul_peak") or {}).get("flops_per_s")
    vendor = peaks.vendor_peak(device.get("type", "?"), device.get("name", "?"), env.get("dtype", "?"),
                               bool((cfg.get("train") or {}).get("tf32"))) if device else \
        {"flops_per_s": None, "source": "n/a"}
    # the same framework's matmul, probed just before and after the timed steps
    during = _get(run, "matmul_during_run.flops_per_s")
    flops_per_s = fpi / median if fpi and median else None
    cold = run.get("cold") or {}
    memory = run.get("memory") or {}
    return {
        "tokens_per_iter": tokens_per_iter,
        "flops_per_iter": fpi,
        "step_s": lat,
        "amortised_step_s": amortised,
        "tokens_per_s": tokens_per_iter / median if tokens_per_iter and median else None,
        "tokens_per_s_amortised": tokens_per_iter / amortised if tokens_per_iter and amortised else None,
        "flops_per_s": flops_per_s,
        "measured_peak": {"flops_per_s": measured.get("flops_per_s"), "source": measured.get("source", "n/a")},
        "vendor_peak": vendor,
        "mfu_measured": ratio(flops_per_s, measured.get("flops_per_s")),
        "own_probe_flops_per_s": own,
        "mfu_own_probe": ratio(flops_per_s, own),
        "peak_during_run_flops_per_s": during,
        "mfu_during_run": ratio(flops_per_s, during),
        "mfu_vendor": ratio(flops_per_s, vendor["flops_per_s"]),
        "compile_s": cold.get("compile_s"),
        "lower_s": cold.get("lower_s"),
        "first_step_s": cold.get("first_step_s"),
        "initial_loss": _get(run, "sanity.initial_loss"),
        "final_loss": run.get("final_loss"),
        "recompilations": run.get("recompilations"),
        "host_rss_peak_bytes": memory.get("host_rss_peak_bytes"),
        "host_rss_growth_bytes": (memory["host_rss_peak_bytes"] - memory["host_rss_at_start_bytes"]
                                  if memory.get("host_rss_peak_bytes") and memory.get("host_rss_at_start_bytes")
                                  else None),
        "device_peak_bytes": memory.get("device_peak_bytes"),
    }


def _median(values: Iterable[Any]) -> float | None:
    vals = sorted(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One backend at one configuration, over its repeats: step times pooled over the valid runs."""
    valid = [r for r in runs if r.get("status") == "ok"]
    metrics = [r["metrics"] for r in valid]
    pooled = [t for r in valid for t in _get(r, "latency.times_s") or []]
    step = summarize(pooled)
    per_repeat_medians = [m["step_s"]["median"] for m in metrics]
    fpi = next((m["flops_per_iter"] for m in metrics if m["flops_per_iter"]), None)
    tpi = next((m["tokens_per_iter"] for m in metrics if m["tokens_per_iter"]), None)
    median = step["median"]
    measured = _median(m["measured_peak"]["flops_per_s"] for m in metrics)
    own = _median(m.get("own_probe_flops_per_s") for m in metrics)
    during = _median(m.get("peak_during_run_flops_per_s") for m in metrics)
    vendor = next((m["vendor_peak"] for m in metrics), {"flops_per_s": None, "source": "n/a"})
    flops_per_s = fpi / median if fpi and median else None
    rss = [m["host_rss_peak_bytes"] for m in metrics if m["host_rss_peak_bytes"] is not None]
    growth = [m["host_rss_growth_bytes"] for m in metrics if m.get("host_rss_growth_bytes") is not None]
    dev = [m["device_peak_bytes"] for m in metrics if m["device_peak_bytes"] is not None]
    recompiles = [m["recompilations"] for m in metrics if m["recompilations"] is not None]
    return {
        "runs": len(runs),
        "valid_runs": len(valid),
        "statuses": [r.get("status") for r in runs],
        "tokens_per_iter": tpi,
        "flops_per_iter": fpi,
        "step_s": step,
        "per_repeat_median_step_s": per_repeat_medians,
        "amortised_step_s": _median(m["amortised_step_s"] for m in metrics),
        "tokens_per_s": tpi / median if tpi and median else None,
        "tokens_per_s_amortised": _median(m["tokens_per_s_amortised"] for m in metrics),
        "flops_per_s": flops_per_s,
        "measured_peak_flops_per_s": measured,
        "measured_peak_source": next((m["measured_peak"]["source"] for m in metrics), "n/a"),
        "mfu_measured": ratio(flops_per_s, measured),
        "own_probe_flops_per_s": own,
        "mfu_own_probe": ratio(flops_per_s, own),
        "peak_during_run_flops_per_s": during,
        "mfu_during_run": ratio(flops_per_s, during),
        "vendor_peak_flops_per_s": vendor["flops_per_s"],
        "vendor_peak_source": vendor["source"],
        "mfu_vendor": ratio(flops_per_s, vendor["flops_per_s"]),
        "compile_s": _median(m["compile_s"] for m in metrics),
        "lower_s": _median(m["lower_s"] for m in metrics),
        "first_step_s": _median(m["first_step_s"] for m in metrics),
        "initial_loss": _median(m["initial_loss"] for m in metrics),
        "final_loss": _median(m["final_loss"] for m in metrics),
        "recompilations": sum(recompiles) if recompiles else None,
        "host_rss_peak_bytes": max(rss) if rss else None,
        "host_rss_growth_bytes": max(growth) if growth else None,
        "device_peak_bytes": max(dev) if dev else None,
    }


def figure_value(agg: dict[str, Any], key: str) -> Any:
    if key.startswith("step_s."):
        return _get(agg, "step_s." + key.split(".", 1)[1])
    return agg.get(key)


def ratios(aggs: dict[str, dict[str, Any]], num: str = "jax", den: str = "torch") -> dict[str, float | None]:
    if num not in aggs or den not in aggs:
        return {}
    return {key: ratio(figure_value(aggs[num], key), figure_value(aggs[den], key)) for key, *_ in FIGURES}


def _fmt(value: Any, scale: float, fmt: str) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return fmt.format(value * scale)


def lane_names(settings: dict[str, Any]) -> list[str]:
    """The report's columns: one per lane (a backend and its variant, ``benchmarks/variants.py``)."""
    return [lane["name"] for lane in settings.get("lanes") or [{"name": b} for b in settings["backends"]]]


def ratio_label(pair: str) -> str:
    """``jax malloc=system/torch malloc=system`` -> ``jax/torch malloc=system``: a ratio column's heading."""
    jax_lane, torch_lane = pair.split("/")
    common = jax_lane[len("jax"):]
    return f"jax/torch{common}" if torch_lane == "torch" + common else pair


def format_table(group: dict[str, Any], backends: list[str]) -> str:
    """Figures down, lanes across, then a jax/torch column per pair of default lanes (one per allocator)."""
    aggs = group["backends"]
    cols = [b for b in backends if b in aggs]
    pairs = group.get("pair_ratios") or ({"jax/torch": group["ratios"]} if "jax" in aggs and "torch" in aggs else {})
    header = ["figure", *cols] + [ratio_label(p) for p in pairs]
    rows = [header]
    for key, label, scale, fmt in FIGURES:
        values = [figure_value(aggs[b], key) for b in cols]
        if all(v is None for v in values) and key in ("lower_s", "device_peak_bytes", "vendor_peak_flops_per_s", "mfu_vendor"):
            continue  # figures this device or framework does not have
        row = [label] + [_fmt(v, scale, fmt) for v in values]
        for ratios_of_pair in pairs.values():
            r = ratios_of_pair.get(key)
            row.append("n/a" if r is None else f"{r:.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    s = report["settings"]
    out = []
    for group in report["summary"]:
        title = f"{s['preset']}"
        if group["sweep"]:
            title += "  " + ", ".join(f"{k}={v}" for k, v in group["sweep"].items())
        any_agg = next(iter(group["backends"].values()), {})
        title += (f"  (batch {group['batch_size']} x block {group['block_size']} = {any_agg.get('tokens_per_iter')} tokens/step, "
                  f"{_fmt(any_agg.get('flops_per_iter'), 1e-9, '{:.2f}')} GFLOP/step)")
        out.append(title)
        out.append(format_table(group, lane_names(s)))
        out.append("")
    peaks_seen: dict[tuple[str, str], list[str]] = {}
    for group in report["summary"]:
        for b, agg in group["backends"].items():
            for kind in ("measured", "vendor"):
                names = peaks_seen.setdefault((kind, str(agg.get(f"{kind}_peak_source"))), [])
                if b not in names:
                    names.append(b)
    for (kind, source), names in peaks_seen.items():
        out.append(f"{kind} peak ({', '.join(names)}): {source}")
    by_backend = {r.get("lane", r["backend"]): r["profile"]["categories"] for r in report["runs"]
                  if (r.get("profile") or {}).get("categories", {}).get("steps")}
    if by_backend:
        from benchmarks import attribution

        out.append("")
        out.append("where the step goes (profiled steps, first repeat; seconds per step and share; "
                   "benchmarks/README.md says what each category holds)")
        out.append(attribution.format_table(by_backend))
        out.append("")
    during = next((r["matmul_during_run"]["source"] for r in report["runs"] if r.get("matmul_during_run")), None)
    if during:
        out.append(f"matmul peak during run (each backend its own): {during}")
    if report.get("process_settings", {}).get("rows"):
        from benchmarks import process_table

        out += ["", process_table.format_table(report["process_settings"]), ""]
    bad = [r for r in report["runs"] if r.get("status") != "ok"]
    for r in bad:
        out.append(f"{r['backend']} repeat {r['repeat']}{' ' + str(r['sweep']) if r['sweep'] else ''}: "
                   f"{r['status']}: {r.get('error')}")
    if len(lane_names(s)) > len(s["backends"]):
        out += [f"variant {lane['about']}" for lane in s["lanes"]]
    out.append(f"command: {report['command_line']}")
    return "\n".join(out) + "\n"


CSV_COLUMNS = ["sweep_key", "sweep_value", "backend", "runs", "valid_runs", "step_s_median", "step_s_p10",
               "step_s_p90", "step_s_min", "step_s_max", "step_s_n", "amortised_step_s", "tokens_per_s",
               "tokens_per_s_amortised", "flops_per_iter", "flops_per_s", "measured_peak_flops_per_s",
               "mfu_measured", "own_probe_flops_per_s", "mfu_own_probe", "peak_during_run_flops_per_s",
               "mfu_during_run", "vendor_peak_flops_per_s", "mfu_vendor",
               "compile_s", "lower_s", "first_step_s",
               "initial_loss", "final_loss", "recompilations", "host_rss_peak_bytes", "device_peak_bytes"]


def to_csv(report: dict[str, Any]) -> str:
    """One row per lane and configuration, and a ``jax/torch`` row of ratios per pair of lanes (one per allocator)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for group in report["summary"]:
        key = next(iter(group["sweep"]), "") if group["sweep"] else ""
        value = group["sweep"][key] if key else ""
        rows = dict(group["backends"])
        for name, agg in rows.items():
            row = {"sweep_key": key, "sweep_value": value, "backend": name}
            for col in CSV_COLUMNS[3:]:
                if col.startswith("step_s_"):
                    row[col] = _get(agg, "step_s." + col[len("step_s_"):])
                else:
                    row[col] = agg.get(col)
            writer.writerow(row)
        pairs = group.get("pair_ratios") or ({"jax/torch": group["ratios"]} if group["ratios"] else {})
        for pair, ratios_of_pair in pairs.items():
            row = {"sweep_key": key, "sweep_value": value, "backend": ratio_label(pair)}
            for col in CSV_COLUMNS[3:]:
                fig = "step_s." + col[len("step_s_"):] if col.startswith("step_s_") else col
                row[col] = ratios_of_pair.get(fig)
            writer.writerow(row)
    return buf.getvalue()
