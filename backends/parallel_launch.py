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
from typing import Any


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
