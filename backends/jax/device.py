"""Devices and process-wide settings for the JAX backend; ``backends/torch/device.py`` is its mirror.
Part of the backend module's contract (``backends/interface.py``), re-exported by ``train.py``."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import jax

from backends.device_check import jax_cuda_install
from common.config import TrainConfig
from common.errors import UserError
from common.hostinfo import cpu_model


def _gpus() -> list:
    # [torch≠jax] torch asks torch.cuda.is_available(); jax.devices("gpu") raises where there is none
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no GPU on this machine
        return []


def select_device(requested: str = "auto") -> jax.Device:
    """A GPU if present, else the CPU; an explicit GPU request must be met."""
    if requested in ("cuda", "gpu"):
        if not _gpus():
            raise UserError(f"--device {requested} was asked for, but jax sees no GPU; "
                            f"install JAX's CUDA build ({jax_cuda_install()}) or use --device cpu or auto")
        return _gpus()[0]
    if requested == "mps":  # [torch≠jax] Apple's MPS is a torch device; jax runs on the CPU there
        raise UserError("--device mps is only for the torch backend; use --device cpu or auto with jax")
    if requested == "cpu":
        return jax.devices("cpu")[0]
    return (_gpus() or jax.devices("cpu"))[0]


def describe_device(device: jax.Device) -> dict[str, str | None]:
    """What a device is, framework-neutrally: ``type`` (cuda or cpu), ``name``, and ``cuda``, the
    GPU runtime's version (None on a CPU). [torch≠jax] JAX calls a CUDA GPU's platform ``gpu``."""
    on_gpu = device.platform == "gpu"
    return {"type": "cuda" if on_gpu else device.platform, "name": device.device_kind if on_gpu else cpu_model(),
            "cuda": getattr(device.client, "platform_version", None) if on_gpu else None}


Placement = jax.Device | jax.sharding.Sharding  # where arrays go: a device, or on a mesh a sharding


def as_device(device: Placement | str | None) -> Placement:
    """A name resolved to its device (None: the default one); a device or a sharding as it is.
    [torch≠jax] torch's calls take a device name as they take a device; JAX places arrays with
    ``jax.device_put`` on a device or, on a mesh, a sharding, so a name is resolved here first."""
    return select_device(device) if isinstance(device, str) else (device or select_device("auto"))


def resolve_dtype(requested: str, device: jax.Device) -> str:
    """``auto`` means bfloat16 compute on a GPU, float32 elsewhere."""
    if requested != "auto":
        return requested
    return "bfloat16" if device.platform == "gpu" else "float32"


@contextlib.contextmanager
def process_settings(train_config: TrainConfig) -> Iterator[None]:
    """The process-wide settings a run needs (``backends.process``), undone after: 64-bit mode exactly
    for float64; on a GPU, float32 matmuls in full precision unless ``tf32`` (a CPU's always are).
    [torch≠jax] 64 bits need JAX's 64-bit mode, a process-wide switch read when arrays are made;
    there is no global seed: dropout keys are model state (``nnx.Rngs``)."""
    on_gpu = train_config.device != "cpu" and bool(_gpus())
    precision = ("tensorfloat32" if train_config.tf32 else "highest") if on_gpu else None
    with jax.enable_x64(train_config.dtype == "float64"), jax.default_matmul_precision(precision):
        yield


# jax_default_matmul_precision, in the words both backends' reports use
MATMUL_PRECISION_NAMES = {"highest": "full float32", "float32": "full float32", "high": "TF32",
                          "tensorfloat32": "TF32", "bfloat16": "bfloat16", "default": "bfloat16"}


def speed_settings(device: jax.Device) -> dict[str, str]:
    """How this process computes on ``device``, in the words ``backends.process.speed_settings``
    compares across backends: the device, the threads of the CPU kernels, a float32 matmul's precision."""
    precision = jax.config.jax_default_matmul_precision
    if precision is None:  # XLA's default: full float32 on a CPU, TF32 on an NVIDIA GPU that has it
        precision = "highest" if device.platform == "cpu" else "tensorfloat32"
    # [torch≠jax] XLA sizes its CPU thread pool from the CPUs the process may use, and has no call
    # to read or set it (torch: get_num_threads)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    described = describe_device(device)
    return {"device": f"{described['type']}: {described['name']}", "compute threads": str(threads),
            "float32 matmuls": MATMUL_PRECISION_NAMES.get(str(precision).lower(), str(precision))}
