"""Devices and process-wide settings for the PyTorch backend; ``backends/jax/device.py`` is its mirror.
Part of the backend module's contract (``backends/interface.py``), re-exported by ``train.py``."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from common.config import TrainConfig
from common.errors import UserError
from common.hostinfo import cpu_model


def select_device(requested: str = "auto") -> torch.device:
    """CUDA if present, then Apple's MPS, then the CPU; an explicit GPU request must be met."""
    if requested in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {requested} was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
        return torch.device("cuda")
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("--device mps was asked for, but this machine has no MPS device; use --device cpu or auto")
        return torch.device("mps")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> dict[str, str | None]:
    """What a device is, framework-neutrally: ``type`` (cuda, mps or cpu), ``name``, and ``cuda``,
    the CUDA version this torch was built with (None for a CPU-only build)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "Apple MPS" if device.type == "mps" else cpu_model()
    return {"type": device.type, "name": name, "cuda": torch.version.cuda}


def resolve_dtype(requested: str, device: torch.device) -> str:
    """``auto`` means bfloat16 compute on a GPU that supports it, float32 elsewhere."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


@contextlib.contextmanager
def process_settings(train_config: TrainConfig) -> Iterator[None]:
    """The process-wide settings a run needs (``backends.process``), undone after: float32
    matmuls in full precision unless ``tf32``, and torch's global generator seeded.

    [torch≠jax] dropout draws its masks from torch's global generator, so its seed is process
    state (JAX keeps dropout keys in the model); float64 needs no switch."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):  # the generators come back as they were
            torch.backends.cuda.matmul.allow_tf32 = train_config.tf32
            torch.backends.cudnn.allow_tf32 = train_config.tf32
            torch.set_float32_matmul_precision("high" if train_config.tf32 else "highest")
            torch.manual_seed(train_config.seed)
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


# torch.get_float32_matmul_precision(), in the words both backends' reports use
MATMUL_PRECISION_NAMES = {"highest": "full float32", "high": "TF32", "medium": "bfloat16"}


def speed_settings(device: torch.device) -> dict[str, str]:
    """How this process computes on ``device``, in the words ``backends.process.speed_settings``
    compares across backends: the device, the threads of the CPU kernels, a float32 matmul's precision."""
    precision = torch.get_float32_matmul_precision()
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        precision = "high"
    described = describe_device(device)
    return {"device": f"{described['type']}: {described['name']}", "compute threads": str(torch.get_num_threads()),
            "float32 matmuls": MATMUL_PRECISION_NAMES.get(precision, precision)}
