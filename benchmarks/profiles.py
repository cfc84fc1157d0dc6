"""Where the step time goes: a self-time table from a Chrome/Perfetto trace.

torch.profiler's ``export_chrome_trace`` and jax.profiler's ``create_perfetto_trace`` both
write the Trace Event format: complete events (``"ph": "X"``) with a start and a
duration, nested per thread. Self time is an event's duration minus its children's.
"""

from __future__ import annotations

import gzip
import re
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


# the profilers' own spans, which would otherwise top the table
BOOKKEEPING = ("profiler.py", "PyTorch Profiler", "ProfilerStep#")


def find_trace(directory: str | Path, backend: str) -> Path | None:
    directory = Path(directory)
    patterns = ["torch_trace.json"] if backend == "torch" else ["**/*.trace.json.gz", "**/*.trace.json"]
    for pattern in patterns:
        found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


def load_events(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e and "ts" in e
            and not any(marker in str(e.get("name", "")) for marker in BOOKKEEPING)]


def self_times(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """name -> {"self_us", "total_us", "count"}, nesting computed per (pid, tid)."""
    by_thread: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"self_us": 0.0, "total_us": 0.0, "count": 0})

    def close(frame: list) -> None:
        end, name, child, dur = frame
        rec = out[name]
        rec["self_us"] += max(0.0, dur - child)
        rec["total_us"] += dur
        rec["count"] += 1

    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list] = []
        for e in evs:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][0] <= ts:
                close(stack.pop())
            if stack:
                stack[-1][2] += dur
            stack.append([ts + dur, str(e.get("name", "?")), 0.0, dur])
        while stack:
            close(stack.pop())
    return dict(out)


# runtime bookkeeping and waiting, as opposed to the kernels / XLA ops that do the work
RUNTIME = ("Execute", "PjitFunction", "ParseArguments", "block_until_ready", "wait for completion",
           "autograd::engine", "Optimizer.step", "Optimizer.zero_grad", "Thunk")
STEP_MARK = "train_step"  # the annotation bench.profile puts around each traced step


def within_steps(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """The events inside the ``train_step`` annotations (all events if there are none), and
    the annotated wall time in microseconds."""
    windows = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events if e.get("name") == STEP_MARK)
    if not windows:
        return events, 0.0
    inside = [e for e in events if e.get("name") != STEP_MARK and any(
        a <= float(e["ts"]) and float(e["ts"]) + float(e["dur"]) <= b for a, b in windows)]
    return inside, sum(b - a for a, b in windows)


def summarize(path: str | Path, top: int = 25) -> dict[str, Any]:
    events, step_wall = within_steps(load_events(Path(path)))
    table = self_times(events)
    total_self = sum(r["self_us"] for r in table.values()) or 1.0
    rows = sorted(table.items(), key=lambda kv: kv[1]["self_us"], reverse=True)[:top]
    python = sum(r["self_us"] for name, r in table.items() if name.startswith("$"))
    ops = {n: r for n, r in table.items() if not n.startswith("$") and not any(m in n for m in RUNTIME)}
    ops_total = sum(r["self_us"] for r in ops.values()) or 1.0
    op_rows = sorted(ops.items(), key=lambda kv: kv[1]["self_us"], reverse=True)[:top]
    kinds: dict[str, float] = defaultdict(float)
    for name, r in ops.items():  # "dot.78", "ynn_fusion.132" -> "dot", "ynn_fusion"
        kinds[re.sub(r"\.\d+$", "", name)] += r["self_us"]
    return {
        "trace": str(path),
        "events": len(events),
        "step_wall_us": step_wall,
        "total_self_us": total_self,
        "python_self_fraction": python / total_self,  # JAX traces name Python frames "$file:line fn"
        "top": [{"name": name, "self_us": r["self_us"], "total_us": r["total_us"], "count": int(r["count"]),
                 "self_fraction": r["self_us"] / total_self} for name, r in rows],
        "ops_self_us": ops_total,
        "op_kinds": [{"kind": k, "self_us": v, "ops_fraction": v / ops_total}
                     for k, v in sorted(kinds.items(), key=lambda kv: kv[1], reverse=True)[:top]],
        "top_ops": [{"name": name, "self_us": r["self_us"], "count": int(r["count"]),
                     "ops_fraction": r["self_us"] / ops_total} for name, r in op_rows],
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['trace']}: {summary['events']} events in {summary['step_wall_us'] / 1e3:.1f} ms of "
             f"annotated steps; self time summed over all threads "
             f"{summary['total_self_us'] / 1e3:.1f} ms ({100 * summary['python_self_fraction']:.1f}% in Python frames)",
             f"{'self ms':>10} {'share':>6} {'count':>6}  name"]
    for r in summary["top"]:
        lines.append(f"{r['self_us'] / 1e3:10.2f} {100 * r['self_fraction']:5.1f}% {r['count']:6d}  {r['name'][:100]}")
    lines.append("")
    lines.append(f"kernels / XLA ops only (no Python frames, runtime or waiting): {summary['ops_self_us'] / 1e3:.1f} ms")
    lines.append(f"{'self ms':>10} {'share':>6}  kind")
    for r in summary["op_kinds"]:
        lines.append(f"{r['self_us'] / 1e3:10.2f} {100 * r['ops_fraction']:5.1f}%  {r['kind'][:100]}")
    lines.append("")
    lines.append(f"{'self ms':>10} {'share':>6} {'count':>6}  name")
    for r in summary["top_ops"]:
        lines.append(f"{r['self_us'] / 1e3:10.2f} {100 * r['ops_fraction']:5.1f}% {r['count']:6d}  {r['name'][:100]}")
    return "\n".join(lines) + "\n"


def summarize_dir(directory: str | Path, backend: str) -> dict[str, Any] | None:
    path = find_trace(directory, backend)
    if path is None:
        return None
    summary = summarize(path)
    (Path(directory) / f"{backend}_self_time.txt").write_text(format_summary(summary))
    summary["top"] = summary["top"][:10]
    summary["top_ops"] = summary["top_ops"][:10]
    summary["op_kinds"] = summary["op_kinds"][:10]
    return summary
