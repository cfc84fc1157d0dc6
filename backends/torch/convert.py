"""Reading nanoGPT's ``ckpt.pt``: the one place MicroGPT opens a torch pickle, and only
through ``torch.load(weights_only=True)``, which refuses anything but tensors and plain data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import UserError


def read_nanogpt_checkpoint(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Return (model_args, state dict as float32 numpy arrays, other plain fields)."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no nanoGPT checkpoint at {str(path)!r}; check the --from-nanogpt path") from None
    except Exception as exc:  # noqa: BLE001 - garbage input fails in many ways; every one means refuse
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{str(path)!r} is not a checkpoint torch.load(weights_only=True) accepts ({first[:160]}); "
            "only plain nanoGPT checkpoints (tensors and plain data) are imported"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise UserError(f"{str(path)!r} is not a nanoGPT checkpoint (it needs 'model' and 'model_args' entries)")
    state = {}
    for name, tensor in ckpt["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"{str(path)!r}: state dict entry {name!r} is not a tensor")
        state[name] = tensor.detach().to(torch.float32).numpy().copy()
    others = {k: v for k, v in ckpt.items() if k in ("iter_num", "best_val_loss") and not isinstance(v, dict)}
    if "best_val_loss" in others and isinstance(others["best_val_loss"], torch.Tensor):
        others["best_val_loss"] = float(others["best_val_loss"])
    return dict(ckpt["model_args"]), state, others
