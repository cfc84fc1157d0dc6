"""Random (x, y) batches, drawn by numpy so that every backend sees the same ones."""

from __future__ import annotations

import numpy as np


class BatchSampler:
    """``get_batch(split)`` from nanoGPT, driven by a ``numpy.random.Generator``.

    The generator's state is plain JSON (``state`` / ``set_state``), so a checkpoint can
    record it and a resumed run draws exactly the batches the uninterrupted run would have.
    """

    def __init__(self, splits: dict[str, np.ndarray], batch_size: int, block_size: int, seed: int):
        self.splits = splits
        self.batch_size = batch_size
        self.block_size = block_size
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def get_batch(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        data = self.splits[split]
        T = self.block_size
        starts = self.rng.integers(0, len(data) - T, size=self.batch_size)
        offsets = np.arange(T)
        x = data[starts[:, None] + offsets]  # (B, T)
        y = data[starts[:, None] + offsets + 1]  # (B, T), x shifted by one
        return x.astype(np.int32, copy=False), y.astype(np.int32, copy=False)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def synthetic_tokens(n: int, vocab_size: int, seed: int = 0) -> np.ndarray:
    """Random token ids of a vocabulary: timing does not depend on what the text says."""
    return np.random.Generator(np.random.PCG64(seed)).integers(0, vocab_size, size=n, dtype=np.int32)
