"""Data parallelism, the framework-free part: which rows of the shared sampler's batch each
device and each micro-batch trains on, and the one-line checks of a parallel config.

``batch_size`` is always the *global* batch, the one ``common.batches.BatchSampler`` draws, so
a run on N devices with K micro-batches per step trains on exactly the batches of one device:

- micro-batch ``k`` of a step is rows ``[k*B/K, (k+1)*B/K)`` of the global batch;
- device (rank) ``r`` of ``N`` takes the ``r``-th of ``N`` equal slices of each micro-batch.

Every loss is a mean over its rows, so the mean over ranks of the mean over micro-batches of
the per-slice losses (and of their gradients) is the loss (the gradient) of the global batch.
The frameworks do the averaging (DDP's all-reduce, FSDP's reduce-scatter, XLA's collectives);
this module only says which rows go where.
"""

from __future__ import annotations

import numpy as np

from common.errors import UserError

MODES = ("none", "ddp", "fsdp")


def check_parallel(parallel: str, devices: int, accumulation: int, batch_size: int) -> None:
    """The one-line refusals of a parallel config (``TrainConfig`` calls this)."""
    if parallel == "none" and devices > 1:
        raise UserError(f"--devices {devices} needs a data-parallel mode; add --parallel ddp (or --parallel fsdp)")
    if batch_size % (devices * accumulation):
        raise UserError(
            f"batch_size={batch_size} does not divide by devices x gradient_accumulation_steps = "
            f"{devices} x {accumulation}; choose --batch_size as a multiple of {devices * accumulation}")


def check_available(devices: int, available: int, what: str) -> None:
    """``--devices`` must not ask for more devices than ``what`` has."""
    if devices > available:
        raise UserError(f"--devices {devices} was asked for, but {what} has only {available}; "
                        f"use --devices {available} or fewer")


def micro_batches(batch: np.ndarray, accumulation: int) -> list[np.ndarray]:
    """The ``accumulation`` equal consecutive slices of a global batch, in order."""
    rows = batch.shape[0] // accumulation
    return [batch[k * rows:(k + 1) * rows] for k in range(accumulation)]  # views; numpy or a framework's tensor


def rank_slice(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s equal share of a (micro-)batch's rows."""
    rows = batch.shape[0] // world
    return batch[rank * rows:(rank + 1) * rows]


def stacked_micro_batches(batch: np.ndarray, accumulation: int) -> np.ndarray:
    """The global batch as ``(accumulation, B / accumulation, ...)``: micro-batch ``k`` is row ``k``."""
    return batch.reshape(accumulation, batch.shape[0] // accumulation, *batch.shape[1:])


# the keys a checkpoint does not carry over to the next run: how many devices is the run's choice
SINGLE_DEVICE = {"parallel": "none", "devices": 1}
