"""Same device or a clear refusal (issue 20): every command that runs both backends resolves each
backend's device before any work and, if their types differ, stops in one line naming both and the
fix, exit status 2. On this CPU machine one backend is made to report a GPU: in the benchmark's
parent by replacing its probe (``benchmarks.devices.probe``), in ``microgpt parity`` by replacing the
JAX backend's ``describe_device``."""

from __future__ import annotations

import pytest

from backends.device_check import check_same_device, jax_cuda_install
from common.errors import UserError

H100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "cuda": "13.0"}
XEON = {"type": "cpu", "name": "Intel Xeon", "cuda": None}


def test_one_device_type_passes():
    check_same_device({"torch": XEON, "jax": dict(XEON)})
    check_same_device({"torch": H100, "jax": dict(H100, cuda="cuda 13000")})


@pytest.mark.parametrize("devices, words", [
    ({"torch": H100, "jax": XEON}, ["torch on cuda (NVIDIA H100 80GB HBM3)", "jax on cpu (Intel Xeon)",
                                    "pip install -U 'jax[cuda13]'", "--device cpu"]),
    ({"torch": dict(H100, cuda="12.8"), "jax": XEON}, ["pip install -U 'jax[cuda12]'"]),
    ({"torch": XEON, "jax": H100}, ["torch on cpu", "jax on cuda", "torch's CUDA build", "--device cpu"]),
    ({"torch": {"type": "mps", "name": "Apple MPS", "cuda": None}, "jax": XEON}, ["JAX has no MPS device"]),
])
def test_two_device_types_are_refused_naming_both_and_the_fix(devices, words):
    with pytest.raises(UserError) as err:
        check_same_device(devices)
    assert "\n" not in str(err.value)
    for w in words:
        assert w in str(err.value)


def test_the_jax_install_command_follows_torchs_cuda():
    assert jax_cuda_install("12.6") == "pip install -U 'jax[cuda12]'"
    assert jax_cuda_install(None) == jax_cuda_install("13.0") == "pip install -U 'jax[cuda13]'"
    assert jax_cuda_install("11.8") == "pip install -U 'jax[cuda13]'"  # no such JAX build: the default


# -- the benchmark: a probe process per backend, before any worker ----------------------------------

def test_no_probe_for_one_backend_or_the_cpu(monkeypatch):
    from benchmarks import devices

    monkeypatch.setattr(devices, "probe", lambda *a: pytest.fail("probed"))
    assert devices.resolve(["torch", "jax"], "cpu") is None
    assert devices.resolve(["torch"], "auto") is None
    assert devices.resolve(["jax", "jax"], "gpu") is None


def test_the_real_probes_agree_on_this_machine():
    from benchmarks import devices

    found = devices.resolve(["torch", "jax"], "auto")
    assert set(found) == {"torch", "jax"} and found["torch"]["type"] == found["jax"]["type"]


def _gpu_torch_cpu_jax(backends, device):
    return {"torch": {"status": "ok", **H100}, "jax": {"status": "ok", **XEON}}


@pytest.mark.parametrize("command", [
    ["benchmarks.run", "--preset", "tiny", "--data", "synthetic"],
    ["benchmarks.run", "--task", "sample", "--preset", "tiny", "--data", "synthetic"],
    ["benchmarks.ops", "--preset", "tiny"],
])
def test_benchmarks_refuse_two_device_types_before_any_worker(command, monkeypatch, capsys, tmp_path):
    import importlib
    import subprocess

    from benchmarks import devices, launch

    monkeypatch.setattr(devices, "probe", _gpu_torch_cpu_jax)
    monkeypatch.setattr(launch, "run_worker", lambda *a, **k: pytest.fail("a worker was started"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a process was started"))
    module = importlib.import_module(command[0])
    assert module.main(command[1:] + ["--json", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch on cuda" in err[0] and "jax on cpu" in err[0] and "--device cpu" in err[0], err
    assert not (tmp_path / "out.json").exists()


def test_a_probe_that_cannot_start_is_one_line(monkeypatch):
    from benchmarks import devices

    monkeypatch.setattr(devices, "probe", lambda b, d: {"torch": {"status": "ok", **XEON},
                                                        "jax": {"status": "error", "error": "ImportError: libcuda"}})
    with pytest.raises(UserError, match="the jax backend could not say which device it would use: ImportError"):
        devices.resolve(["torch", "jax"], "auto")


# -- microgpt parity: both backends in one process -------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_parity_refuses_two_device_types_before_any_work(dtype, monkeypatch, capsys):
    from backends import cli, load_backend
    from backends.parity import reference, session

    jax_train = load_backend("jax")
    monkeypatch.setattr(jax_train, "describe_device", lambda device: dict(H100))
    monkeypatch.setattr(session.Session, "__init__", lambda *a, **k: pytest.fail("the parity session started"))
    monkeypatch.setattr(reference, "Measured", lambda *a, **k: pytest.fail("a backend was measured"))
    assert cli.main(["parity", "--dtype", dtype]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("microgpt: error: the backends would run on different devices")
    assert "torch on cpu" in err[0] and "jax on cuda (NVIDIA H100 80GB HBM3)" in err[0], err
