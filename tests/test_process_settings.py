"""Fair by construction: both backends run under the same process settings, the benchmark shows
them side by side, and a difference nobody asked for is marked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import host_memory, load_backend, process
from benchmarks import process_table
from benchmarks.run import main as bench_main

REPO = Path(__file__).resolve().parents[1]


def _runs(**per_lane):
    return [{"lane": lane, "process": values} for lane, values in per_lane.items()]


def test_rows_are_same_variant_or_differs():
    same = {"allocator": "reuse", "compute threads": "2", "$OMP_NUM_THREADS": "unset"}
    lanes = [{"name": "torch"}, {"name": "jax"},
             {"name": "torch malloc=system", "declares": {"allocator": "malloc=system"}},
             {"name": "jax malloc=system", "declares": {"allocator": "malloc=system"}}]
    table = process_table.compare(_runs(**{"torch": same, "jax": same,
                                           "torch malloc=system": same | {"allocator": "system"},
                                           "jax malloc=system": same | {"allocator": "system"}}), lanes)
    status = {r["setting"]: (r["status"], r["variants"]) for r in table["rows"]}
    assert status == {"allocator": ("variant", ["malloc=system"]), "compute threads": ("same", []),
                      "$OMP_NUM_THREADS": ("same", [])}
    assert table["differs"] == []
    text = process_table.format_table(table)
    assert "variant: malloc=system" in text and "differ only where a named variant says so" in text
    assert "$OMP_NUM_THREADS" not in text  # unset in every lane: counted, not listed


def test_a_setting_one_backend_alone_gets_is_marked_as_not_comparable():
    torch_env = {"allocator": "reuse", "$OMP_NUM_THREADS": "1"}
    jax_env = {"allocator": "system", "$OMP_NUM_THREADS": "unset"}
    table = process_table.compare(_runs(torch=torch_env, jax=jax_env), [{"name": "torch"}, {"name": "jax"}])
    assert table["differs"] == ["allocator", "$OMP_NUM_THREADS"]
    text = process_table.format_table(table)
    assert "NOT COMPARABLE" in text and text.count("DIFFERS") == 2
    # two lanes of one variant that still disagree are not excused by the variant either
    lanes = [{"name": "a", "declares": {"allocator": "malloc=jemalloc"}},
             {"name": "b", "declares": {"allocator": "malloc=jemalloc"}}]
    mixed = process_table.compare(_runs(a={"allocator": "jemalloc"}, b={"allocator": "reuse"}), lanes)
    assert mixed["differs"] == ["allocator"]


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_each_backend_describes_its_settings_in_the_same_words(name):
    backend = load_backend(name)
    with process.settings(backend, _cpu_config()):
        described = process.speed_settings(backend, backend.select_device("cpu"), "float32")
    assert list(described)[:6] == ["device", "compute dtype", "compute threads", "float32 matmuls", "CPU affinity",
                                   "allocator"]
    assert described["device"].startswith("cpu: ") and described["float32 matmuls"] == "full float32"
    assert described["CPU affinity"] == process.cpu_list() and described["$XLA_FLAGS"] == os.environ.get("XLA_FLAGS", "unset")
    if name == "torch":
        import torch

        assert described["compute threads"] == str(torch.get_num_threads())
    else:
        assert described["compute threads"] == str(len(os.sched_getaffinity(0)))


def test_tf32_is_named_in_both_backends_words():
    from backends.jax import device as jax_device
    from backends.torch import device as torch_device

    assert set(jax_device.MATMUL_PRECISION_NAMES.values()) >= set(torch_device.MATMUL_PRECISION_NAMES.values())


def _cpu_config():
    from common.config import TrainConfig

    return TrainConfig(device="cpu", dtype="float32")


def test_the_cpu_list_is_written_as_taskset_writes_it(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {8, 0, 1, 2, 5, 7}, raising=False)
    assert process.cpu_list() == "0-2,5,7-8"


def test_an_allocator_that_is_not_installed_is_refused_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(host_memory, "library", lambda name: None)
    code = bench_main(["--preset", "tiny", "--quiet", "--malloc", "reuse,jemalloc"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "libjemalloc.so.2 is not installed" in err and "apt-get install libjemalloc2" in err
    code = bench_main(["--preset", "tiny", "--quiet", "--malloc", "hoard"])
    err = capsys.readouterr().err
    assert code == 2 and "--malloc 'hoard': choose from reuse, system, jemalloc, tcmalloc" in err


@pytest.mark.slow
def test_an_allocator_variant_is_its_own_column_and_labelled(tmp_path, shakespeare_path):
    """--malloc: each allocator a lane of each backend; the settings table names the variant."""
    out = tmp_path / "bench.json"
    # reuse chosen as the default here, whether or not tcmalloc (the default where installed) is
    env = dict(os.environ, MICROGPT_DATA_DIR=str(shakespeare_path.parent), MICROGPT_MALLOC="reuse")
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--backend", "torch", "--preset", "tiny",
                           "--malloc", "reuse,system", "--steps", "2", "--warmup", "1", "--repeats", "1", "--quiet",
                           "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert [ln["name"] for ln in data["settings"]["lanes"]] == ["torch", "torch malloc=system"]
    rows = {r["setting"]: r for r in data["process_settings"]["rows"]}
    assert rows["allocator"]["status"] == "variant" and rows["allocator"]["variants"] == ["malloc=system"]
    assert rows["allocator"]["values"]["torch malloc=system"] == "system: glibc's defaults"
    assert rows["allocator"]["values"]["torch"].startswith("reuse: glibc")
    assert data["process_settings"]["differs"] == []
    assert "variant: malloc=system" in done.stdout and "differ only where a named variant says so" in done.stdout
