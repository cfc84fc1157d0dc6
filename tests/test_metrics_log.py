"""A run's history lives in OUT/metrics.csv, not in its checkpoints' headers (issue 19, item 6):
the header no longer grows with every step (past ~510k steps it exceeded safetensors' 100 MB
limit and every save failed), and a resumed run still writes the metrics.csv of a run that never
stopped, from a clean file, a file with rows past the checkpoint and a partial last line (a
kill), or an older checkpoint that carried the history in its header."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from backends import cli
from common.checkpoint import FILENAME, load_checkpoint, save_checkpoint

TINY = ["train", "--backend", "torch", "--preset", "tiny", "--no-progress", "--device=cpu", "--eval_interval=5",
        "--lr_decay_iters=20"]
TIMINGS = ("ms_per_iter", "tokens_per_s")  # the only columns that differ between two runs


def header(path: Path) -> tuple[int, dict]:
    blob = (path / FILENAME).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return n, json.loads(json.loads(blob[8:8 + n])["__metadata__"]["microgpt"])


def rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(f)]


def train(out: Path, data: Path, *extra) -> None:
    assert cli.main([*TINY, "--data", str(data), "--out", str(out), *map(str, extra)]) == 0


@pytest.fixture(scope="module")
def full(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    train(out, corpus, "--max_iters=20")
    return out


@pytest.fixture(scope="module")
def half(tmp_path_factory, corpus) -> Path:
    """The first 10 of the full run's 20 steps."""
    out = tmp_path_factory.mktemp("half") / "run"
    train(out, corpus, "--max_iters=10")
    return out


def test_the_header_does_not_grow_with_the_run(tmp_path, corpus, full):
    train(tmp_path / "short", corpus, "--max_iters=2")
    short, meta = header(tmp_path / "short" / "last")
    long, _ = header(full / "last")
    assert "history" not in meta["extra"]
    assert abs(long - short) < 64, (short, long)  # a few digits of the step and the losses; 196 bytes a step before


def test_resume_writes_the_metrics_of_an_uninterrupted_run(tmp_path, corpus, full, half):
    run = tmp_path / "run"
    shutil.copytree(half, run)
    train(run, corpus, "--resume", "--max_iters=20")
    assert rows(run) == rows(full)
    assert [int(r["iter"]) for r in rows(run) if r["loss"]] == list(range(1, 21))


def test_resume_drops_rows_past_the_checkpoint_and_a_partial_line(tmp_path, corpus, full, half):
    """A kill after the metrics were appended but before last/ was saved, and one inside an append."""
    run = tmp_path / "run"
    shutil.copytree(half, run)
    with open(run / "metrics.csv", "a") as f:
        f.write("11,0.001,9.99,,,1.0,1.0,\n12,0.00")
    train(run, corpus, "--resume", "--max_iters=20")
    assert rows(run) == rows(full)


def test_resume_from_a_checkpoint_with_its_history_in_the_header(tmp_path, corpus, full, half):
    """Checkpoints written before issue 19 carried the history in extra["history"]; they still load and resume."""
    run = tmp_path / "run"
    shutil.copytree(half, run)
    with open(run / "metrics.csv") as f:
        history = [{k: (int(v) if k == "iter" else float(v) if v else None) for k, v in r.items()
                    if k != "exact_val_loss"} for r in csv.DictReader(f) if r["iter"]]
    ckpt = load_checkpoint(run / "last")
    ckpt.extra["history"] = history
    save_checkpoint(run / "last", ckpt)
    (run / "metrics.csv").unlink()
    train(run, corpus, "--resume", "--max_iters=20")
    assert rows(run) == rows(full)


def test_resume_without_metrics_says_so_and_goes_on(tmp_path, corpus, capsys, half):
    run = tmp_path / "run"
    shutil.copytree(half, run)
    (run / "metrics.csv").unlink()
    capsys.readouterr()
    train(run, corpus, "--resume", "--max_iters=12")
    assert "metrics.csv' is missing; the metrics of the resumed run start at step 10" in capsys.readouterr().err
    assert [int(r["iter"]) for r in rows(run) if r["loss"]] == [11, 12]
