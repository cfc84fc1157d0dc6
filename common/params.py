"""The canonical parameter layout: names, shapes, weight decay, and nanoGPT's initialisation.

Names are nanoGPT's state-dict names, and shapes are PyTorch's: a Linear weight is
``(out_features, in_features)``. A backend whose layers store ``(in, out)`` kernels
(Flax) transposes on the way in and out. The LM head is tied to ``transformer.wte.weight``
and has no entry of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.config import ModelConfig

INIT_STD = 0.02


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "embedding", "linear", "bias", "norm"
    init_std: float  # 0 for biases and norms: those start at zeros / ones

    @property
    def decay(self) -> bool:
        """nanoGPT's rule: every tensor with ndim >= 2 is decayed, biases and norms are not."""
        return len(self.shape) >= 2


def param_layout(cfg: ModelConfig) -> list[ParamSpec]:
    """Every parameter of the model, in a fixed order (the order of nanoGPT's state dict)."""
    C, V, T = cfg.n_embd, cfg.vocab_size, cfg.block_size
    # GPT-2's scaled init of the residual projections: each adds to the residual stream,
    # 2 per layer, so their std shrinks with depth to keep the stream's variance bounded.
    proj_std = INIT_STD / math.sqrt(2 * cfg.n_layer)
    specs = [
        ParamSpec("transformer.wte.weight", (V, C), "embedding", INIT_STD),
        ParamSpec("transformer.wpe.weight", (T, C), "embedding", INIT_STD),
    ]

    def norm(prefix: str) -> None:
        specs.append(ParamSpec(f"{prefix}.weight", (C,), "norm", 0.0))
        if cfg.bias:
            specs.append(ParamSpec(f"{prefix}.bias", (C,), "bias", 0.0))

    def linear(prefix: str, n_in: int, n_out: int, std: float) -> None:
        specs.append(ParamSpec(f"{prefix}.weight", (n_out, n_in), "linear", std))
        if cfg.bias:
            specs.append(ParamSpec(f"{prefix}.bias", (n_out,), "bias", 0.0))

    for i in range(cfg.n_layer):
        h = f"transformer.h.{i}"
        norm(f"{h}.ln_1")
        linear(f"{h}.attn.c_attn", C, 3 * C, INIT_STD)
        linear(f"{h}.attn.c_proj", C, C, proj_std)
        norm(f"{h}.ln_2")
        linear(f"{h}.mlp.c_fc", C, 4 * C, INIT_STD)
        linear(f"{h}.mlp.c_proj", 4 * C, C, proj_std)
    norm("transformer.ln_f")
    return specs


def init_weights(cfg: ModelConfig, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """nanoGPT's initialisation, drawn in numpy so that every backend can start from it."""
    rng = np.random.Generator(np.random.PCG64(seed))
    weights = {}
    for spec in param_layout(cfg):
        if spec.kind == "norm":
            weights[spec.name] = np.ones(spec.shape, dtype=dtype)
        elif spec.kind == "bias":
            weights[spec.name] = np.zeros(spec.shape, dtype=dtype)
        else:
            weights[spec.name] = (rng.standard_normal(spec.shape) * spec.init_std).astype(dtype)
    return weights


def count_params(cfg: ModelConfig, non_embedding: bool = True) -> int:
    """Parameter count; like nanoGPT, position embeddings are left out by default
    (the token embedding stays in: it is also the LM head's weight)."""
    n = sum(math.prod(s.shape) for s in param_layout(cfg))
    if non_embedding:
        n -= cfg.block_size * cfg.n_embd
    return n


def check_weights(cfg: ModelConfig, weights: dict[str, np.ndarray]) -> list[str]:
    """Every way ``weights`` differs from the layout of ``cfg``, one line each."""
    problems = []
    expected = {s.name: s.shape for s in param_layout(cfg)}
    for name in expected.keys() - weights.keys():
        problems.append(f"missing parameter {name}")
    for name in weights.keys() - expected.keys():
        problems.append(f"unexpected parameter {name}")
    for name in expected.keys() & weights.keys():
        if tuple(np.shape(weights[name])) != expected[name]:
            problems.append(f"{name}: shape {tuple(np.shape(weights[name]))}, expected {expected[name]}")
    return sorted(problems)
