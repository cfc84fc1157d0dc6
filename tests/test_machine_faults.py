"""Faults of the machine around a run (issue 19): a full disk mid-save, SIGTERM, two processes in
one folder, read-only places found late, unbounded requests, a poisoned optimizer state. Each ends
in one line and exit status 2 (SIGTERM: 143, after saving), with what was written before kept.
Real signals and real second processes are used where the issue says so; a full disk is a fake
``os.write`` raising ENOSPC (a tmpfs needs root)."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from backends import cli
from common import lock
from common.checkpoint import FILENAME, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--no-progress", "--device=cpu"]
FOREVER = ["--max_iters=1000000", "--lr_decay_iters=1000000", "--eval_interval=1000000"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("fixture") / "run"
    assert cli.main(["train", "--backend", "torch", *TINY, "--max_iters=4", "--eval_interval=2",
                     "--data", str(corpus), "--out", str(out)]) == 0
    return out


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def start(args: list, out: Path, data: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "backends.cli", "train", "--backend", "torch", *TINY, "--data", str(data),
           "--out", str(out), *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def wait_for_checkpoint(proc: subprocess.Popen, out: Path) -> None:
    while not (out / "last" / FILENAME).exists():  # the evaluation at step 0 saves last/
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


# -- 1. a full disk mid-save ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_disk_full_mid_save_is_one_line_and_keeps_the_previous_checkpoint(backend, tmp_path, monkeypatch, capsys,
                                                                          corpus):
    """The third checkpoint write (step 2's last/, after step 0's last/ and best/) finds the disk full."""
    real_write, saves = os.write, []

    def full_disk(fd, data):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if f".{FILENAME}." in name:
            saves.append(name)
            if len(saves) >= 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    out = tmp_path / "run"
    code = cli.main(["train", "--backend", backend, *TINY, "--max_iters=6", "--eval_interval=2",
                     "--data", str(corpus), "--out", str(out)])
    monkeypatch.undo()
    line = one_line(capsys.readouterr().err)
    assert code == 2
    for words in ("no space left on device", repr(str(out / "last")), "needs", "bytes", "free",
                  "the last good checkpoint (step 0)", "--resume"):
        assert words in line, (words, line)
    assert load_checkpoint(out / "last").step == 0  # the atomic save kept the previous one
    assert not list(out.rglob("*.tmp"))
    with open(out / "metrics.csv") as f:  # the rows up to the failed save were kept
        assert max(int(r["iter"]) for r in csv.DictReader(f)) == 2


def test_a_write_the_machine_refuses_elsewhere_is_one_line(capsys):
    """run_command's net: an ENOSPC or EROFS from a writer that is not MicroGPT's (a profiler)."""
    from common.errors import run_command

    def run(argv):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/trace.json")

    assert run_command("microgpt", run, []) == 2
    assert "cannot write '/mnt/ro/trace.json' (read-only file system)" in one_line(capsys.readouterr().err)


# -- 2. SIGTERM ------------------------------------------------------------------------------------

def test_sigterm_saves_writes_the_metrics_and_exits_143(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    proc = start(["--max_iters=1000000", "--lr_decay_iters=1000000", "--eval_interval=5"], out, corpus)
    while not any(line.startswith("5,") for line in _lines(out / "metrics.csv")):  # past the step-5 save
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted at step" in stdout + stderr and "SIGTERM" in stdout + stderr
    step = load_checkpoint(out / "last").step
    assert f"interrupted at step {step} (SIGTERM)" in stdout + stderr and step >= 5
    with open(out / "metrics.csv") as f:
        assert max(int(r["iter"]) for r in csv.DictReader(f) if r["iter"]) == step
    assert (out / "loss.png").is_file()
    assert cli.main(["train", "--backend", "torch", *TINY, "--data", str(corpus), "--out", str(out),
                     "--resume", f"--max_iters={step + 2}"]) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last").step == step + 2


# -- 3. two processes, one folder ------------------------------------------------------------------

def test_a_second_training_in_a_running_runs_folder_is_refused_naming_the_holder(tmp_path, corpus):
    out = tmp_path / "run"
    first = start(FOREVER, out, corpus)
    try:
        wait_for_checkpoint(first, out)
        for extra in (["--overwrite"], ["--resume"], []):
            second = start(["--max_iters=2", *extra], out, corpus)
            _, err = second.communicate(timeout=300)
            line = one_line(err)
            assert second.returncode == 2 and f"pid {first.pid}" in line and "in use" in line, (extra, line)
        assert first.poll() is None  # the first run goes on, its files untouched by the second
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert not list(out.rglob("*.tmp")) and load_checkpoint(out / "last").step > 0


def test_two_trainings_started_together_one_runs_one_is_refused(tmp_path, corpus):
    out = tmp_path / "run"
    procs = [start([*FOREVER, "--overwrite"], out, corpus) for _ in range(2)]
    try:
        while all(p.poll() is None for p in procs):  # until one of them gives up
            time.sleep(0.2)
        refused = next(p for p in procs if p.poll() is not None)
        running = next(p for p in procs if p is not refused)
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 2 and f"pid {running.pid}" in one_line(err)
        wait_for_checkpoint(running, out)
        assert running.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=120)
    assert running.returncode == 143


def test_a_killed_run_leaves_no_stale_lock(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    proc = start(FOREVER, out, corpus)
    wait_for_checkpoint(proc, out)
    proc.kill()  # SIGKILL: no handler runs; the kernel releases the lock
    proc.communicate(timeout=60)
    assert (out / lock.LOCK_FILE).read_text().strip() == str(proc.pid)  # the file stays, unlocked
    code = cli.main(["train", "--backend", "torch", *TINY, "--data", str(corpus), "--out", str(out),
                     "--resume", "--max_iters=2"])
    assert code == 0, capsys.readouterr().err


def test_convert_into_a_locked_folder_is_refused(tmp_path, capsys, run_dir):
    run = copy_run(run_dir, tmp_path / "run")
    before = (run / "last" / FILENAME).read_bytes()
    with lock.hold(run / "last"):  # as a training run holds its last/
        code = cli.main(["convert", "--from-nanogpt", str(tmp_path / "ckpt.pt"), "--vocab-from", str(tmp_path),
                         "--out", str(run / "last"), "--overwrite"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and f"pid {os.getpid()}" in line and "in use" in line
    assert (run / "last" / FILENAME).read_bytes() == before


# -- 4. read-only places ----------------------------------------------------------------------------

def test_resume_into_a_read_only_last_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys, run_dir,
                                                                        corpus):
    run = copy_run(run_dir, tmp_path / "run")
    read_only = (run / "last").resolve()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # root writes anywhere: pretend last/ is on a read-only mount
        if dir is not None and Path(dir).resolve() == read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code = cli.main(["train", "--backend", "torch", *TINY, "--data", str(corpus), "--out", str(run),
                     "--resume", "--max_iters=6"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and repr(str(run / "last")) in line and "cannot write" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# -- 5. unbounded requests ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_sample_more_text_than_memory_holds_is_refused(backend, monkeypatch, capsys, run_dir):
    from backends import load_backend

    monkeypatch.setattr(load_backend(backend).Trainer, "generate",
                        lambda *a, **k: pytest.fail("sample started generating an impossible request"))
    code = cli.main(["sample", "--checkpoint", str(run_dir), "--backend", backend, "--max-new-tokens", str(10 ** 13)])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "--max-new-tokens" in line and "memory" in line and "at most" in line


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_generate_refuses_what_cannot_fit_before_any_work(backend, one_layer_config):
    """The backends' own generate, the same bound: no allocation up front (JAX used to), no endless loop (torch)."""
    import importlib

    from backends import load_backend
    from common.errors import UserError

    model = load_backend(backend).create_model(one_layer_config)
    if backend == "torch":
        model.forward = lambda *a, **k: pytest.fail("generate ran the model for an impossible request")
    generate = importlib.import_module(f"backends.{backend}.sampling").generate
    with pytest.raises(UserError, match="--max-new-tokens 100,000,000,000,000 x --num-samples 2"):
        generate(model, np.zeros((2, 3), dtype=np.int32), 10 ** 14)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_generate_in_chunks_continues_the_prompt(backend, one_layer_config):
    """70 tokens (two chunks and a part) after a prompt longer than block_size: the prompt kept, dtype kept."""
    from backends import load_backend
    from common.config import TrainConfig

    trainer = load_backend(backend).Trainer(one_layer_config, TrainConfig(device="cpu", dtype="float32"))
    idx = np.arange(40, dtype=np.int32).reshape(2, 20) % one_layer_config.vocab_size
    out = trainer.generate(idx, 70, temperature=0)
    assert out.shape == (2, 90) and out.dtype == idx.dtype and np.array_equal(out[:, :20], idx)
    assert np.array_equal(out, trainer.generate(idx, 70, temperature=0))


