"""Training and evaluation for the PyTorch GPT; sampling is ``sampling.py``, devices and process
settings ``device.py`` (both re-exported here, the backend module). Read it side by side with
``backends/jax/train.py``: the same functions in the same order, and a ``Trainer`` with the
same methods (the contract is ``backends/interface.py``).

Weights and optimizer state go in and out in the canonical numpy layout of
``common.params`` (nanoGPT's state-dict names; Linear weights ``(out, in)``), so a
checkpoint written here resumes in JAX and the reverse.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from backends.torch import parallel
from backends.torch.device import (  # noqa: F401 (the contract)
    describe_device, process_settings, resolve_dtype, select_device, speed_settings)
from backends.torch.model import GPT
from backends.torch.sampling import generate
from common.config import ModelConfig, TrainConfig, param_dtype
from common.errors import UserError
from common.params import check_weights, init_weights, param_layout
from common.schedule import get_lr

BACKEND = "torch"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def create_model(config: ModelConfig, weights: dict[str, np.ndarray] | None = None, *,
                 device: torch.device | str = "cpu", param_dtype: str = "float32",
                 attention: str = "fused", seed: int = 0) -> GPT:
    """A GPT on ``device`` holding ``weights`` (canonical layout), or nanoGPT's init drawn from ``seed``."""
    # torch draws a random init for every layer as it builds it, which load_weights replaces:
    # from a forked generator, so that building a model leaves the process's (dropout) alone
    with torch.random.fork_rng(devices=[]):
        model = GPT(config, attention=attention)
    model.to(device=device, dtype=DTYPES[param_dtype])
    load_weights(model, init_weights(config, seed) if weights is None else weights)
    return model


def export_weights(model: GPT) -> dict[str, np.ndarray]:
    """The model's parameters in the canonical layout, as fresh numpy arrays."""
    params = dict(model.named_parameters())  # the tied lm_head shows up once, as transformer.wte.weight
    return {spec.name: parallel.host_array(params[spec.name]) for spec in param_layout(model.config)}  # fsdp: gathered


@torch.no_grad()
def load_weights(model: GPT, weights: dict[str, np.ndarray]) -> None:
    """Copy ``weights`` (canonical layout) into the model; ValueError names every mismatch."""
    problems = check_weights(model.config, weights)
    if problems:
        raise ValueError("; ".join(problems))
    params = dict(model.named_parameters())
    for spec in param_layout(model.config):
        p = params[spec.name]
        # [torch≠jax] canonical shapes are torch's own: Linear weights are (out, in), no transpose
        p.copy_(parallel.like(torch.as_tensor(np.asarray(weights[spec.name]), dtype=p.dtype), p))  # fsdp: the shard


