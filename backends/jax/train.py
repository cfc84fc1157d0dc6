"""Training and evaluation for the JAX GPT (Flax NNX + optax); sampling is ``sampling.py``, devices
and process settings ``device.py`` (both re-exported here, the backend module). Read it side by side
with ``backends/torch/train.py``: the same functions in the same order, and a ``Trainer`` with
the same methods (the contract is ``backends/interface.py``).

Weights and optimizer state go in and out in the canonical numpy layout of ``common.params``;
``backends/jax/layout.py`` maps it onto Flax's parameter tree.

[torch≠jax] A JAX training step is a pure function ``(state, x, y, lr) -> (loss, state)``
compiled once by ``jax.jit``: the ``Trainer`` splits its NNX model and optimizer into a
static graph definition and a pytree of arrays (``nnx.split``) once, and feeds the arrays
through the compiled step, donating the old buffers to the new ones. The NNX objects are
brought up to date (``nnx.update``) only when something outside the step reads them.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from backends.jax import layout, parallel
from backends.jax.device import (  # noqa: F401 (the contract)
    Placement, as_device, describe_device, process_settings, resolve_dtype, select_device, speed_settings)
from backends.jax.model import GPT
from backends.jax.sampling import generate
from common.config import ModelConfig, TrainConfig, param_dtype
from common.errors import UserError
from common.params import check_weights, init_weights
from common.schedule import get_lr

BACKEND = "jax"
DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}


def create_model(config: ModelConfig, weights: dict[str, np.ndarray] | None = None, *,
                 device: jax.Device | str = "cpu", param_dtype: str = "float32",
                 attention: str = "fused", seed: int = 0) -> GPT:
    """A GPT on ``device`` holding ``weights`` (canonical layout), or nanoGPT's init drawn from ``seed``."""
    if param_dtype == "float64" and not jax.config.jax_enable_x64:
        raise UserError("float64 needs JAX's 64-bit mode, which this process has not switched on; run it through "
                        "microgpt (or inside backends.process.settings), or set JAX_ENABLE_X64=1")
    # [torch≠jax] explicit RNG streams: "params" draws the initial weights, "dropout" the masks
    model = GPT(config, attention=attention, rngs=nnx.Rngs(params=seed, dropout=seed))
    # the .to(device=..., dtype=...) of torch: cast the parameters, then place all state on the device
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    nnx.update(model, jax.tree.map(lambda p: p.astype(DTYPES[param_dtype]), params))
    model.set_attributes(nnx.Embed, dtype=DTYPES[param_dtype])  # Embed fixed its dtype when built
    nnx.update(model, jax.device_put(nnx.as_pure(nnx.state(model)), as_device(device)))
    load_weights(model, init_weights(config, seed) if weights is None else weights)
    return model


def export_weights(model: GPT) -> dict[str, np.ndarray]:
    """The model's parameters in the canonical layout, as fresh numpy arrays."""
    # the tied head is wte: no entry of its own
    return layout.to_canonical(nnx.as_pure(nnx.state(model, nnx.Param)), model.config)


def load_weights(model: GPT, weights: dict[str, np.ndarray]) -> None:
    """Copy ``weights`` (canonical layout) into the model; ValueError names every mismatch."""
    problems = check_weights(model.config, weights)
    if problems:
        raise ValueError("; ".join(problems))
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    # [torch≠jax] canonical shapes are torch's: Linear weights are transposed into Flax kernels
    nnx.update(model, layout.from_canonical(params, weights, model.config))


def adamw(dtype, **hyperparameters) -> optax.GradientTransformation:
    """``optax.adamw`` with its hyperparameters (as ``dtype`` arrays) kept in the optimizer state,
    so that the learning rate is set before each step as torch sets ``group["lr"]``.

    [torch≠jax] torch's AdamW is one class; optax composes transformations, made here."""
    return optax.inject_hyperparams(optax.adamw, static_args=("mask",), hyperparam_dtype=dtype)(**hyperparameters)


