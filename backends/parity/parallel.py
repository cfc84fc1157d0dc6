"""The ``parallel`` rows of ``microgpt parity`` (issue 13): for each backend, ddp and fsdp on 2
devices against 1 device, gradient accumulation K=2 against the undivided batch, and torch-ddp
against jax-ddp; loss curve and final parameters after a few steps, from the canonical init on
the session's batches, with the tolerances of the shared training run.

The device count of a process is fixed when it starts (torch: one process per device; JAX: host
devices set before it initialises), so each backend's runs happen in one child process of this
module: ``torchrun --nproc-per-node 2 -m backends.parity.parallel ...`` for torch, ``python -m
backends.parity.parallel ...`` with 2 host devices for JAX. The child writes an ``.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from backends.parity.report import Row, compare, scalars
from common.config import to_dict

# (name, parallel, devices, gradient_accumulation_steps)
RUNS = (("one", "none", 1, 1), ("ddp", "ddp", 2, 1), ("fsdp", "fsdp", 2, 1), ("k2", "none", 1, 2))
MAX_STEPS = 10  # a few steps: each run is a fresh process's worth of work


def parallel(s) -> list[Row]:
    """The rows; ``s`` is the parity ``Session``."""
    steps = min(s.steps, MAX_STEPS)
    results = {name: _child(name, s, steps) for name in dict.fromkeys(s.names)}
    rows = []
    for name, runs in results.items():
        for run, label in (("ddp", "ddp on 2 devices"), ("fsdp", "fsdp on 2 devices"),
                           ("k2", "grad accumulation K=2")):
            against = "1 device" if run != "k2" else "one batch"
            rows.append(compare(f"{name} {label} vs {against}: {steps}-step losses + params",
                                _flat(runs["one"]), _flat(runs[run]), s.tol["final_params"]))
    if len(results) == 2:
        (a, ra), (b, rb) = results.items()
        rows.append(compare(f"{a}-ddp vs {b}-ddp (2 devices): {steps}-step losses + params",
                            _flat(ra["ddp"]), _flat(rb["ddp"]), s.tol["final_params"]))
    return rows


def _flat(run: dict) -> dict:
    return scalars(run["losses"], "loss at step") | run["weights"]


def _child(backend: str, s, steps: int) -> dict:
    configs = json.dumps({"model": to_dict(s.mc), "train": to_dict(s.tc)})
    args = ["-m", "backends.parity.parallel", "--backend", backend, "--configs", configs, "--dtype", s.dtype,
            "--seed", str(s.seed), "--steps", str(steps)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs.npz"
        if backend == "torch":
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
        else:
            cmd = [sys.executable, *args]
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=env,
                              cwd=Path(__file__).resolve().parents[2])
        if done.returncode != 0:
            raise RuntimeError(f"the {backend} parallel runs failed:\n{done.stderr[-3000:]}")
        with np.load(out) as z:
            return {run: {"losses": z[f"{run}/losses"],
                          "weights": {k.split("|", 1)[1]: z[k] for k in z.files if k.startswith(f"{run}|")}}
                    for run, *_ in RUNS}


def _runs(backend: str, configs: str, dtype: str, seed: int, steps: int, out: str) -> None:
    """In the child: each run of RUNS, ``steps`` steps from the canonical init on the session's batches."""
    from backends import load_backend, process
    from common.config import ModelConfig, TrainConfig
    from backends.parity.session import synthetic_corpus
    from common.batches import BatchSampler
    from common.params import init_weights

    module = load_backend(backend)
    # under torchrun rank 0 writes the file; the one-device runs need no other rank (JAX: one process)
    main = os.environ.get("RANK", "0") == "0"
    saved = {}
    for name, mode, devices, accumulation in RUNS:
        if mode == "none" and not main:
            continue
        given = json.loads(configs)
        mc = ModelConfig(**given["model"])
        tc = TrainConfig(**given["train"] | dict(parallel=mode, devices=devices, gradient_accumulation_steps=accumulation))
        with process.settings(module, tc):
            trainer = module.Trainer(mc, tc, weights=init_weights(mc, seed, dtype=np.dtype(dtype)))
            sampler = BatchSampler(synthetic_corpus(mc.vocab_size, seed=seed), tc.batch_size, mc.block_size, seed)
            losses = [float(trainer.step(*sampler.get_batch("train"))) for _ in range(steps)]
            weights = trainer.weights()  # every rank: fsdp gathers
        saved[f"{name}/losses"] = np.asarray(losses)
        saved.update({f"{name}|{k}": v for k, v in weights.items()})
    if main:
        np.savez(out, **saved)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the parallel parity runs of one backend (a child of microgpt parity)")
    for name, kind in (("backend", str), ("configs", str), ("dtype", str), ("seed", int), ("steps", int),
                       ("out", str)):
        p.add_argument(f"--{name}", type=kind, required=True)
    a = p.parse_args(argv)
    if a.backend == "jax":
        from backends.jax.parallel import request_host_devices

        request_host_devices(2)
    _runs(a.backend, a.configs, a.dtype, a.seed, a.steps, a.out)


if __name__ == "__main__":
    main()
