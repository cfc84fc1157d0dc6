"""Model and training configuration: typed dataclasses that validate themselves,
named presets, and type-checked ``--key=value`` overrides from the command line."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from common.errors import UserError
from common.parallel import MODES as PARALLEL_MODES, check_parallel

DEVICES = ("auto", "cpu", "cuda", "gpu", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float64")
COMPUTE_DTYPES = ("float32", "bfloat16", "float64")  # what "auto" resolves to, per device
ATTENTIONS = ("fused", "manual")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


@dataclass(frozen=True)
class ModelConfig:
    """What the network looks like (nanoGPT's ``GPTConfig``)."""

    block_size: int = 64  # maximum context length T
    vocab_size: int = 65  # number of distinct characters
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # width C; every head is n_embd // n_head wide
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}; set --{name}=N with N >= 1")
        if self.n_embd % self.n_head:
            raise UserError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "choose --n_embd as a multiple of --n_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}; set --dropout=0.1 for example")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class TrainConfig:
    """How the network is trained (nanoGPT's ``train.py`` globals)."""

    batch_size: int = 12
    max_iters: int = 2000
    eval_interval: int = 250
    eval_iters: int = 20  # batches averaged per split by estimate_loss()
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 1337
    device: str = "auto"  # auto picks CUDA (or MPS for torch), then CPU
    dtype: str = "auto"  # auto: bfloat16 compute on a GPU, float32 on a CPU
    compile: bool = False  # torch.compile; jax always jit-compiles
    compile_mode: str = "default"  # torch.compile's mode (with compile); jax has none
    attention: str = "fused"  # fused kernel, or the explicit masked softmax ("manual") for study
    tf32: bool = False  # let float32 matmuls use TF32 on a GPU (off: full precision, for parity)
    parallel: str = "none"  # none, ddp (replicated), fsdp (sharded): common/parallel.py
    devices: int = 1  # data-parallel devices; batch_size stays the global batch
    gradient_accumulation_steps: int = 1  # K micro-batches per optimizer step, as in nanoGPT

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "devices", "gradient_accumulation_steps"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}; set --{name}=N with N >= 1")
        for name in ("warmup_iters", "lr_decay_iters", "seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"{name} must be a finite number >= 0, got {value}")
        if self.learning_rate == 0:
            raise UserError("learning_rate must be > 0; set --learning_rate=1e-3 for example")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.min_lr > self.learning_rate:
            raise UserError(f"min_lr={self.min_lr} exceeds learning_rate={self.learning_rate}; lower --min_lr")
        if self.warmup_iters > self.lr_decay_iters:
            raise UserError(
                f"warmup_iters={self.warmup_iters} exceeds lr_decay_iters={self.lr_decay_iters}; "
                "the schedule must warm up before it decays"
            )
        for name, allowed in (("device", DEVICES), ("dtype", DTYPES), ("attention", ATTENTIONS),
                              ("compile_mode", COMPILE_MODES), ("parallel", PARALLEL_MODES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"unknown {name} {getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        check_parallel(self.parallel, self.devices, self.gradient_accumulation_steps, self.batch_size)


def param_dtype(compute_dtype: str) -> str:
    """bfloat16 is a compute dtype: parameters and optimizer state stay float32 (both backends)."""
    return "float64" if compute_dtype == "float64" else "float32"


def _check_types(cfg: Any) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        want = {"int": int, "float": float, "bool": bool, "str": str}[f.type]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, f.name, float(value))
            continue
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise UserError(f"{f.name} must be of type {f.type}, got {value!r}")


# ---------------------------------------------------------------------------------------
# Presets. Each is (ModelConfig fields, TrainConfig fields); anything unset keeps the default.

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Seconds on a laptop CPU: for tests and smoke runs.
    "tiny": (
        dict(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0),
        dict(batch_size=4, max_iters=20, eval_interval=10, eval_iters=2, learning_rate=1e-3,
             min_lr=1e-4, warmup_iters=2, lr_decay_iters=20),
    ),
    # nanoGPT's "baby GPT" for a CPU: config/train_shakespeare_char.py with the README's CPU
    # overrides, on train.py's defaults (bias=False among them); tests/test_presets.py compares
    # both presets with nanoGPT's values key by key.
    "baby": (
        dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
        dict(batch_size=12, max_iters=2000, eval_interval=250, eval_iters=20, learning_rate=1e-3,
             min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000, weight_decay=0.1, beta2=0.99),
    ),
    # nanoGPT's config/train_shakespeare_char.py on train.py's defaults, meant for a GPU.
    "shakespeare-char": (
        dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False),
        dict(batch_size=64, max_iters=5000, eval_interval=250, eval_iters=200, learning_rate=1e-3,
             min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000, weight_decay=0.1, beta2=0.99,
             grad_clip=1.0),
    ),
}


def preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    model, train = PRESETS[name]
    return dict(model), dict(train)


def model_keys() -> list[str]:
    return [f.name for f in fields(ModelConfig)]


def train_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def _parse_value(key: str, text: str, type_name: str) -> Any:
    try:
        if type_name == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if type_name == "int":
            return int(text)
        if type_name == "float":
            return float(text)
        return text
    except ValueError:
        raise UserError(f"--{key} expects a {type_name}, got {text!r}") from None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``["--n_layer=2", "--dropout", "0.1"]`` into typed values; reject unknown keys."""
    types = {f.name: f.type for f in fields(ModelConfig)} | {f.name: f.type for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    args = list(args)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"cannot read argument {arg!r}; overrides look like --key=value")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
        else:
            key = arg[2:].replace("-", "_")
            if not args or args[0].startswith("--"):
                if types.get(key) != "bool":
                    raise UserError(f"--{key} needs a value; write --{key}=VALUE")
                args.insert(0, "true")  # a bare boolean flag, e.g. --compile
            text = args.pop(0)
        key = key.replace("-", "_")
        if key not in types:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(types))}")
        out[key] = _parse_value(key, text, types[key])
    return out


def build_configs(preset_name: str, overrides: dict[str, Any] | None = None,
                  vocab_size: int | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Preset, then overrides, then the corpus's vocabulary size; validated."""
    model, train = preset(preset_name)
    for key, value in (overrides or {}).items():
        if key in model_keys():
            model[key] = value
        elif key in train_keys():
            train[key] = value
        else:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(model_keys() + train_keys()))}")
    if vocab_size is not None:
        model["vocab_size"] = vocab_size
    return ModelConfig(**model), TrainConfig(**train)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise UserError(f"unknown {cls.__name__} keys {sorted(unknown)} in checkpoint metadata")
    return cls(**data)