def configure_optimizer(model: GPT, cfg: TrainConfig) -> nnx.Optimizer:
    """AdamW with weight decay on every tensor with ndim >= 2, none on biases and norms, after
    clipping the gradients' global norm to ``grad_clip`` (if > 0).

    [torch≠jax] one optax transformation with a weight-decay mask where torch has two parameter
    groups; the optimizer state is made beside the parameters, on their device (no ``device``)."""
    dtype = jax.tree.leaves(nnx.as_pure(nnx.state(model, nnx.Param)))[0].dtype
    return nnx.Optimizer(model, _transformation(model.config, cfg, dtype), wrt=nnx.Param)


@functools.lru_cache(maxsize=None)
def _transformation(config: ModelConfig, cfg: TrainConfig, dtype) -> optax.GradientTransformation:
    # [torch≠jax] one transformation object per configuration: the optimizer keeps it as a static attribute,
    # so two Trainers built alike have equal graph definitions and share one compiled step.
    # Every optax default that differs from torch.optim.AdamW is set: torch's eps is optax's eps
    # (added to sqrt(v_hat)), never eps_root; optax's weight_decay default is 1e-4, torch's 1e-2
    tx = adamw(dtype, learning_rate=get_lr(0, cfg), b1=cfg.beta1, b2=cfg.beta2, eps=1e-8, eps_root=0.0,
               weight_decay=cfg.weight_decay, mask=layout.decay_mask(config))
    if cfg.grad_clip > 0:
        tx = optax.chain(clip_grad_norm(cfg.grad_clip), tx)
    return tx


def set_learning_rate(optimizer: nnx.Optimizer, lr) -> None:
    """The learning rate of the next step. [torch≠jax] ``inject_hyperparams`` keeps it in the
    optimizer state, so inside the compiled step it is a value like any other."""
    optax.tree_utils.tree_get(optimizer.opt_state, "learning_rate")[...] = lr


def clip_grad_norm(max_norm: float) -> optax.GradientTransformation:
    """Scale gradients so their global L2 norm is at most ``max_norm`` (by max_norm / norm).

    [torch≠jax] torch clips the parameters' ``.grad`` in place after ``backward()``; JAX's gradients
    are values flowing through optax: this is the transformation chained before AdamW."""
    return optax.clip_by_global_norm(max_norm)


# [torch≠jax] the eval forward pass, jitted, on the split model's arrays; torch's estimate_loss
# calls the module it is given, which compiles itself lazily if at all (torch.compile)
@functools.partial(jax.jit, static_argnums=0)
def _eval_loss(graphdef, state, x, y):
    model = nnx.merge(graphdef, state)
    _, loss = model(x, y)
    return loss


def estimate_loss(model: GPT, get_batch: Callable, eval_iters: int,
                  device: Placement | str | None = None) -> dict[str, float]:
    """Mean loss over ``eval_iters`` batches per split, in eval mode, without gradients.

    [torch≠jax] no gradients are computed because none are asked for (no ``no_grad`` needed);
    no autocast: the compute dtype is a static attribute of the layers (``dtype=``).
    """
    out = {}
    model.eval()  # dropout off
    graphdef, state = nnx.split(model)  # one graph traversal; the jitted forward takes plain arrays
    device = as_device(device)
    for split in ("train", "val"):
        losses = []
        for k in range(eval_iters):
            X, Y = (jax.device_put(a, device) for a in get_batch(split))
            losses.append(_eval_loss(graphdef, state, X, Y))
        out[split] = float(np.mean(np.asarray(jnp.stack(losses), dtype=np.float64)))  # one host sync per split
    model.train()  # dropout back on
    return out


def _train_step(graphdef, state, x, y, lr):
    """One AdamW step at learning rate ``lr``, as a pure function of the arrays in ``state``."""
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model, x, y):
        _, loss = model(x, y)
        return loss

    # K micro-batches arrive stacked, (K, B/K, T) (common/parallel.py): their mean gradient is the
    # batch's. [torch≠jax] functional gradients: no .backward(), no .grad to zero, no no_sync
    micro = [(x, y)] if x.ndim == 2 else [(x[k], y[k]) for k in range(x.shape[0])]  # unrolled: K is small
    losses, each = zip(*(nnx.value_and_grad(loss_fn)(model, xk, yk) for xk, yk in micro))  # w.r.t. every nnx.Param
    loss, grads = losses[0], each[0]
    if len(micro) > 1:
        loss, grads = sum(losses) / len(micro), jax.tree.map(lambda *g: sum(g) / len(micro), *each)
    set_learning_rate(optimizer, lr)
    optimizer.update(model, grads)  # clip, AdamW, weight decay
    return loss, nnx.state((model, optimizer))


