"""Many devices for the PyTorch backend, on torch.distributed's own engines: one process per
device (``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK), ``DistributedDataParallel`` for
``ddp``, FSDP2's ``fully_shard`` per block and on the root for ``fsdp``. Mirrors
``backends/jax/parallel.py``; which rows each rank trains on is ``common/parallel.py``.

[torch≠jax] torch runs one process per device and wraps the model; JAX runs one process per
host, lays the arrays out on a device mesh and lets the compiler insert the collectives.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import sys
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

from common import parallel as common_parallel
from common.config import TrainConfig
from common.errors import UserError



# DDP's switch for broadcasting buffers before each forward: forward_sync_buffers from torch 2.13, which
# deprecates broadcast_buffers, its name before (torch 2.11 and 2.12 know only that one)
_SYNC_BUFFERS = ("forward_sync_buffers" if "forward_sync_buffers" in
                 inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters else "broadcast_buffers")


def available_devices(device: str) -> tuple[int, str]:
    """How many devices ``--devices`` may ask for: CUDA GPUs, or on a CPU its cores (gloo)."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count(), "this machine's CUDA GPUs"
    return os.cpu_count() or 1, "this machine's CPU cores (one gloo process each)"


def launch(argv: list[str], devices: int, device: str) -> int:
    """``microgpt train --devices N``: the same command, N times, through torch's own launcher
    (``torch.distributed.run``, what ``torchrun`` runs); its exit status.
    [torch≠jax] one process per device: JAX runs its N devices in this process instead."""
    common_parallel.check_available(devices, *available_devices(device))
    from torch.distributed import run as torchrun

    from torch.distributed.elastic.multiprocessing.api import SignalException

    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={devices}", "-m", "backends.cli", *argv])
    try:
        torchrun.run(args)
    except SignalException as exc:  # Ctrl-C or SIGTERM: the launcher forwarded it, rank 0 saved and said so
        return 128 + int(exc.sigval)
    except Exception as exc:  # the ranks have printed their own errors; one line here
        failures = getattr(exc, "failures", {})
        codes = {f.exitcode for f in failures.values()} if failures else {1}
        if codes in ({130}, {143}):  # every rank stopped on Ctrl-C (SIGTERM), after rank 0 saved
            return codes.pop()
        print(f"microgpt: error: {len(failures) or 'a'} rank(s) failed", file=sys.stderr)
        return 2 if codes == {2} else max(codes)
    return 0


class Parallel:
    """The process group, this rank's device and batch rows, and the wrapped model."""

    def __init__(self, cfg: TrainConfig, select_device: Callable[[str], torch.device]):
        self.mode = cfg.parallel
        self.accumulation = cfg.gradient_accumulation_steps
        self.rank, self.world = 0, 1
        base = self.device = select_device(cfg.device)
        self.is_main = True
        if self.mode == "none":
            return
        if base.type == "mps":
            raise UserError("--parallel needs CUDA GPUs or the CPU; MPS has no torch.distributed backend")
        if not dist.is_initialized():
            backend = "nccl" if base.type == "cuda" else "gloo"
            if "RANK" in os.environ:  # torchrun: env:// rendezvous from MASTER_ADDR/PORT, RANK, WORLD_SIZE
                dist.init_process_group(backend)
            elif cfg.devices == 1:  # one process: an in-memory store, no rendezvous
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
            else:
                raise UserError(f"--devices {cfg.devices} with torch runs one process per device: use "
                                f"microgpt train --devices {cfg.devices} or torchrun --nproc-per-node {cfg.devices} "
                                "-m backends.cli train ...")
            atexit.register(_destroy)  # a run that ends in an error; close() ends the others in order
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.world != cfg.devices:
            raise UserError(f"--devices {cfg.devices} but the launcher started {self.world} processes; "
                            f"set --devices {self.world}")
        self.is_main = self.rank == 0
        if base.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = base

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the step calls: DDP around ``model``, or ``model`` itself sharded in place."""
        if self.mode == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            # the causal mask is a constant buffer: nothing to broadcast before each forward
            return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **{_SYNC_BUFFERS: False})
        if self.mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (self.world,), mesh_dim_names=("data",))
            for block in model.transformer.h:  # one all-gather per block in forward and backward
                fully_shard(block, mesh=mesh)
            # the root: embeddings, final norm, the tied head; resharded after every forward too, so an
            # evaluation (no backward to reshard) leaves the sharded parameters the optimizer holds
            fully_shard(model, mesh=mesh, reshard_after_forward=True)
        return model

    # -- the batch: this rank's rows of each micro-batch ----------------------------------------
    def micro_batches(self, x, y) -> list[tuple]:
        """This rank's slice of each of the K micro-batches of the global batch (x, y)."""
        xs, ys = (common_parallel.micro_batches(a, self.accumulation) for a in (x, y))
        return [(common_parallel.rank_slice(a, self.rank, self.world),
                 common_parallel.rank_slice(b, self.rank, self.world)) for a, b in zip(xs, ys)]

    def local(self, get_batch: Callable) -> Callable:
        """``get_batch`` giving this rank's rows of each global batch (for estimate_loss)."""
        def local_batch(split):
            return tuple(common_parallel.rank_slice(a, self.rank, self.world) for a in get_batch(split))
        return local_batch

    def sync_gradients(self, module: torch.nn.Module, last: bool):
        """Reduce gradients only on the last micro-batch: DDP's ``no_sync``, FSDP2's
        ``set_requires_gradient_sync``; nothing to do on one device.
        [torch≠jax] JAX's step averages the K micro-batches' gradients as values, and the compiler
        places the one reduction: nothing to hold back."""
        if self.mode == "ddp" and not last:
            return module.no_sync()
        if self.mode == "fsdp" and self.accumulation > 1:  # with one micro-batch it stays on
            module.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    # -- agreeing across ranks ------------------------------------------------------------------
    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks (a step's loss: the global batch's)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)  # SUM: gloo has no AVG
        return value / self.world

    def average(self, losses: dict[str, float]) -> dict[str, float]:
        """estimate_loss's per-rank means, averaged: every rank reports the same numbers."""
        if self.world == 1:
            return losses
        t = torch.tensor(list(losses.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(losses, (t / self.world).tolist()))

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if it is True on one (Ctrl-C: all ranks stop at the same step)."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        """The end of the training loop, on every rank: the process group is destroyed here, while
        the interpreter is whole, before rank 0 goes on alone (the exact loss of best/, loss.png),
        not left to atexit. Every rank has finished the same collectives by then (the last step's
        stop vote, and fsdp's gathers for the save); no barrier: a rank that a second Ctrl-C stops
        at once would leave the others waiting in it. See ``backends/parallel_launch.exit_rank``."""
        if self.mode != "none":
            _destroy()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# -- full tensors in and out of a sharded model (FSDP2 keeps DTensors) --------------------------

def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: an FSDP shard gathered from every rank (a collective), else ``t``."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A full tensor laid out as ``param``: this rank's shard if ``param`` is sharded."""
    if isinstance(param, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value


def host_array(t: torch.Tensor) -> np.ndarray:
    """A fresh numpy copy of a tensor that may be sharded (FSDP: gathered from every rank)."""
    return full(t).detach().to("cpu", copy=True).numpy()
