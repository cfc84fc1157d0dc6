"""The benchmark harness: a smoke run of both backends, the FLOP count, the timer's wait,
and every bad argument ending in one line and exit status 2."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends import host_memory

from benchmarks import peaks, profiles, report, schema, stats, timing
from benchmarks.run import parse_sweep
from benchmarks.worker import sanity_gate
from common.config import build_configs
from common.errors import UserError
from common.flops import flops_per_iter

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], env_extra: dict[str, str] | None = None, timeout: float = 240):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def data_env(shakespeare_path) -> dict[str, str]:
    return {"MICROGPT_DATA_DIR": str(shakespeare_path.parent)}


# -- a smoke run of both backends ----------------------------------------------------------------

@pytest.mark.slow
def test_smoke_both_backends_tiny(tmp_path, data_env):
    out = tmp_path / "bench.json"
    done = _run(["--backend", "all", "--preset", "tiny", "--steps", "4", "--warmup", "2", "--repeats", "1",
                 "--json", str(out), "--csv", str(tmp_path / "bench.csv"), "--plot", str(tmp_path / "plots"),
                 "--profile", str(tmp_path / "prof"), "--profile-steps", "2"], data_env)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert schema.validate(data) == []
    try:
        import jsonschema
    except ImportError:
        pass
    else:
        jsonschema.validate(data, schema.SCHEMA)
    assert data["settings"]["data"]["kind"] == "corpus"
    assert [r["backend"] for r in data["runs"]] == ["torch", "jax"]
    for run in data["runs"]:
        assert run["status"] == "ok", run.get("error")
        assert len(run["latency"]["times_s"]) == 4
        assert run["sanity"]["valid"]
        assert abs(run["sanity"]["initial_loss"] - math.log(65)) < 0.5
        assert run["metrics"]["flops_per_iter"] == flops_per_iter(build_configs("tiny")[0], 4)
        assert run["recompilations"] == 0
        during = run["matmul_during_run"]
        assert during["flops_per_s"] == max(r["best"] for side in ("before", "after") for r in during[side].values()) > 0
        assert set(during["before"]) == set(during["after"]) == set(run["matmul_peak"]["sizes"])
        assert run["metrics"]["mfu_during_run"] == pytest.approx(run["metrics"]["flops_per_s"] / during["flops_per_s"])
        assert Path(run["profile"]["trace"]).exists()
        if sys.platform.startswith("linux"):  # the default allocator for both backends, as `microgpt` runs
            expected = {"tcmalloc": "tcmalloc: libtcmalloc_minimal.so.4 preloaded", "reuse": "reuse: glibc"}
            assert run["process"]["allocator"].startswith(expected[host_memory.selected()]), run["process"]
    # fair by construction: the default run has no process setting that differs between the backends
    table = data["process_settings"]
    assert table["lanes"] == ["torch", "jax"] and table["differs"] == []
    assert {r["status"] for r in table["rows"]} == {"same"}
    assert {"device", "compute dtype", "compute threads", "float32 matmuls", "CPU affinity", "allocator",
            "$XLA_FLAGS", "$OMP_NUM_THREADS", "$LD_PRELOAD"} <= {r["setting"] for r in table["rows"]}
    assert "every lane ran under the same process settings" in done.stdout and "DIFFERS" not in done.stdout
    jax_run = data["runs"][1]
    assert jax_run["cold"]["compile_s"] > 0 and jax_run["cold"]["lower_s"] > 0
    assert jax_run["environment"]["memory"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    group = data["summary"][0]
    assert set(group["backends"]) == {"torch", "jax"}
    assert group["ratios"]["step_s.median"] == pytest.approx(
        group["backends"]["jax"]["step_s"]["median"] / group["backends"]["torch"]["step_s"]["median"])
    env = data["environment"]
    assert env["packages"]["numpy"] and env["host"]["cpu_count"] >= 1 and "commit" in env["git"]
    # the table: both backends side by side and their ratio
    header = next(line for line in done.stdout.splitlines() if line.startswith("figure"))
    assert header.split() == ["figure", "torch", "jax", "jax/torch"]
    assert "MFU vs machine's best matmul" in done.stdout and "MFU vs matmul peak during run" in done.stdout
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert [r["backend"] for r in rows] == ["torch", "jax", "jax/torch"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["categories.png", "step_time.png",
                                                                      "tokens_per_s.png"]
    # the profile's attribution: one table with both backends' categories
    table = done.stdout.split("where the step goes", 1)[1].splitlines()
    assert table[1].split()[:3] == ["category", "torch", "s/step"] and "jax/torch" in table[1]
    for run in data["runs"]:
        categories = run["profile"]["categories"]
        assert categories["steps"] == 2 and categories["shares"]["other"] < 0.03


@pytest.mark.slow
def test_missing_corpus_falls_back_to_synthetic_in_one_line(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    out = tmp_path / "b.json"
    done = _run(["--backend", "torch", "--preset", "tiny", "--steps", "2", "--warmup", "2", "--repeats", "1",
                 "--json", str(out), "--sweep", "batch_size=2,4", "--plot", str(tmp_path / "plots"), "--quiet"],
                {"MICROGPT_DATA_DIR": str(empty)})
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "synthetic" in line]
    assert len(notes) == 1 and "no corpus found" in notes[0]
    data = json.loads(out.read_text())
    assert schema.validate(data) == []
    assert data["settings"]["data"]["kind"] == "synthetic"
    assert [g["sweep"] for g in data["summary"]] == [{"batch_size": 2}, {"batch_size": 4}]
    assert [g["backends"]["torch"]["tokens_per_iter"] for g in data["summary"]] == [32, 64]
    assert (tmp_path / "plots" / "step_time_vs_batch_size.png").exists()


# -- bad arguments: one line, exit status 2 --------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--backend", "tensorflow"], "unknown backend"),
    (["--preset", "huge"], "unknown preset"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--warmup", "0"], "--warmup must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--sweep", "batch_size"], "KEY=V1,V2"),
    (["--sweep", "n_embd=33,64", "--preset", "tiny"], "not divisible"),
    (["--sweep", "nope=1,2"], "unknown config key"),
    (["--steps", "two"], "invalid int value"),
    (["--data", "/no/such/file.txt"], "does not exist"),
])
def test_bad_arguments_exit_2_with_one_line(args, words, data_env):
    done = _run(args, data_env, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert words in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == ""


def _has_gpu() -> bool:
    return Path("/proc/driver/nvidia").exists()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_gpu_without_one_exits_2_with_one_line(backend, data_env):
    done = _run(["--backend", backend, "--device", "gpu", "--preset", "tiny", "--quiet"], data_env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--device gpu" in lines[0] and "Traceback" not in done.stderr


def test_help_explains_every_flag():
    done = _run(["--help"], timeout=60)
    assert done.returncode == 0
    for flag in ("--backend", "--preset", "--device", "--dtype", "--compile", "--no-compile", "--steps", "--warmup",
                 "--repeats", "--batch-size", "--sweep", "--data", "--json", "--csv", "--plot", "--profile", "--quiet"):
        assert flag in done.stdout


# -- the FLOP count -------------------------------------------------------------------------------

def test_flops_against_a_hand_count():
    model, train = build_configs("tiny")  # L=2, C=32, H=2, T=16, vocab 65, biases
    C, L, T, V = 32, 2, 16, 65
    per_layer = (2 * C) + (C * 3 * C + 3 * C) + (C * C + C) + (2 * C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    N = L * per_layer + 2 * C + V * C  # blocks, ln_f, token embedding = LM head (positions left out)
    assert N == 27552
    per_token = 6 * N + 12 * L * 2 * 16 * T  # weights fwd+bwd, attention's QK^T and AV
    assert flops_per_iter(model, 4) == per_token * 4 * T == 11_366_400
    run = {"config": {"model": vars(model) | {}, "train": {"batch_size": 4, "tf32": False}},
           "latency": {"times_s": [0.01, 0.02, 0.03]}, "throughput": {"step_s": 0.02},
           "matmul_peak": {"flops_per_s": 1e11, "source": "test"},
           "environment": {"device": {"type": "cpu", "name": "x"}, "dtype": "float32"}}
    m = report.run_metrics(run)
    assert m["flops_per_iter"] == 11_366_400
    assert m["flops_per_s"] == pytest.approx(11_366_400 / 0.02)
    assert m["mfu_measured"] == pytest.approx(11_366_400 / 0.02 / 1e11)
    assert m["mfu_vendor"] is None and m["vendor_peak"]["source"].startswith("n/a")
    assert m["tokens_per_s"] == pytest.approx(64 / 0.02)


# -- the timer waits for asynchronous work ----------------------------------------------------------

def test_timer_waits_for_jax_async_work():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from backends.jax.train import Trainer

    model, train = build_configs("tiny", {"device": "cpu"})
    trainer = Trainer(model, train)
    a = jnp.ones((512, 512), jnp.float32) / 512

    @jax.jit
    def heavy(m):  # ~1 GFLOP: tens of milliseconds on a laptop CPU, ~0.1 ms to dispatch
        for _ in range(4):
            m = jnp.tanh(m @ m)
        return m.sum()

    heavy(a).block_until_ready()  # compile
    floors = []
    for _ in range(3):
        t0 = time.perf_counter()
        heavy(a).block_until_ready()
        floors.append(time.perf_counter() - t0)
    floor = min(floors)
    # through the harness's helpers, with the Trainer's wait. Without the wait the clock would
    # read the ~0.1 ms dispatch, hundreds of times less than the floor; a shared machine's rate
    # drifts by tens of percent either way, so the bound is half the floor
    seconds, _ = timing.timed(lambda: heavy(a), trainer.wait)
    assert seconds >= 0.5 * floor
    times, _ = timing.latency(lambda x, y: heavy(x), trainer.wait, [(a, None)] * 3)
    assert min(times) >= 0.5 * floor
    total, _ = timing.throughput(lambda x, y: heavy(x), trainer.wait, [(a, None)] * 3)
    assert total >= 3 * 0.5 * floor
    # and without the wait the clock would have stopped early: dispatch alone is cheap
    t0 = time.perf_counter()
    pending = heavy(a)
    dispatch = time.perf_counter() - t0
    pending.block_until_ready()
    assert dispatch < seconds


def test_latency_and_throughput_count_only_the_steps():
    ticks = iter(range(100))
    clock = lambda: float(next(ticks))  # noqa: E731 - each read advances one second
    calls = []
    times, loss = timing.latency(lambda x, y: x + y, lambda v: calls.append(v), [(1, 2), (3, 4)],
                                 after_each=lambda: calls.append("bar"), clock=clock)
    assert times == [1.0, 1.0] and loss == 7 and calls == [3, "bar", 7, "bar"]
    total, loss = timing.throughput(lambda x, y: x * y, lambda v: calls.append(("wait", v)), [(1, 2), (3, 4)],
                                    clock=clock)
    assert total == 1.0 and loss == 12 and calls[-1] == ("wait", 12)


# -- pieces -------------------------------------------------------------------------------------------

def test_summary_statistics():
    s = stats.summarize([5, 1, 4, 2, 3])
    assert s["n"] == 5 and s["median"] == 3 and s["min"] == 1 and s["max"] == 5
    assert s["p10"] == pytest.approx(1.4) and s["p90"] == pytest.approx(4.6)
    assert stats.summarize([])["median"] is None
    assert stats.ratio(1.0, 0) is None and stats.ratio(None, 1) is None and stats.ratio(3, 2) == 1.5


def test_vendor_peaks():
    assert peaks.vendor_peak("cuda", "NVIDIA A100-SXM4-80GB", "bfloat16", False)["flops_per_s"] == 312e12
    assert peaks.vendor_peak("cuda", "NVIDIA A100-SXM4-80GB", "float32", True)["flops_per_s"] == 156e12
    assert peaks.vendor_peak("cuda", "NVIDIA A100-SXM4-80GB", "float32", False)["flops_per_s"] == 19.5e12
    assert peaks.vendor_peak("cuda", "NVIDIA H100 80GB HBM3", "bfloat16", False)["flops_per_s"] == 989.4e12
    assert peaks.vendor_peak("cuda", "NVIDIA H100 PCIe", "bfloat16", False)["flops_per_s"] == 756e12
    assert peaks.vendor_peak("cuda", "NVIDIA H200", "float32", False)["flops_per_s"] == 67e12
    for args in (("cuda", "NVIDIA GeForce RTX 4090", "bfloat16", False), ("cpu", "AMD EPYC", "float32", False)):
        out = peaks.vendor_peak(*args)
        assert out["flops_per_s"] is None and out["source"].startswith("n/a")


def test_sanity_gate():
    ok = sanity_gate(4.2, 3.9, [4.1], 65, synthetic=False)
    assert ok["valid"]
    assert not sanity_gate(4.2, 4.3, [4.1], 65, synthetic=False)["valid"]  # did not fall
    assert not sanity_gate(9.0, 3.9, [4.1], 65, synthetic=False)["valid"]  # far from ln(65)
    assert not sanity_gate(4.2, float("nan"), [4.1], 65, synthetic=False)["valid"]
    assert sanity_gate(4.18, 4.19, [4.2], 65, synthetic=True)["valid"]  # random tokens: must not rise


def test_schema_checker_finds_problems():
    assert schema.validate({"schema_version": 1})  # many missing keys
    bad = {"a": 1}
    assert schema.validate(bad, {"type": "object", "properties": {"a": {"type": "string"}}}) == [
        "$.a: expected string, got int"]
    assert schema.validate([1, -1], {"type": "array", "items": {"type": "integer", "minimum": 0}}) == [
        "$[1]: -1 < minimum 0"]


def test_sweep_parsing():
    assert parse_sweep("batch_size=4,8,16") == ("batch_size", [4, 8, 16])
    assert parse_sweep("n-embd=64, 128") == ("n_embd", [64, 128])
    assert parse_sweep(None) is None
    for bad in ("batch_size", "batch_size=", "batch_size=4,4", "batch_size=four"):
        with pytest.raises(UserError):
            parse_sweep(bad)


def test_profile_self_time_nesting(tmp_path):
    events = [
        {"ph": "X", "name": "train_step", "ts": 0, "dur": 100, "pid": 1, "tid": 1},
        {"ph": "X", "name": "outer", "ts": 10, "dur": 50, "pid": 1, "tid": 1},
        {"ph": "X", "name": "inner", "ts": 20, "dur": 20, "pid": 1, "tid": 1},
        {"ph": "X", "name": "other_thread", "ts": 15, "dur": 30, "pid": 1, "tid": 2},
        {"ph": "X", "name": "after", "ts": 200, "dur": 30, "pid": 1, "tid": 1},
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    s = profiles.summarize(path)
    table = {r["name"]: r for r in s["top"]}
    assert set(table) == {"outer", "inner", "other_thread"}  # only what lies inside the steps
    assert table["outer"]["self_us"] == 30 and table["inner"]["self_us"] == 20
    assert s["step_wall_us"] == 100


def test_the_scaling_table_takes_the_median_of_repeats_as_everywhere_else():
    from benchmarks import parallel

    def run(step_s, tps):
        return {"status": "ok", "backend": "torch", "spec": {"devices": 1}, "memory": {},
                "metrics": {"step_s": {"median": step_s}, "tokens_per_s": tps}}

    row = parallel.scaling_table([run(0.010, 1000.0), run(0.020, 3000.0)]).splitlines()[-1].split()
    assert row[:4] == ["torch", "1", "15.00", "2,000"]  # np.median: the mean of the two middle repeats
