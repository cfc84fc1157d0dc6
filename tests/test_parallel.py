"""Many devices (issue 13), on the CPU: torch on 2 gloo processes (through ``microgpt train
--devices 2``, i.e. torch's own launcher), JAX on 2 host devices in a subprocess (the count is
fixed when JAX starts). Under ddp and fsdp, with gradient accumulation, training equals one
device in float64; an fsdp checkpoint written on 2 devices resumes on 1 device in both backends;
bad inputs are one line and exit status 2. Runs are 4 steps of the tiny preset."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import parallel
from common.checkpoint import load_checkpoint
from common.config import build_configs
from common.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RUN = ["--preset", "tiny", "--no-progress", "--device=cpu", "--dtype=float64", "--max_iters=4", "--eval_interval=2"]
SAME = 1e-12  # one device against many, same framework, float64: round-off of a different summation order
ACROSS = 1e-9  # torch against JAX after 4 steps in float64 (as the parity suite's rows)


def microgpt(*args, data: Path, out: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "backends.cli", "train", *map(str, args), "--data", str(data)]
    cmd += ["--out", str(out)] if out else []
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(out: Path) -> list[float]:
    with open(out / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def assert_same_run(a: Path, b: Path, tol: float, steps: int | None = None) -> None:
    la, lb = losses(a)[:steps], losses(b)[:steps]
    assert len(la) == len(lb) and np.max(np.abs(np.subtract(la, lb))) <= tol, (la, lb)
    ca, cb = load_checkpoint(a / "last"), load_checkpoint(b / "last")
    assert ca.step == cb.step
    for name in ("weights", "optimizer"):
        x, y = getattr(ca, name), getattr(cb, name)
        assert set(x) == set(y)
        worst = max(float(np.max(np.abs(np.asarray(x[k], np.float64) - np.asarray(y[k], np.float64)))) for k in x)
        assert worst <= tol, (name, worst)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("one") / "out"
    microgpt("--backend", "torch", *RUN, data=corpus, out=out)
    return out


# -- the shared slicing ----------------------------------------------------------------------------

def test_micro_batches_and_rank_slices_cover_the_global_batch_in_order():
    batch = np.arange(24).reshape(12, 2)
    parts = [parallel.rank_slice(m, r, 3) for m in parallel.micro_batches(batch, 2) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), batch)
    assert np.array_equal(parallel.stacked_micro_batches(batch, 2)[1], batch[6:])


@pytest.mark.parametrize("overrides, words", [
    (dict(devices=2), "--parallel ddp"),
    (dict(devices=3, parallel="ddp"), "multiple of 3"),
    (dict(devices=2, parallel="fsdp", gradient_accumulation_steps=4), "multiple of 8"),
    (dict(parallel="mesh"), "choose one of: none, ddp, fsdp"),
])
def test_bad_parallel_configs_are_refused(overrides, words):
    with pytest.raises(UserError, match=words):
        build_configs("tiny", overrides)


# -- torch: 2 gloo processes through torch's launcher ----------------------------------------------

def test_torch_ddp_on_2_processes_equals_1(tmp_path, corpus, one_device):
    out = tmp_path / "ddp"
    done = microgpt("--backend", "torch", "--devices", 2, "--parallel", "ddp", *RUN, data=corpus, out=out)
    assert done.stdout.count("done at step 4") == 1  # rank 0 alone reports
    assert_same_run(one_device, out, SAME)


def test_torch_fsdp_checkpoint_resumes_on_1_device_in_both_backends(tmp_path, corpus, one_device):
    """fsdp with K=2 micro-batches for 2 steps on 2 processes, then 2 more on 1 device: torch
    matches the uninterrupted 1-device run to round-off, JAX to the cross-framework tolerance."""
    out = tmp_path / "fsdp"
    microgpt("--backend", "torch", "--devices", 2, "--parallel", "fsdp", "--gradient_accumulation_steps=2",
             *RUN[:-2], "--max_iters=2", "--eval_interval=2", data=corpus, out=out)
    assert np.max(np.abs(np.subtract(losses(out), losses(one_device)[:2]))) <= SAME
    sample = subprocess.run([sys.executable, "-m", "backends.cli", "sample", "--checkpoint", str(out), "--device", "cpu",
                             "--max-new-tokens", "5", "--prompt", "KING"], cwd=REPO, capture_output=True, text=True)
    assert sample.returncode == 0 and sample.stdout.startswith("KING"), sample.stderr[-2000:]  # on one device
    for backend, tol in (("torch", SAME), ("jax", ACROSS)):
        resumed = tmp_path / backend
        subprocess.run(["cp", "-r", str(out), str(resumed)], check=True)
        microgpt("--backend", backend, "--resume", "--no-progress", "--max_iters=4", data=corpus, out=resumed)
        ckpt = load_checkpoint(resumed / "last")
        assert (ckpt.train_config.parallel, ckpt.train_config.devices) == ("none", 1)
        assert_same_run(one_device, resumed, tol)


def test_torch_fsdp_on_1_device_is_accepted(tmp_path, corpus, one_device):
    out = tmp_path / "fsdp1"
    microgpt("--backend", "torch", "--parallel", "fsdp", *RUN, data=corpus, out=out)
    assert_same_run(one_device, out, SAME)


def test_torch_ctrl_c_under_the_launcher_saves_once_and_exits_130(tmp_path, corpus):
    """Ctrl-C reaches every process of the terminal's group: the launcher, which forwards it, and the
    ranks, which so get it twice; rank 0 saves last/ and all stop at the same step."""
    import signal
    import time

    out = tmp_path / "ctrl-c"
    cmd = [sys.executable, "-m", "backends.cli", "train", "--backend", "torch", "--devices", "2", "--parallel", "ddp",
           "--preset", "tiny", "--no-progress", "--device=cpu", "--max_iters=1000000", "--eval_interval=50",
           "--data", str(corpus), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "last" / "checkpoint.safetensors").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "interrupted at step" in output, output[-3000:]
    # last/ holds the step it stopped at (step 0 too: a loaded machine may deliver Ctrl-C before the first step)
    stopped = int(output.split("interrupted at step ")[1].split()[0].rstrip(":"))
    assert load_checkpoint(out / "last").step == stopped


# -- JAX: 2 host devices in one subprocess ----------------------------------------------------------

JAX_RUNS = """
import json, sys
from backends.jax import parallel
parallel.request_host_devices(2)
import jax
from backends import trainloop
data, root = sys.argv[1:3]
base = dict(device="cpu", dtype="float64", max_iters=4, eval_interval=2)
runs = {"one": {}, "ddp": dict(devices=2, parallel="ddp"),
        "fsdp": dict(devices=2, parallel="fsdp", gradient_accumulation_steps=2, max_iters=2)}