def configure_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with two groups: weight decay on every tensor with ndim >= 2, none on biases and norms."""
    params = dict(model.named_parameters())
    decay = {spec.name for spec in param_layout(model.config) if spec.decay}
    groups = [
        {"params": [p for n, p in params.items() if n in decay], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0},
    ]
    # the fused kernel updates every parameter in one pass (one launch on CUDA); torch has it
    # for CUDA and CPU tensors, and falls back to the per-tensor loop elsewhere (MPS)
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=get_lr(0, cfg), betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The learning rate of the next step, in every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale gradients so their global L2 norm is at most ``max_norm``; returns the norm.

    [torch≠jax] ``torch.nn.utils.clip_grad_norm_`` scales by max_norm / (norm + 1e-6);
    optax's ``clip_by_global_norm`` by max_norm / norm. We take torch's norm and scale
    exactly as optax does, so the two backends agree to round-off, without a host sync.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    scale = torch.clamp(max_norm / norm, max=1.0)
    torch._foreach_mul_(grads, scale)
    return norm


@torch.no_grad()
def estimate_loss(model: GPT, get_batch: Callable, eval_iters: int, device: torch.device | str = "cpu",
                  autocast=None) -> dict[str, float]:
    """Mean loss over ``eval_iters`` batches per split, in eval mode, without gradients."""
    out = {}
    model.eval()  # dropout off
    for split in ("train", "val"):
        losses = torch.zeros(eval_iters, dtype=torch.float64, device=device)
        for k in range(eval_iters):
            X, Y = (torch.from_numpy(a).to(device) for a in get_batch(split))
            with autocast or contextlib.nullcontext():
                _, loss = model(X, Y)
            losses[k] = loss
        out[split] = losses.mean().item()  # one host sync per split
    model.train()  # dropout back on
    return out


class Trainer:
    """One model, its optimizer and its device: what the CLI, the benchmark and the parity suite drive."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig,
                 weights: dict[str, np.ndarray] | None = None):
        self.model_config = model_config
        self.train_config = train_config
        self.parallel = parallel.Parallel(train_config, select_device)  # ranks, this rank's device
        self.device = self.parallel.device
        self.dtype = resolve_dtype(train_config.dtype, self.device)
        self.model = create_model(model_config, weights, device=self.device, param_dtype=param_dtype(self.dtype),
                                  attention=train_config.attention, seed=train_config.seed)
        wrapped = self.parallel.wrap(self.model)  # DDP, or fully_shard in place; before the optimizer sees the params
        self.optimizer = configure_optimizer(self.model, train_config, self.device)
        self.autocast = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
                         if self.dtype == "bfloat16" else contextlib.nullcontext())
        self.forward = torch.compile(wrapped, mode=train_config.compile_mode) if train_config.compile else wrapped
        self.iter_num = 0  # optimizer steps taken; drives the learning-rate schedule

    # -- moving data -------------------------------------------------------------------------
    def to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))  # the model views batches as (B*T,)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def wait(self, loss: torch.Tensor | None = None) -> None:
        """Block until all queued work (the step that produced ``loss``, its update) is done."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elif loss is not None:
            loss.item()  # on the CPU the work is already done; a host read makes sure

    def compile(self, x, y) -> dict[str, float]:
        """Ahead-of-time compilation where the framework has it. [torch≠jax] torch.compile is
        lazy: it compiles inside the first step, so there is nothing to time separately here."""
        return {}

    @property
    def compiled_step(self):
        """[torch≠jax] None: eager torch has no executable, and torch.compile keeps its graphs to itself."""
        return None

    # -- training ----------------------------------------------------------------------------
    def step(self, x, y) -> torch.Tensor:
        """One AdamW step on the batch (x, y); returns the loss, still on the device."""
        set_learning_rate(self.optimizer, get_lr(self.iter_num, self.train_config))
        K = self.parallel.accumulation
        total = None
        # K micro-batches, this rank's rows of each (common/parallel.py); gradients add up
        for k, (xk, yk) in enumerate(self.parallel.micro_batches(x, y)):
            xk = xk if isinstance(xk, torch.Tensor) else self.to_device(xk)
            yk = yk if isinstance(yk, torch.Tensor) else self.to_device(yk)
            with self.parallel.sync_gradients(self.forward, last=k == K - 1):  # reduce once, at the end
                with self.autocast:
                    _, loss = self.forward(xk, yk)
                (loss / K if K > 1 else loss).backward()
            if K > 1:
                total = loss.detach() / K if total is None else total + loss.detach() / K
        if self.train_config.grad_clip > 0:
            clip_grad_norm(list(self.model.parameters()), self.train_config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter_num += 1
        return self.parallel.mean(total if K > 1 else loss.detach())  # the global batch's loss

    def loss_and_grads(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and the gradient of every parameter (canonical layout), without a step."""
        self.model.zero_grad(set_to_none=True)
        with self.autocast:
            _, loss = self.forward(self.to_device(x), self.to_device(y))
        loss.backward()
        params = dict(self.model.named_parameters())
        grads = {s.name: parallel.host_array(params[s.name].grad) for s in param_layout(self.model_config)}
        self.model.zero_grad(set_to_none=True)
        return loss.item(), grads

    @torch.no_grad()
    def logits(self, x, train: bool = False) -> np.ndarray:
        self.model.train(train)
        with self.autocast:
            logits, _ = self.forward(self.to_device(x))
        self.model.train()
        return logits.float().cpu().numpy() if self.dtype == "bfloat16" else logits.cpu().numpy()

    def estimate_loss(self, get_batch: Callable, eval_iters: int) -> dict[str, float]:
        out = estimate_loss(self.forward, self.parallel.local(get_batch), eval_iters, self.device, self.autocast)
        return self.parallel.average(out)  # the same numbers on every rank

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 uniforms: np.ndarray | None = None) -> np.ndarray:
        return generate(self.model, idx, max_new_tokens, temperature, top_k, seed, uniforms, self.device)

    # -- state in the canonical layout -------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        return export_weights(self.model)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        load_weights(self.model, weights)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's moments as ``exp_avg/<name>``, ``exp_avg_sq/<name>``, and the step count."""
        params = dict(self.model.named_parameters())
        out = {"step": np.asarray(self.iter_num, dtype=np.int64)}
        for spec in param_layout(self.model_config):
            state = self.optimizer.state.get(params[spec.name], {})
            for key in ("exp_avg", "exp_avg_sq"):  # before the first step: zeros, as optax starts
                value = state.get(key)
                out[f"{key}/{spec.name}"] = (np.zeros(spec.shape, dtype=torch.empty(0, dtype=params[spec.name].dtype).numpy().dtype)
                                             if value is None else parallel.host_array(value))
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        params = dict(self.model.named_parameters())
        step = int(state["step"])
        for spec in param_layout(self.model_config):
            p = params[spec.name]
            self.optimizer.state[p] = {
                # fused/capturable AdamW keeps its step on the parameter's device
                "step": torch.tensor(float(step), dtype=torch.float32,
                                     device=p.device if self.optimizer.defaults.get("fused") else "cpu"),
                **{key: parallel.like(torch.as_tensor(np.asarray(state[f"{key}/{spec.name}"]), dtype=p.dtype,
                                                      device=p.device).clone(), p)  # fsdp: the shard
                   for key in ("exp_avg", "exp_avg_sq")},
            }
        self.iter_num = step

    def rng_state(self) -> np.ndarray:
        """[torch≠jax] the global generators dropout draws from: the CPU's, and on CUDA the GPU's."""
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return torch.cat(states).numpy().copy()

    def set_rng_state(self, state: np.ndarray) -> None:
        state = torch.from_numpy(np.asarray(state, dtype=np.uint8).copy())
        cpu = torch.get_rng_state().numel()
        gpu = torch.cuda.get_rng_state(self.device).numel() if self.device.type == "cuda" else 0
        # on a GPU: the CPU's state, then the GPU's (a CPU-written state leaves the GPU's generator as
        # seeded); on a CPU: the CPU's, and a GPU-written state's GPU part has no generator to go to
        if state.numel() < cpu or (gpu and state.numel() not in (cpu, cpu + gpu)):
            raise UserError(f"the saved torch RNG state has {state.numel()} bytes, this device needs {cpu + gpu}; "
                            "the checkpoint is damaged")
        torch.set_rng_state(state[:cpu])
        if gpu and state.numel() == cpu + gpu:
            torch.cuda.set_rng_state(state[cpu:], self.device)
