"""One device for both backends, or a refusal before any work. Framework-free.

Every command that runs the torch and the JAX backend side by side (``python -m benchmarks.run
--backend all`` and its ``--task sample``, ``python -m benchmarks.ops``, ``microgpt parity``)
resolves each backend's device first (``describe_device(select_device(--device))``, in the
process or in a short probe process) and hands the answers here. Two device types (torch on a
CUDA GPU, JAX on the CPU: what a CUDA torch beside a CPU-only jaxlib gives with ``--device
auto``) would compare two machines, not two frameworks: this stops the command in one line
naming both devices and the fix, exit status 2.
"""

from __future__ import annotations

from common.errors import UserError

DEFAULT_CUDA_MAJOR = "13"  # torch's default Linux wheel is its CUDA 13 build (pyproject's gpu extra)


def jax_cuda_install(cuda: str | None = None) -> str:
    """The command that installs JAX's CUDA build for the CUDA major version ``cuda`` ("12.8", "13.0")."""
    major = (cuda or DEFAULT_CUDA_MAJOR).split(".")[0]
    return f"pip install -U 'jax[cuda{major if major in ('12', '13') else DEFAULT_CUDA_MAJOR}]'"


def _fix(devices: dict[str, dict]) -> str:
    on_cpu = [b for b, d in devices.items() if d["type"] == "cpu"]
    if any(d["type"] == "mps" for d in devices.values()):
        return "pass --device cpu (JAX has no MPS device)"
    if on_cpu == ["jax"]:
        return f"install JAX's CUDA build ({jax_cuda_install(devices.get('torch', {}).get('cuda'))}) or pass --device cpu"
    if on_cpu == ["torch"]:
        return "install torch's CUDA build (on Linux its default wheel: pip install --force-reinstall torch) " \
               "or pass --device cpu"
    return "pass --device cpu"


def check_same_device(devices: dict[str, dict]) -> None:
    """``devices``: backend name -> ``describe_device``'s answer. One line and exit status 2 unless
    every backend runs on the same type of device."""
    if len({d["type"] for d in devices.values()}) <= 1:
        return
    where = " but ".join(f"{b} on {d['type']} ({d['name']})" for b, d in devices.items())
    raise UserError(f"the backends would run on different devices, {where}, and compare two devices, not two "
                    f"frameworks; {_fix(devices)}")


def resolve_in_process(backends, device: str) -> dict[str, dict]:
    """Each backend's device for ``--device device``, in this process (``microgpt parity``), checked."""
    import os

    from backends import load_backend

    # both frameworks share this process's GPU: JAX must not take 75% of its memory up front (read
    # when JAX starts its GPU client, below, unless the user set it)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    found = {}
    for name in dict.fromkeys(backends):
        module = load_backend(name)
        found[name] = module.describe_device(module.select_device(device))
    check_same_device(found)
    return found
