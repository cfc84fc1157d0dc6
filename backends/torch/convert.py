"""Reading nanoGPT's ``ckpt.pt``: the one place MicroGPT opens a torch pickle, and only
through ``torch.load(weights_only=True)``, which refuses anything but tensors and plain data."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def read_nanogpt_checkpoint(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Return (model_args, state dict as float32 numpy arrays, other plain fields)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--from-nanogpt {str(path)!r} is a folder; give nanoGPT's ckpt.pt file")
    try:
        with warnings.catch_warnings():  # torch's warnings about pickle protocols: our one line says enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no nanoGPT checkpoint at {str(path)!r}; check the --from-nanogpt path") from None
    except Exception as exc:  # noqa: BLE001 - garbage input fails in many ways; every one means refuse
        refused = _refused_global(path, str(exc))
        if refused:
            raise UserError(
                f"{str(path)!r} holds a pickled {refused}, which torch.load(weights_only=True) refuses to build; "
                "MicroGPT imports only checkpoints of tensors and plain data, as nanoGPT's train.py writes them"
            ) from None
        raise UserError(
            f"{str(path)!r} is not a checkpoint torch.load(weights_only=True) can read ({type(exc).__name__}); "
            "give the ckpt.pt that nanoGPT's train.py wrote"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise UserError(f"{str(path)!r} is not a nanoGPT checkpoint (it needs 'model' and 'model_args' entries)")
    for key in ("model", "model_args"):
        if not isinstance(ckpt[key], dict):
            raise UserError(f"{str(path)!r}: its {key!r} entry is a {type(ckpt[key]).__name__}, not a dict; "
                            "is it a nanoGPT checkpoint?")
    state = {}
    for name, tensor in ckpt["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"{str(path)!r}: state dict entry {name!r} is not a tensor")
        if not (tensor.is_floating_point() or tensor.dtype == torch.bool):
            raise UserError(f"{str(path)!r}: state dict entry {name!r} holds {tensor.dtype}, not floating point")
        state[str(name)] = tensor.detach().to(torch.float32).numpy().copy()
    others = {k: v for k, v in ckpt.items() if k in ("iter_num", "best_val_loss") and not isinstance(v, dict)}
    if isinstance(others.get("best_val_loss"), torch.Tensor):
        others["best_val_loss"] = float(others["best_val_loss"]) if others["best_val_loss"].numel() == 1 else None
    if isinstance(others.get("iter_num"), torch.Tensor):
        others["iter_num"] = int(others["iter_num"]) if others["iter_num"].numel() == 1 else None
    return dict(ckpt["model_args"]), state, others


def _refused_global(path: Path, message: str) -> str | None:
    """The class or function a pickle wanted built: from torch's message, or (for a raw pickle,
    which torch's unpickler stops reading earlier) from an unpickler that refuses every global."""
    found = _GLOBAL.search(message)
    if found:
        return found.group(1)
    import pickle

    class Refuse(pickle.Unpickler):
        def find_class(self, module, name):
            raise _Refused(f"{module}.{name}")

    try:
        with open(path, "rb") as f:
            Refuse(f).load()
    except _Refused as refused:
        return str(refused)
    except Exception:  # noqa: BLE001 - not a raw pickle with a global: nothing to name
        return None
    return None


class _Refused(Exception):
    pass
