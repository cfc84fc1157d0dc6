"""The timed loops. Framework-free: the step and the wait come from a backend's Trainer.

The clock stops only once the work is done: ``wait`` is ``Trainer.wait`` (JAX
``block_until_ready``, CUDA synchronize, a host read of the loss on the CPU). Nothing
else happens inside a timed region: batches are already on the device, and progress
is reported by the caller between steps (latency) or after the loop (throughput).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

Clock = Callable[[], float]


def timed(fn: Callable[[], Any], wait: Callable[[Any], None], clock: Clock = time.perf_counter) -> tuple[float, Any]:
    """Seconds from calling ``fn`` until ``wait`` returns on its result, and the result."""
    t0 = clock()
    out = fn()
    wait(out)
    return clock() - t0, out


def latency(step: Callable, wait: Callable, batches: Sequence[tuple[Any, Any]],
            after_each: Callable[[], None] | None = None,
            clock: Clock = time.perf_counter) -> tuple[list[float], Any]:
    """Per-step latency: every step is waited for before the clock stops.

    Returns the seconds of each step and the last loss (still on the device).
    ``after_each`` (e.g. a progress bar update) runs after the clock has stopped.
    """
    times: list[float] = []
    loss = None
    for x, y in batches:
        t0 = clock()
        loss = step(x, y)
        wait(loss)
        times.append(clock() - t0)
        if after_each is not None:
            after_each()
    return times, loss


def throughput(step: Callable, wait: Callable, batches: Sequence[tuple[Any, Any]],
               clock: Clock = time.perf_counter) -> tuple[float, Any]:
    """Amortised throughput: all steps queued back to back, one wait at the end.

    Returns the total seconds for ``len(batches)`` steps and the last loss.
    """
    loss = None
    t0 = clock()
    for x, y in batches:
        loss = step(x, y)
    wait(loss)
    return clock() - t0, loss
