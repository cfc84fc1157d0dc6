"""Many devices for the JAX backend, on JAX's own engine: a 1-D ``data`` mesh
(``jax.make_mesh``), the batch sharded along it (``NamedSharding``), the parameters and AdamW
state replicated (``ddp``) or sharded along it (``fsdp``), and ``jax.jit`` told the shardings;
the compiler inserts the all-reduces (ddp) or the all-gathers and reduce-scatters (fsdp).
Many hosts: ``jax.distributed.initialize`` first (``init_hosts``), then the same mesh spans
every host's devices. Mirrors ``backends/torch/parallel.py``; which rows go where is
``common/parallel.py``.

[torch≠jax] JAX runs one process per host and lays the arrays out on a device mesh; torch runs
one process per device and wraps the model.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from common import parallel as common_parallel
from common.config import TrainConfig
from common.errors import UserError

# many hosts: the three arguments of jax.distributed.initialize, one process per host
HOST_ENV = ("MICROGPT_COORDINATOR", "MICROGPT_NUM_HOSTS", "MICROGPT_HOST_ID")


def request_host_devices(n: int) -> None:
    """N CPU devices in this process (a GPU's devices are what they are). The entry point's part:
    the count is fixed when JAX initialises its backends, so this comes before any array.
    [torch≠jax] torch starts one process per CPU device (``launch``); JAX makes N of them in one."""
    init_hosts()
    try:
        jax.config.update("jax_num_cpu_devices", max(n, jax.config.jax_num_cpu_devices))
    except RuntimeError:  # already initialised: Parallel reports a shortfall in one line
        pass


def init_hosts() -> None:
    """``jax.distributed.initialize`` from MICROGPT_COORDINATOR=host:port, MICROGPT_NUM_HOSTS,
    MICROGPT_HOST_ID (each host runs the same command), if they are set.
    [torch≠jax] torch's processes meet through torchrun's rendezvous, from the launcher's environment."""
    if HOST_ENV[0] in os.environ and not jax.distributed.is_initialized():
        address, hosts, host = (os.environ.get(k) for k in HOST_ENV)
        if hosts is None or host is None:
            raise UserError(f"{HOST_ENV[0]} is set: set {HOST_ENV[1]} and {HOST_ENV[2]} too, on every host")
        jax.distributed.initialize(coordinator_address=address, num_processes=int(hosts), process_id=int(host))


def available_devices(device: jax.Device, devices: list) -> tuple[int, str]:
    """How many devices ``--devices`` may ask for: the platform's, or on a CPU its cores."""
    if device.platform == "cpu":  # host devices beyond the cores only share them (as torch's gloo ranks)
        return min(len(devices), os.cpu_count() or 1), "this machine's CPU cores (one host device each)"
    return len(devices), f"jax's {device.platform} devices"


class Parallel:
    """The mesh, where the state and the batches live on it, and the compiled step's shardings."""

    def __init__(self, cfg: TrainConfig, select_device: Callable[[str], jax.Device]):
        self.mode = cfg.parallel
        self.accumulation = cfg.gradient_accumulation_steps
        self.device = select_device(cfg.device)
        self.world = cfg.devices
        self.is_main = jax.process_index() == 0
        self.mesh = None
        if self.mode == "none":
            return
        devices = jax.devices(self.device.platform)  # every host's, after jax.distributed.initialize
        common_parallel.check_available(cfg.devices, *available_devices(self.device, devices))
        self.mesh = jax.make_mesh((cfg.devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                                  devices=devices[:cfg.devices])
        self.replicated = NamedSharding(self.mesh, P())
        self._rows = NamedSharding(self.mesh, P("data"))  # a (B, T) batch's rows along the mesh
        self._stacked_rows = NamedSharding(self.mesh, P(None, "data"))  # the same for (K, B/K, T)

    # -- where arrays live ----------------------------------------------------------------------
    # [torch≠jax] on a mesh the arrays carry their layout: ``_sharding``, ``shardings``, ``place`` and
    # ``placement`` say where each lives, and ``jit`` gives the compiled step those shardings; torch
    # wraps the model instead (``wrap``: DDP, FSDP2) and gathers or splits its DTensor shards (``full``, ``like``)
    def _sharding(self, leaf) -> NamedSharding:
        """ddp: every array whole on every device. fsdp: split along its largest axis that the
        mesh divides (whole where none does: scalars, odd vocabularies)."""
        shape = np.shape(leaf)
        axes = [a for a in range(len(shape)) if shape[a] % self.world == 0 and shape[a] >= self.world]
        if self.mode == "ddp" or not axes:
            return self.replicated
        axis = max(axes, key=lambda a: shape[a])
        return NamedSharding(self.mesh, P(*[("data" if a == axis else None) for a in range(len(shape))]))

    def shardings(self, tree):
        return jax.tree.map(self._sharding, tree)

    def place(self, tree):
        """The model's and optimizer's arrays on the mesh (on the one device without one)."""
        return jax.device_put(tree, self.device if self.mesh is None else self.shardings(tree))

    @property
    def placement(self):
        """Where a small replicated input goes (a sampling window, a count): the device or the mesh."""
        return self.device if self.mesh is None else self.replicated

    # [torch≠jax] torch's ``micro_batches`` / ``local`` hand each rank its rows; here the whole global batch
    # is placed, its rows split along the mesh (``rows``, ``batch_placement``, ``batch``)
    @property
    def rows(self):
        """Where a (B, T) batch of the global batch size goes: its rows split along the mesh."""
        return self.device if self.mesh is None else self._rows

    def batch_placement(self, array):
        """A batch's rows split along the mesh (the axis after the micro-batch axis, if stacked)."""
        if self.mesh is None:
            return self.device
        axis = 1 if np.ndim(array) == 3 else 0
        if np.ndim(array) < 1 or np.shape(array)[axis] % self.world:
            return self.replicated
        return self._stacked_rows if axis else self._rows

    def batch(self, array):
        """A global (B, T) batch as the step takes it: (K, B/K, T) for K micro-batches, sharded."""
        array = array if isinstance(array, jax.Array) else np.asarray(array)
        if self.accumulation > 1 and array.ndim == 2:  # a reshape: on the device already if it was there
            array = common_parallel.stacked_micro_batches(array, self.accumulation)
        if self.mesh is None and isinstance(array, jax.Array):
            return array  # already placed (the benchmark places its batches before timing)
        return jax.device_put(array, self.batch_placement(array))

    def jit(self, fn: Callable, state) -> Callable:
        """``jax.jit`` of the step, its new state laid out as the old (fsdp stays sharded)."""
        if self.mesh is None:
            return jax.jit(fn, static_argnums=0, donate_argnums=1)
        return jax.jit(fn, static_argnums=0, donate_argnums=1, out_shardings=(self.replicated, self.shardings(state)))

    # -- agreeing across hosts (one process sees every local device's result already) -------------
    # [torch≠jax] no mean(): the step's loss comes out of the compiled step replicated (out_shardings)
    def average(self, losses: dict[str, float]) -> dict[str, float]:
        return losses  # estimate_loss's means come from arrays that span the whole mesh

    def any_rank(self, flag: bool) -> bool:
        """True on every host if it is True on one (Ctrl-C: all hosts stop at the same step)."""
        if jax.process_count() == 1:
            return flag
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))

    # [torch≠jax] nothing to close: no process group (jax.distributed shuts down with the process)
    def close(self) -> None:
        pass


def host_array(value) -> np.ndarray:
    """A fresh numpy copy of an array that may be sharded (across hosts: gathered from each)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        from jax.experimental import multihost_utils

        value = multihost_utils.process_allgather(value, tiled=True)
    return np.array(value, copy=True)