# [torch≠jax] Trainer.loss_and_grads and Trainer.logits run these compiled functions
# (``_loss_and_grads``, ``_logits``); torch's Trainer calls its module, compiled lazily if at all
@nnx.jit
def _loss_and_grads(model, x, y):
    return nnx.value_and_grad(lambda m: m(x, y)[1])(model)


@nnx.jit
def _logits(model, x):
    logits, _ = model(x)
    return logits


class Trainer:
    """One model, its optimizer and its device: what the CLI, the benchmark and the parity suite drive."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig,
                 weights: dict[str, np.ndarray] | None = None):
        self.model_config = model_config
        self.train_config = train_config
        self.parallel = parallel.Parallel(train_config, select_device)  # the mesh, and where arrays live on it
        self.device = self.parallel.device
        self.dtype = resolve_dtype(train_config.dtype, self.device)
        self._param_dtype = np.dtype(param_dtype(self.dtype))
        self._model = create_model(model_config, weights, device=self.device, param_dtype=param_dtype(self.dtype),
                                   attention=train_config.attention, seed=train_config.seed)
        self._optimizer = configure_optimizer(self._model, train_config)
        if self.dtype == "bfloat16":
            # [torch≠jax] no autocast context: the Linear layers compute in bfloat16 from float32
            # params (Flax's dtype=), as autocast runs torch's Linears; embeddings, the residual
            # stream, LayerNorms, the tied head (wte.attend, a small matmul) and the loss stay float32
            self._model.set_attributes(nnx.Linear, dtype=jnp.bfloat16)
        # [torch≠jax] jax.jit always compiles: split the NNX objects once into a static graph and a
        # pytree of arrays, all committed to the device (so the first step's inputs look like every
        # later step's: one compilation); the jitted step maps arrays to arrays, donating the old ones
        # (on a mesh: replicated for ddp, sharded for fsdp; jit keeps the layout from step to step)
        self._graphdef = nnx.graphdef((self._model, self._optimizer))
        self._resplit()  # self._state: the arrays, placed
        self._step_fn = self.parallel.jit(_train_step, self._state)
        self._compiled = None  # the AOT executable from compile(), and the batch it was built for
        self._compiled_for = None
        self.iter_num = 0  # optimizer steps taken; drives the learning-rate schedule

    # -- the NNX objects, brought up to date with the arrays of the compiled step --------------
    # [torch≠jax] the compiled step returns new arrays and leaves the NNX objects on the donated ones:
    # ``model`` and ``optimizer`` are properties that bring them up to date first (``_sync``), and
    # ``_resplit`` takes their arrays as the state after a change outside the step; torch's step
    # updates its model and optimizer in place, plain attributes
    def _sync(self) -> None:
        if not self._synced:
            nnx.update((self._model, self._optimizer), self._state)
            self._synced = True

    def _resplit(self) -> None:
        """After the NNX objects were changed outside the step, take their arrays as the state."""
        nnx.update((self._model, self._optimizer), self.parallel.place(nnx.state((self._model, self._optimizer))))
        self._state = nnx.state((self._model, self._optimizer))
        self._synced = True  # do the NNX objects hold the current arrays? (not after a step)

    @property
    def model(self) -> GPT:
        self._sync()
        return self._model

    @property
    def optimizer(self) -> nnx.Optimizer:
        self._sync()
        return self._optimizer

    # -- moving data -------------------------------------------------------------------------
    def to_device(self, array: np.ndarray) -> jax.Array:
        array = np.asarray(array)
        return jax.device_put(array, self.parallel.batch_placement(array))  # on a mesh: rows split

    def wait(self, loss: jax.Array | None = None) -> None:
        """Block until all queued work (the step that produced ``loss``, its update) is done."""
        jax.block_until_ready((loss, self._state))

    # [torch≠jax] the compiled step takes the lr as an argument, an array of the parameters' dtype;
    # torch's step sets it on the optimizer (set_learning_rate) before stepping
    def _lr(self) -> np.ndarray:  # get_lr(iter_num), in the parameters' dtype
        return np.asarray(get_lr(self.iter_num, self.train_config), dtype=self._param_dtype)

    def compile(self, x, y) -> dict[str, float]:
        """Ahead-of-time lowering and compilation of the training step for batches shaped like
        (x, y), timed separately; ``step`` then runs this executable. [torch≠jax] torch.compile is lazy."""
        x, y = self.parallel.batch(x), self.parallel.batch(y)
        t0 = time.perf_counter()
        lowered = self._step_fn.lower(self._graphdef, self._state, x, y, self._lr())
        t1 = time.perf_counter()
        self._compiled = lowered.compile()
        t2 = time.perf_counter()
        self._compiled_for = (x.shape, x.dtype, y.shape, y.dtype)
        return {"lower_s": t1 - t0, "compile_s": t2 - t1}

    @property
    def compiled_step(self):
        """The executable ``compile`` built (its ``memory_analysis()`` is in benchmark reports), or None."""
        return self._compiled

    # -- training ----------------------------------------------------------------------------
    def step(self, x, y) -> jax.Array:
        """One AdamW step on the batch (x, y); returns the loss, still on the device."""
        lr = self._lr()  # get_lr(iter_num), set on the optimizer inside the compiled step
        x, y = self.parallel.batch(x), self.parallel.batch(y)  # K micro-batches stacked; rows split on a mesh
        if self._compiled is not None and self._compiled_for == (x.shape, x.dtype, y.shape, y.dtype):
            loss, self._state = self._compiled(self._state, x, y, lr)  # static graphdef is baked in
        else:
            loss, self._state = self._step_fn(self._graphdef, self._state, x, y, lr)
        self._synced = False  # the NNX objects still point at the donated buffers
        self.iter_num += 1
        return loss

    def loss_and_grads(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and the gradient of every parameter (canonical layout), without a step."""
        loss, grads = _loss_and_grads(self.model, self.to_device(x), self.to_device(y))
        self._resplit()  # dropout may have advanced the model's RNG streams
        return float(loss), layout.to_canonical(nnx.as_pure(grads), self.model_config)

    def logits(self, x, train: bool = False) -> np.ndarray:
        model = self.model
        model.train() if train else model.eval()
        logits = _logits(model, self.to_device(x))
        model.train()
        self._resplit()
        return np.asarray(logits.astype(jnp.float32)) if self.dtype == "bfloat16" else np.asarray(logits)

    def estimate_loss(self, get_batch: Callable, eval_iters: int) -> dict[str, float]:
        out = estimate_loss(self.model, get_batch, eval_iters, self.parallel.rows)  # on a mesh: rows split
        return self.parallel.average(out)

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 uniforms: np.ndarray | None = None) -> np.ndarray:
        return generate(self.model, idx, max_new_tokens, temperature, top_k, seed, uniforms, self.parallel.placement)

    # -- state in the canonical layout -------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        return export_weights(self.model)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        load_weights(self.model, weights)
        self._resplit()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's moments as ``exp_avg/<name>``, ``exp_avg_sq/<name>``, and the step count.
        [torch≠jax] torch's exp_avg / exp_avg_sq are optax's mu / nu; its step is optax's count."""
        return {"step": np.asarray(self.iter_num, dtype=np.int64)} | layout.adam_to_canonical(
            self.optimizer.opt_state, self.model_config)

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        layout.load_adam(self.optimizer, state, self.model_config, self.parallel.placement)
        self.iter_num = int(state["step"])
        self._resplit()

    def rng_state(self) -> np.ndarray:
        """[torch≠jax] every Dropout's RNG stream (key data and count), as one uint32 array."""
        return layout.flatten_rng(jax.tree.leaves(nnx.as_pure(nnx.state(self.model, nnx.RngState))))

    def set_rng_state(self, state: np.ndarray) -> None:
        leaves, treedef = jax.tree.flatten(nnx.as_pure(nnx.state(self.model, nnx.RngState)))
        try:
            new = layout.unflatten_rng(state, leaves, self.parallel.placement)
        except ValueError as exc:
            raise UserError(f"{exc}; resume with the model config the checkpoint was written with") from None
        nnx.update(self._model, jax.tree.unflatten(treedef, new))
        self._resplit()
