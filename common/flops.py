"""Parameter and FLOP counts (nanoGPT's ``estimate_mfu``, after the PaLM paper, appendix B).

For a model with N parameters (position embeddings excluded), L layers, H heads of
width Q and context T, one training token costs

    6 N            multiply-adds of the weight matmuls, forward (2N) and backward (4N)
  + 12 L H Q T     attention's two T x T matmuls (QK^T and AV): 2 each forward, 4 each
                   backward, over L layers and H heads of width Q, for T positions

A training iteration processes B * T tokens, so costs ``flops_per_token * B * T``.
Softmax, LayerNorm, GELU and the optimizer are left out: they are O(N) or O(T) per
token and small next to the matmuls.
"""

from __future__ import annotations

from common.config import ModelConfig
from common.params import count_params


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    T = seq_len or cfg.block_size
    N = count_params(cfg, non_embedding=True)
    L, H, Q = cfg.n_layer, cfg.n_head, cfg.head_size
    return 6 * N + 12 * L * H * Q * T


def flops_per_iter(cfg: ModelConfig, batch_size: int, seq_len: int | None = None) -> int:
    T = seq_len or cfg.block_size
    return flops_per_token(cfg, T) * batch_size * T