for name, extra in runs.items():
    trainloop.train("jax", "tiny", base | extra, data, f"{root}/{name}", progress=False)
from backends.jax.train import Trainer
from common.config import build_configs
shardings = {}
for mode in ("ddp", "fsdp"):
    t = Trainer(*build_configs("tiny", dict(device="cpu", devices=2, parallel=mode)))
    leaves = jax.tree.leaves(t._state)
    shardings[mode] = {"devices": sorted({len(a.devices()) for a in leaves}),
                       "sharded": sum(not a.sharding.is_fully_replicated for a in leaves)}
    import numpy as np
    from backends.jax import hlo
    x = np.zeros((t.train_config.batch_size, t.model_config.block_size), np.int32)
    t.compile(x, x)
    cats = hlo.categories(t.compiled_step.as_text(), tokens=x.size, vocab=t.model_config.vocab_size,
                          n_embd=t.model_config.n_embd)
    shardings[mode]["communication"] = sum(c == "communication" for c in cats.values())
print(json.dumps({"devices": jax.device_count(), "shardings": shardings}))
"""


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory, corpus) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("jax")
    done = subprocess.run([sys.executable, "-c", JAX_RUNS, str(corpus), str(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


def test_jax_lays_ddp_out_replicated_and_fsdp_sharded_on_2_devices(jax_runs):
    _, info = jax_runs
    assert info["devices"] == 2
    ddp, fsdp = info["shardings"]["ddp"], info["shardings"]["fsdp"]
    assert (ddp["devices"], ddp["sharded"]) == ([2], 0)
    assert fsdp["devices"] == [2] and fsdp["sharded"] > 10
    # the collectives XLA inserts are the profile's "communication" (backends/jax/hlo.py)
    assert ddp["communication"] > 0 and fsdp["communication"] > 0


def test_jax_ddp_on_2_devices_equals_1(jax_runs):
    root, _ = jax_runs
    assert_same_run(root / "one", root / "ddp", SAME)


def test_jax_fsdp_checkpoint_resumes_on_1_device_in_both_backends(jax_runs, tmp_path, corpus, one_device):
    root, _ = jax_runs
    assert np.max(np.abs(np.subtract(losses(root / "fsdp"), losses(root / "one")[:2]))) <= SAME
    for backend, reference, tol in (("jax", root / "one", SAME), ("torch", one_device, ACROSS)):
        resumed = tmp_path / backend
        subprocess.run(["cp", "-r", str(root / "fsdp"), str(resumed)], check=True)
        microgpt("--backend", backend, "--resume", "--no-progress", "--max_iters=4", data=corpus, out=resumed)
        assert_same_run(reference, resumed, tol)


# -- bad inputs: one line, exit status 2, no traceback ----------------------------------------------

@pytest.mark.parametrize("backend, args, words", [
    ("torch", ["--devices", 64, "--parallel", "ddp", "--batch_size=64"], "has only"),
    ("jax", ["--devices", 64, "--parallel", "ddp", "--batch_size=64"], "has only"),
    ("torch", ["--devices", 3, "--parallel", "ddp"], "multiple of 3"),
    ("jax", ["--devices", 2, "--parallel", "fsdp", "--batch_size=5"], "multiple of 2"),
    ("torch", ["--devices", 2], "--parallel ddp"),
])
def test_bad_inputs_are_one_line(tmp_path, corpus, backend, args, words):
    done = microgpt("--backend", backend, *RUN, *args, data=corpus, out=tmp_path / "out", check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


# -- the benchmark's device counts -------------------------------------------------------------------

def test_benchmark_expands_each_worker_per_device_count():
    from benchmarks import parallel as bench_parallel

    assert bench_parallel.parse_devices("2,1", "fsdp") == [1, 2]
    for text, mode, words in (("1,2", None, "--parallel ddp"), (None, "ddp", "needs --devices"), ("0", "ddp", "positive")):
        with pytest.raises(UserError, match=words):
            bench_parallel.parse_devices(text, mode)
    item = {"lane": "jax", "spec": {"backend": "jax", "label": "jax 1/1", "overrides": {"device": "cpu"}}}
    one, two = bench_parallel.expand([item], [1, 2], "fsdp")
    assert one["spec"]["overrides"] | {} == {"device": "cpu", "parallel": "none", "devices": 1}
    assert two["lane"] == "jax x2" and two["spec"]["overrides"]["parallel"] == "fsdp"
    assert "--xla_force_host_platform_device_count=2" in two["spec"]["xla_flags"]
    assert "torch.distributed.run" in bench_parallel.worker_command({"backend": "torch", "devices": 2})
    # with --profile each device count traces into a folder of its own (torch-x1, torch-x2)
    traced = {"lane": "torch", "spec": {"backend": "torch", "label": "torch 1/1", "overrides": {},
                                        "profile_dir": "/p/torch"}}
    assert [w["spec"]["profile_dir"] for w in bench_parallel.expand([traced], [1, 2], "ddp")] == ["/p/torch-x1",
                                                                                                 "/p/torch-x2"]
