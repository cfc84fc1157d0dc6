"""A training run's metrics: ``OUT/metrics.csv`` (one row per step and per evaluation, and a last
row with the best checkpoint's exact val loss) and ``OUT/loss.png`` (train and val curves).

``metrics.csv`` is the run's history, kept out of the checkpoints (a checkpoint's header stays the
same size however long the run: issue 19). It is an append-only log, made durable before every
checkpoint is saved, so it always reaches at least as far as ``last/``; a resumed run keeps its
rows up to the checkpoint's step (``read``), drops the rest, and goes on appending, so that its
file is the one an uninterrupted run writes. A kill leaves at most one partial last line, which
the next resume drops. Checkpoints of older versions carried the history in their header
(``extra["history"]``); a resume from one of those takes it from there.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

from common import outputs, writes

METRICS_FILE, PLOT_FILE = "metrics.csv", "loss.png"
METRICS_FILES = (METRICS_FILE, PLOT_FILE)
METRICS_FIELDS = ("iter", "lr", "loss", "train_loss", "val_loss", "ms_per_iter", "tokens_per_s",
                  "exact_val_loss")  # the last: one final row, the best checkpoint's (backends/evaluate.py)
NUMBERS = METRICS_FIELDS[1:-1]


def _csv(rows: list[dict[str, Any]], header: bool = False) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS)
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS_FIELDS})
    return buf.getvalue().encode("utf-8")


def read(out_dir: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of ``OUT/metrics.csv`` up to step ``upto`` (a resumed checkpoint's), as the training
    loop made them; a missing or partly unreadable file is said in one line, not an error."""
    path = Path(out_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "is missing" if isinstance(exc, FileNotFoundError) else "cannot be read"
        _note(f"{str(path)!r} {why}; the metrics of the resumed run start at step {upto}")
        return []
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # a partial last line, left by a kill inside an append
    rows, skipped = [], 0
    for raw in csv.DictReader(io.StringIO(text, newline="")):
        try:
            it = int(raw.get("iter") or "")
            row = {"iter": it} | {k: float(raw[k]) if raw.get(k) else None for k in NUMBERS}
        except (TypeError, ValueError):
            skipped += raw.get("iter") not in ("", None)  # the exact-loss row has no step: not a loss
            continue
        if it <= upto:
            rows.append(row)
    if skipped:
        _note(f"{skipped} damaged row(s) of {str(path)!r} were left out of the resumed run's metrics")
    return rows


def _note(line: str) -> None:
    print(f"microgpt: {line}", file=sys.stderr)


class MetricsLog:
    """``OUT/metrics.csv`` as the loop's ``history`` grows: ``flush`` appends the rows not written yet."""

    def __init__(self, out_dir: Path, history: list[dict[str, Any]]):
        self.out_dir, self.history = Path(out_dir), history
        self.path = self.out_dir / METRICS_FILE
        outputs.remove_stale_temporaries(self.out_dir, METRICS_FILES)  # left by a kill inside a write
        writes.atomic_write_bytes(self.path, _csv(history, header=True))  # the rows resumed from, whole
        self.written = len(history)

    def flush(self) -> None:
        if len(self.history) > self.written:
            writes.append_bytes(self.path, _csv(self.history[self.written:]))
            self.written = len(self.history)

    def finish(self, exact=None) -> None:
        """The remaining rows, the exact val loss of ``best/`` (if the run finished) and ``loss.png``."""
        self.flush()
        if exact is not None:
            writes.append_bytes(self.path, _csv([{"exact_val_loss": exact.loss}]))
        plot_losses(self.out_dir / PLOT_FILE, self.history)


def plot_losses(path: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in history if r.get("loss") is not None]
    evals = [r for r in history if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if steps:
        ax.plot([r["iter"] for r in steps], [r["loss"] for r in steps], lw=0.6, alpha=0.35, label="train (batch)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train (estimate_loss)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val (estimate_loss)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    outputs.save_figure(fig, path)
    plt.close(fig)
