"""The ``microgpt`` command end to end on the tiny preset, and every bad input of the issue:
exit status 2, one line on stderr naming problem and fix, no traceback, files untouched."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.cli import main
from common.checkpoint import FILENAME

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backend", "torch", "--preset", "tiny", "--no-progress", "--device=cpu"]


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def losses(out_dir: Path) -> list[tuple[int, float]]:
    with open(out_dir / "metrics.csv") as f:
        return [(int(r["iter"]), float(r["loss"])) for r in csv.DictReader(f) if r["loss"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shakespeare_path):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--data", str(shakespeare_path), "--out", str(out)]) == 0
    return out


def test_train_writes_checkpoints_metrics_and_plot(trained):
    for name in ("last/" + FILENAME, "best/" + FILENAME, "last/tokenizer.json", "metrics.csv", "loss.png"):
        assert (trained / name).is_file(), name
    rows = losses(trained)
    assert [i for i, _ in rows] == list(range(1, 21))
    assert rows[-1][1] < rows[0][1]
    assert (trained / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_is_seeded(trained, capsys):
    args = ["sample", "--checkpoint", trained, "--prompt", "ROMEO:", "--max-new-tokens", 40, "--seed", 7]
    code, out1, _ = run(capsys, *args)
    code2, out2, _ = run(capsys, *args)
    assert code == code2 == 0 and out1 == out2 and out1.startswith("ROMEO:")
    assert len(out1.splitlines()[0]) >= 6


def test_resume_continues_exactly(tmp_path, shakespeare_path, capsys):
    """20 steps in one go == 10 steps, stop, --resume to 20: the same loss at every step."""
    data = ["--data", shakespeare_path]
    run(capsys, "train", *TINY, *data, "--out", tmp_path / "full", "--max_iters=20")
    run(capsys, "train", *TINY, *data, "--out", tmp_path / "split", "--max_iters=10",
        "--lr_decay_iters=20")
    code, out, _ = run(capsys, "train", *TINY, *data, "--out", tmp_path / "split", "--resume", "--max_iters=20")
    assert code == 0, out
    assert losses(tmp_path / "split") == losses(tmp_path / "full")


def test_ctrl_c_saves_a_checkpoint_then_resume(tmp_path, shakespeare_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "backends.cli", "train", *TINY, "--data", str(shakespeare_path), "--out", str(out),
           "--max_iters=100000", "--lr_decay_iters=100000", "--eval_interval=100000"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last" / FILENAME).exists() and time.time() < deadline:  # the step-0 evaluation
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout + stderr
    from common.checkpoint import load_checkpoint
    step = load_checkpoint(out / "last").step
    assert step > 0
    code = main(["train", *TINY, "--data", str(shakespeare_path), "--out", str(out), "--resume",
                 f"--max_iters={step + 3}"])
    assert code == 0 and load_checkpoint(out / "last").step == step + 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, shakespeare_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", *TINY, "--data", shakespeare_path, "--out", out, "--learning_rate=1e30",
                       "--min_lr=1e29", "--warmup_iters=0", "--grad_clip=0", "--max_iters=50", "--lr_decay_iters=50")
    assert code == 2 and "loss became" in err and "last good checkpoint" in err
    assert len(err.strip().splitlines()) == 1
    from common.checkpoint import load_checkpoint
    assert load_checkpoint(out / "last").step == 0  # the evaluation at step 0, before it diverged


def test_convert_refuses_a_random_file(tmp_path, capsys):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"this is not a checkpoint")
    code, _, err = run(capsys, "convert", "--from-nanogpt", bad, "--vocab-from", bad, "--out", tmp_path / "x")
    assert code == 2 and "not a checkpoint" in err and not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: one parametrised test per item of the list.

def _write(tmp_path, name, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


BAD_TRAIN = {
    "missing corpus": (lambda t: ["--data", t / "missing.txt"], "does not exist"),
    "corpus is a folder": (lambda t: ["--data", t], "not a file"),
    "not UTF-8": (lambda t: ["--data", _write(t, "latin1.txt", "café crème".encode("latin-1") * 100)], "not UTF-8"),
    "empty corpus": (lambda t: ["--data", _write(t, "empty.txt", b"")], "empty"),
    "too short for block_size": (lambda t: ["--data", _write(t, "short.txt", b"to be or not to be" * 5)], "block_size + 1"),
    "n_embd not divisible by n_head": (lambda t: ["--n_embd=30", "--n_head=4"], "not divisible"),
    "non-positive size": (lambda t: ["--n_layer=0"], "positive"),
    "non-positive batch": (lambda t: ["--batch_size=-3"], "positive"),
    "unknown preset": (lambda t: ["--preset", "enormous"], "unknown preset"),
    "unknown backend": (lambda t: ["--backend", "tensorflow"], "unknown backend"),
    "unknown config key": (lambda t: ["--n_layers=2"], "valid keys"),
    "resume with nothing to resume": (lambda t: ["--resume", "--out", t / "fresh"], "nothing to resume" if False else "no checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_input(case, tmp_path, capsys, trained, shakespeare_path):
    make_args, fragment = BAD_TRAIN[case]
    before = snapshot(trained)
    args = ["train", *TINY, "--data", shakespeare_path, "--out", trained, *make_args(tmp_path)]
    if case == "resume with nothing to resume":
        args = ["train", *TINY, "--data", shakespeare_path, *make_args(tmp_path)]
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(trained) == before  # existing files untouched


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(tmp_path, capsys, trained, shakespeare_path):
    before = snapshot(trained)
    code, _, err = run(capsys, "train", "--preset", "tiny", "--no-progress", "--data", shakespeare_path,
                       "--out", trained, "--overwrite", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert snapshot(trained) == before


def test_unreadable_corpus(tmp_path, capsys, monkeypatch):
    path = _write(tmp_path, "secret.txt", b"x" * 1000)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root can read anything; pretend
    code, _, err = run(capsys, "train", *TINY, "--data", path, "--out", tmp_path / "o")
    assert code == 2 and "not readable" in err


def test_bad_sample_inputs(tmp_path, capsys, trained):
    before = snapshot(trained)
    code, _, err = run(capsys, "sample", "--checkpoint", trained, "--prompt", "héllo\u2603")
    assert code == 2 and "outside the vocabulary" in err and "'\u2603'" in err
    code, _, err = run(capsys, "sample", "--checkpoint", tmp_path / "nowhere")
    assert code == 2 and "no checkpoint" in err
    assert snapshot(trained) == before
    broken = tmp_path / "broken"
    broken.mkdir()
    blob = (trained / "last" / FILENAME).read_bytes()
    (broken / FILENAME).write_bytes(blob[: len(blob) // 3])
    code, _, err = run(capsys, "sample", "--checkpoint", broken)
    assert code == 2 and "truncated" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_are_one_line(capsys):
    code, _, err = run(capsys, "fly")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "sample")  # --checkpoint is required
    assert code == 2 and "--checkpoint" in err and len(err.strip().splitlines()) == 1


def test_console_script_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "backends.cli", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout and "sample" in proc.stdout
