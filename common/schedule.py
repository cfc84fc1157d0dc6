"""The learning-rate schedule both backends train on: nanoGPT's ``get_lr``. Framework-free.

Each backend's ``Trainer`` sets ``get_lr(iter_num, train_config)`` on its optimizer before
every step (torch: ``group["lr"]``; JAX: the learning rate ``optax.inject_hyperparams``
keeps in the optimizer state), so the two schedules are one function by construction.
"""

from __future__ import annotations

import math

from common.config import TrainConfig


def get_lr(it: int, cfg: TrainConfig) -> float:
    """nanoGPT's schedule: linear warmup, then cosine decay to min_lr, then min_lr."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    decay_ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes from 1 to 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)
