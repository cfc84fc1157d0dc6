"""Where a step's wall time goes, by category, the same categories for every backend. Framework-free.

A profile (``--profile``) is a Trace Event file: per thread, nested complete events. Each
backend's bench hook supplies a classifier, ``classify(name, args, ancestors) -> category | None``
(``backends/<name>/bench.py: op_classifier``): torch's knows aten op names and shapes, JAX's
reads the compiled step's HLO. ``None`` means "not an op" (Python frames, the runtime,
waiting). The attribution is a sweep over the traced steps' wall time:

* per thread, the op in charge at each instant is the *outermost* classified event (so an
  ``aten::linear`` owns the ``aten::t`` and ``aten::mm`` inside it, while an autograd node,
  which is not an op, leaves its ``aten::mm`` to be classified on its own);
* at each instant the wall time is shared equally among the threads running an op (XLA runs
  independent ops side by side on its worker threads; torch runs one op at a time);
* an instant with no op anywhere is ``framework``: Python, dispatch, the runtime, waiting.

The categories sum to the traced wall time, so per-step seconds of two backends compare
directly.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable

CATEGORIES = (
    "forward matmul",       # x @ W of every Linear, and the tied LM head
    "weight-grad matmul",   # dW = x^T @ dy (contracts over the B*T tokens)
    "input-grad matmul",    # dx = dy @ W^T
    "attention",            # scores, mask, softmax, attention dropout, weighted sum (fused or not), fwd and bwd
    "elementwise",          # GELU, bias, residual adds, dropout masks and scaling, fwd and bwd
    "layernorm",            # fwd and bwd
    "loss",                 # log-softmax and cross-entropy, fwd and bwd
    "optimizer",            # gradient clipping, AdamW, weight decay, learning rate
    "copies/layout",        # copies, transposes, concatenation, embedding gather and scatter
    "communication",        # collectives between devices: all-reduce, all-gather, reduce-scatter (--parallel)
    "framework",            # no op running: Python, dispatch, runtime, waiting
    "other",                # an op no rule knows
)
STEP_MARK = "train_step"  # the annotation bench.profile puts around each traced step

Classify = Callable[[str, dict, tuple], "str | None"]


def _segments(events: list[dict[str, Any]], classify: Classify) -> list[tuple[float, float, str]]:
    """(start, end, category) of one thread: who is in charge at each instant (the outermost
    classified event), in time order, gaps left out."""
    events = sorted(events, key=lambda e: (float(e["ts"]), -float(e["dur"])))
    out: list[tuple[float, float, str]] = []
    stack: list[tuple[float, str, str | None]] = []  # (end, name, category)
    owner_end, owner_cat = -1.0, None
    for e in events:
        ts, end = float(e["ts"]), float(e["ts"]) + float(e["dur"])
        while stack and stack[-1][0] <= ts:
            stack.pop()
        if owner_cat is not None and owner_end <= ts:
            owner_cat = None
        ancestors = tuple(name for _, name, _ in stack)
        category = None if owner_cat is not None else classify(str(e.get("name", "")), e.get("args") or {}, ancestors)
        if category is not None:
            out.append((ts, end, category))
            owner_end, owner_cat = end, category
        stack.append((end, str(e.get("name", "")), category))
    return out


def join_async(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """XLA:CPU runs some ops asynchronously (a large dot on its thread pool): the op's event covers
    only its launch, and an ``end: <op>`` event marks its completion. For such an op this adds a
    *tail* event, from the launch's end to that mark, on a thread of its own: it counts only where
    no op event runs anywhere (the pool's tasks are not traced; while other ops run, the tail may
    just be waiting its turn). The marks themselves are dropped."""
    out: list[dict[str, Any]] = []
    started: dict[str, int] = {}  # op name -> index in out of its latest start (an op runs once a step)
    for e in sorted(events, key=lambda e: float(e["ts"])):
        name = str(e.get("name", ""))
        if name.startswith("end: "):
            i = started.pop(name[5:], None)
            if i is not None:
                op, done = out[i], float(e["ts"]) + float(e["dur"])
                launched = float(op["ts"]) + float(op["dur"])
                if done > launched:
                    out.append(dict(op, ts=launched, dur=done - launched, tid=("async tail", name[5:]),
                                    args=dict(op.get("args") or {}, async_tail=True)))
            continue
        started[name] = len(out)
        out.append(e)
    return out


def attribute(events: list[dict[str, Any]], classify: Classify,
              windows: Iterable[tuple[float, float]]) -> dict[str, float]:
    """Microseconds per category within ``windows`` (the traced steps), summing to their wall time."""
    by_thread: dict[tuple, list[dict]] = defaultdict(list)
    for e in join_async(events):
        if e.get("name") != STEP_MARK:
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    # one sweep over every segment's start and end and every window's edges, in time order
    marks: list[tuple[float, int, str, int]] = []  # (time, +1 start / -1 end, category, tier)
    for thread, evs in by_thread.items():
        tier = 1 if isinstance(thread[1], tuple) else 0  # 1: an async tail, counted only when nothing else runs
        for a, b, cat in _segments(evs, classify):
            marks += [(a, 1, cat, tier), (b, -1, cat, tier)]
    for a, b in windows:
        marks += [(a, 1, STEP_MARK, 0), (b, -1, STEP_MARK, 0)]
    marks.sort(key=lambda m: (m[0], m[1]))  # at one instant, ends before starts
    totals = dict.fromkeys(CATEGORIES, 0.0)
    running: list[dict[str, int]] = [defaultdict(int), defaultdict(int)]  # per tier
    in_window, last = 0, None
    for t, delta, cat, tier in marks:
        if in_window and last is not None and t > last:
            active = next((r for r in running if sum(r.values()) > 0), None)
            if active is None:
                totals["framework"] += t - last
            else:
                n = sum(active.values())
                for c, k in active.items():
                    if k:
                        totals[c if c in totals else "other"] += (t - last) * k / n
        if cat == STEP_MARK:
            in_window += delta
        else:
            running[tier][cat] += delta
        last = t
    return totals


def step_windows(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events if e.get("name") == STEP_MARK)


def categories_of_trace(events: list[dict[str, Any]], classify: Classify) -> dict[str, Any]:
    """Seconds per step in each category, their shares, and the traced steps' wall time."""
    windows = step_windows(events)
    if not windows:
        return {"steps": 0, "step_s": None, "seconds": {}, "shares": {}}
    totals = attribute(events, classify, windows)
    wall = sum(b - a for a, b in windows)
    n = len(windows)
    return {"steps": n, "step_s": wall / n / 1e6,
            "seconds": {c: v / n / 1e6 for c, v in totals.items()},
            "shares": {c: v / wall for c, v in totals.items()}}


def format_table(by_backend: dict[str, dict[str, Any]]) -> str:
    """Categories down, each backend's seconds per step and share across, then jax/torch."""
    names = [b for b in by_backend if by_backend[b].get("steps")]
    header = ["category"] + [f"{b} {col}" for b in names for col in ("s/step", "share")]
    ratio = "jax" in names and "torch" in names
    if ratio:
        header.append("jax/torch")
    rows = [header]
    for cat in CATEGORIES:
        row = [cat]
        for b in names:
            row += [f"{by_backend[b]['seconds'][cat]:.4f}", f"{100 * by_backend[b]['shares'][cat]:.1f}%"]
        if ratio:
            t, j = by_backend["torch"]["seconds"][cat], by_backend["jax"]["seconds"][cat]
            row.append(f"{j / t:.2f}" if t > 0 else ("n/a" if j == 0 else "inf"))
        rows.append(row)
    total = ["traced step"] + [x for b in names for x in (f"{by_backend[b]['step_s']:.4f}", "100%")]
    if ratio:
        total.append(f"{by_backend['jax']['step_s'] / by_backend['torch']['step_s']:.2f}")
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
