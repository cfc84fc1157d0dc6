"""backends/host_memory: the C allocator every program runs with, the same for both backends.

Each case runs in a fresh interpreter (numpy only), because the setting is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import host_memory
from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, numpy as np
from backends.host_memory import apply
print(apply())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**25); del a  # 256 MiB, like a step's activations: allocated, freed ...
before = faults()
for _ in range(3):  # ... and allocated again by the next step
    a = np.ones(2**25); del a
print((faults() - before) // 3)
"""
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and LD_PRELOAD are Linux's")


def _env(malloc: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (host_memory.ENV, "LD_PRELOAD")}
    return env | ({host_memory.ENV: malloc} if malloc is not None else {})


def _run(malloc: str | None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=_env(malloc), capture_output=True, text=True,
                         check=True)
    description, faults = out.stdout.strip().splitlines()
    return description, int(faults)


def test_the_default_is_tcmalloc_where_it_is_installed_else_reuse(monkeypatch):
    monkeypatch.setattr(host_memory, "library", lambda name: f"/lib/{host_memory.PRELOADED[name][0]}")
    assert host_memory.default() == "tcmalloc" and host_memory.selected({}) == "tcmalloc"
    assert host_memory.selected({host_memory.ENV: "system"}) == "system"
    monkeypatch.setattr(host_memory, "library", lambda name: None)
    assert host_memory.default() == "reuse" and host_memory.selected({}) == "reuse"


@LINUX
def test_a_program_starts_again_with_the_default_allocator():
    done = subprocess.run([sys.executable, "-m", "backends.host_memory"], cwd=ROOT, env=_env(None),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if host_memory.library("tcmalloc") is not None:
        assert done.stdout.strip() == "tcmalloc: libtcmalloc_minimal.so.4 preloaded"
    else:
        assert done.stdout.startswith("reuse: glibc")


@LINUX
def test_freed_memory_is_reused_without_page_faults_in_a_process_not_started_with_tcmalloc():
    description, faults = _run(None)  # the default, in a process that cannot preload any more: reuse
    assert description.startswith("reuse: glibc") and "mallopt" in description
    assert faults < 50, f"{faults} page faults per 256 MiB re-allocation: freed memory was not reused"


@LINUX
def test_system_default_faults_again_so_the_test_above_can_fail():
    description, faults = _run("system")
    assert description == "system: glibc's defaults"
    assert faults > 100, "glibc's default no longer returns large blocks to the system; revisit host_memory"


def test_an_unknown_allocator_is_one_line_and_exit_status_2():
    done = subprocess.run([sys.executable, "-m", "backends.host_memory"], cwd=ROOT, env=_env("hoard"),
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "MICROGPT_MALLOC='hoard'" in done.stderr and "jemalloc" in done.stderr
    with pytest.raises(UserError):
        host_memory.selected({host_memory.ENV: "hoard"})


@LINUX
@pytest.mark.parametrize("name", ["jemalloc", "tcmalloc"])
def test_a_preloaded_allocator_starts_the_program_again_with_it(name):
    if host_memory.library(name) is None:
        pytest.skip(f"{host_memory.PRELOADED[name][1]} is not installed (.ci/run installs it)")
    done = subprocess.run([sys.executable, "-m", "backends.host_memory"], cwd=ROOT, env=_env(name),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name}: {host_memory.PRELOADED[name][0]} preloaded"  # found in /proc/self/maps


def test_a_missing_library_is_refused_naming_the_debian_package(monkeypatch):
    monkeypatch.setattr(host_memory, "library", lambda name: None)
    for name, package in (("jemalloc", "libjemalloc2"), ("tcmalloc", "libtcmalloc-minimal4")):
        with pytest.raises(UserError, match=f"apt-get install {package}") as info:
            host_memory.check_available(name)
        assert "\n" not in str(info.value)
    assert host_memory.check_available("reuse") is None and host_memory.check_available("system") is None


@LINUX
def test_a_child_gets_exactly_one_allocator_preloaded(monkeypatch):
    monkeypatch.setattr(host_memory, "library", lambda name: f"/lib/{host_memory.PRELOADED[name][0]}")
    env = {"LD_PRELOAD": "/lib/libjemalloc.so.2 /opt/libprofiler.so", "PATH": "/bin"}
    child = host_memory.child_env("tcmalloc", env)
    assert child["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4 /opt/libprofiler.so"
    assert child[host_memory.ENV] == "tcmalloc" and child["PATH"] == "/bin"
    plain = host_memory.child_env("reuse", env)
    assert plain["LD_PRELOAD"] == "/opt/libprofiler.so" and plain[host_memory.ENV] == "reuse"
    assert "LD_PRELOAD" not in host_memory.child_env("system", {"LD_PRELOAD": "/lib/libjemalloc.so.2"})
