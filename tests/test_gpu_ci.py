"""``.ci/gpu``, the checks of a GPU machine (issue 20), as far as a CPU machine can see it: without a
GPU it stops in one line with exit status 2 before any work, and its summary table reads what its
steps leave in the output folder (here a CPU benchmark, a parity report, pytest's JUnit XML)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_ci

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "gpu"
NO_GPU = not Path("/proc/driver/nvidia/version").exists()


def _script(*args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _one_line_exit_2(done) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(".ci/gpu: ") and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    return lines[0]


def test_the_script_is_executable_bash_that_stops_at_the_first_error():
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text


def test_without_an_output_folder_it_says_how_to_call_it(tmp_path):
    assert "usage: .ci/gpu OUTPUT_FOLDER" in _one_line_exit_2(_script())


@pytest.mark.skipif(not NO_GPU, reason="this machine has an NVIDIA driver")
def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path):
    line = _one_line_exit_2(_script(str(tmp_path / "out")))
    assert "no NVIDIA GPU" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not NO_GPU, reason="this machine has an NVIDIA driver")
def test_a_driver_without_a_cuda_gpu_in_the_frameworks_is_one_line_too(tmp_path):
    """nvidia-smi on the PATH (a stand-in here), but torch and JAX see no GPU: the preflight says which."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    line = _one_line_exit_2(_script(str(tmp_path / "out"), env_extra={"PATH": f"{bin_dir}:{os.environ['PATH']}"}))
    assert "cannot run the GPU checks" in line and "sees no CUDA GPU" in line, line
    assert not (tmp_path / "out").exists()


def test_the_summary_reads_every_result_the_steps_leave(tmp_path, shakespeare_path, capsys):
    env = dict(os.environ, MICROGPT_DATA_DIR=str(shakespeare_path.parent))
    bench = subprocess.run([sys.executable, "-m", "benchmarks.run", "--backend", "torch", "--device", "cpu",
                            "--preset", "tiny", "--steps", "2", "--warmup", "1", "--repeats", "1", "--quiet",
                            "--compile-mode", "eager", "--json", str(tmp_path / "bench-tiny.json")],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-2000:]
    parity = subprocess.run([sys.executable, "-m", "backends.cli", "parity", "--device", "cpu", "--dtype", "float32",
                             "--checks", "schedule", "--json", str(tmp_path / "parity-float32.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert parity.returncode == 0, parity.stderr[-2000:]
    (tmp_path / "steps.tsv").write_text("gpu-tests\t1\t200\nbench-tiny\t0\t12\nbench-late\tskip\t0\n")
    (tmp_path / "gpu-tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="200.5">'
        '<testcase name="test_a" time="1"/><testcase name="test_b" time="2"><failure message="x"/></testcase>'
        '<testcase name="test_c" time="0"><skipped/></testcase></testsuite></testsuites>')
    assert gpu_ci.main(["summary", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text == (tmp_path / "summary.txt").read_text()
    cells = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]
    for row in (["gpu-tests", "exit status 1", "200 s"], ["bench-tiny", "ok", "12 s"],
                ["bench-late", "skipped: out of time", "0 s"], ["GPU tests", "1 passed, 1 failed, 1 skipped", "200 s"],
                ["FAIL test_b", "failure", "2 s"]):
        assert row in cells, (row, text)
    parity_row = next(c for c in cells if c[0] == "parity float32 (torch vs jax)")
    assert parity_row[1].endswith("rows pass") and parity_row[1].split("/")[0] == parity_row[1].split("/")[1].split()[0]
    assert ["benchmark", "lane", "dtype", "step ms", "tokens/s", "MFU vendor", "dev MiB", "compile s"] in cells
    report = json.loads((tmp_path / "bench-tiny.json").read_text())
    median = report["summary"][0]["backends"]["torch"]["step_s"]["median"]
    bench_row = next(c for c in cells if c[:2] == ["tiny", "torch"])
    assert bench_row[2:4] == ["float32", f"{median * 1e3:.2f}"] and bench_row[5:7] == ["n/a", "n/a"], bench_row  # a CPU


def test_the_summary_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert gpu_ci.main(["summary", str(tmp_path / "nowhere")]) == 2
    assert gpu_ci.main(["bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a folder" in err[0] and "usage" in err[1]