# -- 7. a poisoned optimizer state -------------------------------------------------------------------

def test_resume_from_a_non_finite_optimizer_state_names_it(tmp_path, capsys, run_dir, corpus):
    run = copy_run(run_dir, tmp_path / "run")
    ckpt = load_checkpoint(run / "last")
    name = next(k for k in ckpt.optimizer if k.startswith("exp_avg/"))
    ckpt.optimizer[name] = np.full_like(ckpt.optimizer[name], np.nan)
    save_checkpoint(run / "last", ckpt)
    code = cli.main(["train", "--backend", "torch", *TINY, "--data", str(corpus), "--out", str(run),
                     "--resume", "--max_iters=6"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "non-finite optimizer state" in line and name in line and "learning_rate" not in line


# -- 8. the benchmark refuses up front (9, parity of a backend against itself: tests/test_bad_inputs.py) ---------------------------------------

def test_benchmark_refuses_a_missing_framework_before_any_worker(monkeypatch, capsys):
    import importlib.util

    from benchmarks import launch, run as bench_run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    monkeypatch.setattr(launch, "run_worker", lambda *a, **k: pytest.fail("a worker started"))
    code = bench_run.main(["--backend", "all", "--preset", "tiny", "--repeats", "1", "--quiet"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "needs jax" in line and "pip install 'microgpt[jax]'" in line



# -- 10. the end of a run on many processes ------------------------------------------------------------

def test_the_process_group_ends_in_order_at_the_end_of_the_loop(tmp_path, corpus):
    """Every rank destroys its process group itself, before rank 0's epilogue; not atexit."""
    code = ("import sys, torch.distributed as dist\n"
            "from backends import trainloop\n"
            "seen = []\n"
            "import backends.evaluate as ev\n"
            "real = ev.record_best\n"
            "ev.record_best = lambda *a, **k: (seen.append(dist.is_initialized()), real(*a, **k))[1]\n"
            "trainloop.train('torch', 'tiny', dict(device='cpu', parallel='ddp', max_iters=2, eval_interval=2),\n"
            "                sys.argv[1], sys.argv[2], progress=False)\n"
            "print(seen, dist.is_initialized(), flush=True)\n"
            "import os; os._exit(0)  # as a rank of torchrun leaves (parallel_launch.exit_rank)\n")
    done = subprocess.run([sys.executable, "-c", code, str(corpus), str(tmp_path / "run")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["[False]", "False"], done.stdout


def test_a_rank_of_torchrun_leaves_without_the_interpreters_exit(monkeypatch):
    from backends import parallel_launch

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    assert parallel_launch.exit_rank(3) == 3 and exits == []  # not a rank: the interpreter's own exit
    for key, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2"), ("TORCHELASTIC_RUN_ID", "x")):
        monkeypatch.setenv(key, value)
    parallel_launch.exit_rank(143)
    assert exits == [143]
