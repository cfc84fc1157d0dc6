"""Framework-neutral checkpoints: one safetensors file plus the tokenizer as JSON.

``DIR/checkpoint.safetensors`` holds

* ``param/<name>``                 every parameter, in the canonical layout (``common.params``);
* ``optim/exp_avg/<name>``,
  ``optim/exp_avg_sq/<name>``      AdamW's first and second moments, same layout;
* ``optim/step``                   the number of optimizer steps taken;
* ``rng/<backend>``                the writing backend's own RNG state (dropout, sampling);

and, in the safetensors header, JSON metadata: format version, model and train configs,
tokenizer, step, best val loss, the batch sampler's RNG state, and the writer backend.
Everything is in one file so that one atomic rename replaces a checkpoint whole:
a crash mid-save leaves the previous one intact. ``DIR/tokenizer.json`` is written beside
it for people and tools that want the vocabulary alone. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common import checkpoint_meta
from common import config as config_mod
from common.config import ModelConfig, TrainConfig
from common.errors import UserError
from common.outputs import remove_stale_temporaries
from common.params import check_weights, param_layout
from common.tokenizer import CharTokenizer
from common.writes import atomic_write_bytes, fsync_dir, make_dirs

FORMAT_VERSION = 1
FILENAME = "checkpoint.safetensors"
TOKENIZER_FILENAME = "tokenizer.json"


@dataclass
class Checkpoint:
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: CharTokenizer
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] | None = None  # "exp_avg/<name>", "exp_avg_sq/<name>", "step"
    step: int = 0
    best_val_loss: float | None = None
    sampler_state: dict | None = None
    rng: dict[str, np.ndarray] = field(default_factory=dict)  # backend name -> RNG state
    backend: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_file(path: str | os.PathLike) -> Path:
    """Accept either the checkpoint directory or the file itself."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p / FILENAME


def save_checkpoint(directory: str | os.PathLike, ckpt: Checkpoint) -> Path:
    from safetensors.numpy import save

    problems = check_weights(ckpt.model_config, ckpt.weights)
    if problems:
        raise ValueError("refusing to save inconsistent weights: " + "; ".join(problems))
    bad = nonfinite(ckpt.weights)
    if bad:  # a diverged model is never written over a good checkpoint (the training loop says so first)
        raise ValueError(f"refusing to save non-finite weights ({', '.join(bad[:3])})")
    tensors: dict[str, np.ndarray] = {}
    for name, value in ckpt.weights.items():
        tensors[f"param/{name}"] = np.ascontiguousarray(value)
    for name, value in (ckpt.optimizer or {}).items():
        # safetensors stores a 0-d array as shape (1,); the step count is read back as 0-d
        tensors[f"optim/{name}"] = np.ascontiguousarray(np.asarray(value)).reshape(np.shape(value) or (1,))
    for name, value in ckpt.rng.items():
        tensors[f"rng/{name}"] = np.ascontiguousarray(np.asarray(value))
    meta = {
        "format_version": FORMAT_VERSION,
        "model_config": config_mod.to_dict(ckpt.model_config),
        "train_config": config_mod.to_dict(ckpt.train_config),
        "tokenizer": ckpt.tokenizer.to_json(),
        "step": ckpt.step,
        "best_val_loss": ckpt.best_val_loss,
        "sampler_state": ckpt.sampler_state,
        "backend": ckpt.backend,
        "extra": ckpt.extra,
    }
    blob = save(tensors, metadata={"microgpt": json.dumps(meta)})
    directory = make_dirs(directory)
    remove_stale_temporaries(directory, (FILENAME, TOKENIZER_FILENAME))  # left by a kill inside a save
    path = directory / FILENAME
    atomic_write_bytes(path, blob)
    atomic_write_bytes(directory / TOKENIZER_FILENAME,
                       json.dumps(ckpt.tokenizer.to_json(), ensure_ascii=False).encode("utf-8"))
    fsync_dir(directory)
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; every problem is a one-line :class:`UserError`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    file = checkpoint_file(path)
    if not file.is_file():
        raise UserError(f"no checkpoint at {str(file)!r}; train one with `microgpt train --out DIR` or check the path")
    try:
        blob = file.read_bytes()
        tensors = load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + header_len])
        meta = json.loads(header["__metadata__"]["microgpt"])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"checkpoint {str(file)!r} is damaged or truncated ({type(exc).__name__}); "
            "restore it or train again"
        ) from None
    try:
        version = checkpoint_meta.check_version(meta)
        if version > FORMAT_VERSION:
            raise UserError(
                f"checkpoint {str(file)!r} has format version {version}, newer than the version {FORMAT_VERSION} "
                "this MicroGPT reads; upgrade MicroGPT to read it"
            )
        fields = checkpoint_meta.parse(meta)
    except checkpoint_meta.MetadataError as exc:
        raise UserError(f"checkpoint {str(file)!r} has damaged metadata: {exc}; restore it or train again") from None
    model_config, tokenizer = fields["model_config"], fields["tokenizer"]
    weights = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
    optimizer = {k[len("optim/"):]: v for k, v in tensors.items() if k.startswith("optim/")} or None
    if optimizer and "step" in optimizer and optimizer["step"].shape == (1,):
        optimizer["step"] = optimizer["step"].reshape(())
    rng = {k[len("rng/"):]: v for k, v in tensors.items() if k.startswith("rng/")}
    problems = check_weights(model_config, weights)
    if optimizer is not None:
        problems += check_optimizer_state(model_config, optimizer)
    if tokenizer.vocab_size != model_config.vocab_size:
        problems.append(f"tokenizer has {tokenizer.vocab_size} characters, model vocab_size is {model_config.vocab_size}")
    if problems:
        raise UserError(f"checkpoint {str(file)!r} does not match its config: " + "; ".join(problems))
    bad = nonfinite(weights)
    if bad:
        raise UserError(f"checkpoint {str(file)!r} holds non-finite weights ({', '.join(bad[:3])}), written after "
                        "training diverged; use an earlier checkpoint or train again")
    bad = nonfinite(optimizer or {})
    if bad:  # checked here, not blamed on the learning rate when a resumed run's first step turns NaN
        raise UserError(f"checkpoint {str(file)!r} holds a non-finite optimizer state ({', '.join(bad[:3])}); "
                        "use an earlier checkpoint or train again")
    return Checkpoint(weights=weights, optimizer=optimizer, rng=rng, **fields)


def nonfinite(weights: dict[str, np.ndarray]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity."""
    return sorted(name for name, value in weights.items() if not np.all(np.isfinite(value)))


def check_optimizer_state(cfg: ModelConfig, state: dict[str, np.ndarray]) -> list[str]:
    problems = []
    expected = {"step": ()}
    for spec in param_layout(cfg):
        expected[f"exp_avg/{spec.name}"] = spec.shape
        expected[f"exp_avg_sq/{spec.name}"] = spec.shape
    for name in expected.keys() - state.keys():
        problems.append(f"missing optimizer tensor {name}")
    for name in state.keys() - expected.keys():
        problems.append(f"unexpected optimizer tensor {name}")
    for name in expected.keys() & state.keys():
        if tuple(np.shape(state[name])) != expected[name]:
            problems.append(f"optimizer {name}: shape {tuple(np.shape(state[name]))}, expected {expected[name]}")
    return sorted(problems)
