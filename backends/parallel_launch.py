"""How ``microgpt train`` starts a run on many devices, each framework its own way (the entry
point's part: before any framework has picked its devices).

- torch, one process per device: under ``torchrun`` the ranks come from its environment
  (``WORLD_SIZE`` is the device count); ``microgpt train --devices N`` outside a launcher runs
  the same command through torch's launcher (``backends.torch.parallel.launch``).
- JAX, one process per host: N local devices; on a CPU, N host devices, which must be asked for
  before JAX initialises (``backends.jax.parallel.request_host_devices``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")  # what torchrun sets in each rank


def prepare(backend: str, preset: str, overrides: dict[str, Any], argv: list[str]) -> int | None:
    """Make ``overrides`` describe this process's run; an exit status if the run happened elsewhere."""
    devices = overrides.get("devices", 1)
    if backend == "torch":
        if "WORLD_SIZE" in os.environ:  # a rank started by torchrun: its world is the device count
            overrides.setdefault("devices", int(os.environ["WORLD_SIZE"]))
            return None
        if devices > 1:
            from backends.torch import parallel
            from common.config import build_configs

            build_configs(preset, overrides)  # a bad config is one line here, not one per rank
            return parallel.launch(argv, devices, overrides.get("device", "auto"))
        return None
    if backend == "jax" and devices > 1:
        from backends.jax import parallel

        parallel.request_host_devices(devices)
    return None


def exit_rank(code: int) -> int:
    """A rank that torchrun started ends here, once its command is done and its output flushed:
    ``os._exit(code)``, without the interpreter's exit sequence. With DDP the gloo process group
    outlives ``destroy_process_group`` (measured: its three threads, two workers and the TCP loop,
    are still there after the destroy, the DDP model deleted and collected; without DDP the destroy
    ends them), so only the interpreter's finalization and the C++ static destructors tore it down,
    in no order of ours, the other rank still connected; that is where rank 1 aborted, once in about
    150 runs of ``microgpt train --devices 2`` on a loaded 2-core machine ("terminate called without
    an active exception", exit -6), after its work was done. By now every file is written and closed
    (atomically, fsynced) and the launcher reads only the exit status. Any other process: ``code``."""
    if is_torchrun_rank():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def is_torchrun_rank() -> bool:
    """This process is one of the ranks torchrun (or ``microgpt train --devices N``) started."""
    return all(k in os.environ for k in TORCHRUN_ENV) and "TORCHELASTIC_RUN_ID" in os.environ
