"""Training, evaluation and sampling for the JAX GPT (Flax NNX + optax). Mirrors ``backends/torch/train.py``:
the same public functions and the same ``Trainer`` methods, with the same signatures.

Weights and optimizer state go in and out in the canonical numpy layout of
``common.params`` (nanoGPT's state-dict names; Linear weights ``(out, in)``, which Flax
stores transposed as ``(in, out)`` kernels), so a checkpoint written here resumes in
PyTorch and the reverse.

[torch≠jax] A JAX training step is a pure function ``(state, x, y) -> (loss, state)``
compiled once by ``jax.jit``: the ``Trainer`` splits its NNX model and optimizer into a
static graph definition and a pytree of arrays (``nnx.split``) once, and feeds the arrays
through the compiled step, donating the old buffers to the new ones. The NNX objects are
brought up to date (``nnx.update``) only when something outside the step reads them.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from common.config import ModelConfig, TrainConfig
from common.errors import UserError
from common.params import ParamSpec, init_weights, param_layout
from backends.jax.model import GPT

BACKEND = "jax"
DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}


def _gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib, or no GPU on this machine
        return []


def select_device(requested: str = "auto") -> jax.Device:
    """A GPU if present, else the CPU; an explicit GPU request must be met."""
    if requested in ("cuda", "gpu"):
        if not _gpus():
            raise UserError(f"--device {requested} was asked for, but jax sees no GPU; "
                            "install a CUDA jaxlib (pip install -U 'jax[cuda12]') or use --device cpu or auto")
        return _gpus()[0]
    if requested == "mps":  # [torch≠jax] Apple's MPS is a torch device; jax runs on the CPU there
        raise UserError("--device mps is only for the torch backend; use --device cpu or auto with jax")
    if requested == "cpu":
        return jax.devices("cpu")[0]
    return (_gpus() or jax.devices("cpu"))[0]


def _device(device: jax.Device | str | None) -> jax.Device:
    return select_device(device) if isinstance(device, str) else (device or select_device("auto"))


def resolve_dtype(requested: str, device: jax.Device) -> str:
    """``auto`` means bfloat16 compute on a GPU, float32 elsewhere."""
    if requested != "auto":
        return requested
    if device.platform == "gpu":
        return "bfloat16"
    return "float32"


def set_matmul_precision(tf32: bool) -> None:
    """Say explicitly whether float32 matmuls may use TF32 on a GPU (never inherited by accident)."""
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")


def _enable_x64(dtype: str) -> None:
    """[torch≠jax] JAX computes in 64 bits only when asked for globally, before the arrays are made."""
    if dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def get_lr(it: int, cfg: TrainConfig) -> float:
    """nanoGPT's schedule: linear warmup, then cosine decay to min_lr, then min_lr."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    decay_ratio = (it - cfg.warmup_iters) / (cfg.lr_decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # goes from 1 to 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def _lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """``get_lr`` as an optax schedule, traced into the compiled step.

    [torch≠jax] torch's Trainer sets ``get_lr(iter_num)`` on the optimizer before each step;
    optax calls the schedule with its count of updates so far (0 for the first step), which
    is that same ``it``. The schedule is ``get_lr`` itself, tabulated in float64 over warmup
    and decay (constant min_lr after): the same formula traced in float32 would differ from
    torch's float64 ``math.cos`` by up to ~4e-7 relative; the table is exact to the last bit
    of float32 (or float64 with x64 enabled).
    """
    table = np.array([get_lr(it, cfg) for it in range(cfg.lr_decay_iters + 1)], dtype=np.float64)

    def schedule(count):
        lr = jnp.asarray(table, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        return lr[jnp.minimum(count, cfg.lr_decay_iters)]  # min_lr from lr_decay_iters on

    return schedule


# -- the canonical layout <-> Flax's parameter tree ------------------------------------------
_FLAX_LEAF = {"embedding": "embedding", "linear": "kernel", "bias": "bias", "norm": "scale"}


def _flax_path(spec: ParamSpec) -> tuple:
    """``transformer.h.0.attn.c_attn.weight`` -> ``("transformer", "h", 0, "attn", "c_attn", "kernel")``."""
    *modules, _ = spec.name.split(".")
    return tuple(int(m) if m.isdigit() else m for m in modules) + (_FLAX_LEAF[spec.kind],)


def _key_path(keys) -> tuple:
    path = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in keys)
    return path[:-1] if path[-1:] == ("value",) else path  # a leaf inside an nnx.Variable


def _by_path(tree) -> dict[tuple, jax.Array]:
    """Leaves of a parameter-shaped tree (params, grads, AdamW moments) by their Flax path."""
    return {_key_path(kp): leaf for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _to_canonical(spec: ParamSpec, value) -> np.ndarray:
    array = np.array(value, copy=True)  # a fresh host copy, never a view of a device buffer
    # [torch≠jax] Flax's kernels are (in, out); the canonical (torch) layout is (out, in)
    return np.ascontiguousarray(array.T) if spec.kind == "linear" else array


def _from_canonical(spec: ParamSpec, value, like: jax.Array) -> jax.Array:
    array = np.array(value, copy=True)  # copy: never share memory with the caller (e.g. a torch tensor)
    array = array.T if spec.kind == "linear" else array  # (out, in) -> Flax's (in, out)
    if array.shape != like.shape:
        raise ValueError(f"{spec.name}: shape {np.shape(value)}, expected {spec.shape}")
    return jax.device_put(array.astype(like.dtype), next(iter(like.devices())))


def _replace_canonical(tree, values: dict[str, np.ndarray], prefix: str, cfg: ModelConfig):
    """A copy of the parameter-shaped ``tree`` holding ``values[prefix + canonical name]``."""
    name_of = {_flax_path(spec): spec for spec in param_layout(cfg)}

    def fill(keys, old):
        spec = name_of[_key_path(keys)]
        return _from_canonical(spec, values[prefix + spec.name], old)

    return jax.tree_util.tree_map_with_path(fill, tree)


def create_model(config: ModelConfig, weights: dict[str, np.ndarray] | None = None, *,
                 device: jax.Device | str = "cpu", param_dtype: str = "float32",
                 attention: str = "fused", seed: int = 0) -> GPT:
    """A GPT on ``device`` holding ``weights`` (canonical layout), or nanoGPT's init drawn from ``seed``."""
    _enable_x64(param_dtype)
    # [torch≠jax] explicit RNG streams: "params" draws the initial weights, "dropout" the masks
    model = GPT(config, attention=attention, rngs=nnx.Rngs(params=seed, dropout=seed))
    # the .to(device=..., dtype=...) of torch: cast the parameters, then place all state on the device
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    nnx.update(model, jax.tree.map(lambda p: p.astype(DTYPES[param_dtype]), params))
    model.set_attributes(nnx.Embed, dtype=DTYPES[param_dtype])  # Embed fixed its dtype when built
    nnx.update(model, jax.device_put(nnx.as_pure(nnx.state(model)), _device(device)))
    load_weights(model, init_weights(config, seed) if weights is None else weights)
    return model


def export_weights(model: GPT) -> dict[str, np.ndarray]:
    """The model's parameters in the canonical layout, as fresh numpy arrays."""
    params = _by_path(nnx.as_pure(nnx.state(model, nnx.Param)))  # the tied head is wte: no entry of its own
    return {spec.name: _to_canonical(spec, params[_flax_path(spec)]) for spec in param_layout(model.config)}


def load_weights(model: GPT, weights: dict[str, np.ndarray]) -> None:
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    # [torch≠jax] canonical shapes are torch's: Linear weights are transposed into Flax kernels
    nnx.update(model, _replace_canonical(params, weights, "", model.config))


def configure_optimizer(model: GPT, cfg: TrainConfig, device: jax.Device | str) -> nnx.Optimizer:
    """AdamW with weight decay on every tensor with ndim >= 2, none on biases and norms,
    after clipping the gradients' global norm to ``grad_clip`` (if > 0), on the schedule of ``get_lr``.

    [torch≠jax] the optimizer state is created beside the parameters, on their device; ``device`` is unused.
    """
    return nnx.Optimizer(model, _adamw(model.config, cfg), wrt=nnx.Param)


@functools.lru_cache(maxsize=None)
def _adamw(config: ModelConfig, cfg: TrainConfig) -> optax.GradientTransformation:
    # one transformation object per pair of configs: the optimizer keeps it as a static attribute,
    # so two Trainers built alike have equal graph definitions and share one compiled step
    decay = {_flax_path(spec): spec.decay for spec in param_layout(config)}

    def decay_mask(params):  # the weight-decay groups of torch, as a tree of booleans
        return jax.tree_util.tree_map_with_path(lambda keys, _: decay[_key_path(keys)], params)

    # every optax default that differs from torch.optim.AdamW is set here: torch's eps is optax's
    # eps (added to sqrt(v_hat)), never eps_root; optax's weight_decay default is 1e-4, torch's 1e-2
    tx = optax.adamw(_lr_schedule(cfg), b1=cfg.beta1, b2=cfg.beta2, eps=1e-8, eps_root=0.0,
                     weight_decay=cfg.weight_decay, mask=decay_mask)
    if cfg.grad_clip > 0:
        tx = optax.chain(clip_grad_norm(nnx.Param, cfg.grad_clip), tx)
    return tx


def clip_grad_norm(parameters, max_norm: float) -> optax.GradientTransformation:
    """Scale gradients so their global L2 norm is at most ``max_norm``.

    [torch≠jax] torch clips the ``.grad`` of ``parameters`` in place after ``backward()``;
    in JAX gradients are values that flow through optax, so this returns the transformation
    ``configure_optimizer`` chains before AdamW. ``parameters`` is the nnx filter of what it
    applies to (``nnx.Param``, the optimizer's ``wrt``); optax needs nothing more from it.
    optax scales by max_norm / norm, which torch's ``clip_grad_norm`` here copies exactly.
    """
    return optax.clip_by_global_norm(max_norm)


@functools.partial(jax.jit, static_argnums=0)
def _eval_loss(graphdef, state, x, y):
    model = nnx.merge(graphdef, state)
    _, loss = model(x, y)
    return loss


def estimate_loss(model: GPT, get_batch: Callable, eval_iters: int, device: jax.Device | str = "cpu",
                  autocast=None) -> dict[str, float]:
    """Mean loss over ``eval_iters`` batches per split, in eval mode, without gradients.

    [torch≠jax] no gradients are computed because none are asked for (no ``no_grad`` needed);
    ``autocast`` is unused: the compute dtype is a static attribute of the layers (``dtype=``).
    """
    out = {}
    model.eval()  # dropout off
    graphdef, state = nnx.split(model)  # one graph traversal; the jitted forward takes plain arrays
    device = _device(device)
    for split in ("train", "val"):
        losses = []
        for k in range(eval_iters):
            X, Y = (jax.device_put(a, device) for a in get_batch(split))
            losses.append(_eval_loss(graphdef, state, X, Y))
        out[split] = float(np.mean(np.asarray(jnp.stack(losses), dtype=np.float64)))  # one host sync per split
    model.train()  # dropout back on
    return out


@functools.partial(jax.jit, static_argnames=("graphdef", "greedy", "top_k", "use_uniforms"))
def _sample_step(window, last, key, u, temperature, state, *, graphdef, greedy, top_k, use_uniforms):
    """Pick the token after ``window[:, last]`` and write it into the window (shifted left once full)."""
    model = nnx.merge(graphdef, state)
    logits, _ = model(window)
    logits = logits[:, last, :].astype(jnp.float32)  # (B, vocab_size): only the current position predicts
    if greedy:
        idx_next = jnp.argmax(logits, axis=-1)
    else:
        logits = logits / temperature
        if top_k is not None:
            v, _ = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))
            logits = jnp.where(logits < v[:, -1:], -jnp.inf, logits)
        if use_uniforms:
            probs = jax.nn.softmax(logits, axis=-1)
            cdf = jnp.cumsum(probs, axis=-1)
            idx_next = jnp.minimum((cdf <= u[:, None]).sum(-1), probs.shape[-1] - 1)
        else:
            idx_next = jax.random.categorical(key, logits, axis=-1)
    idx_next = idx_next.astype(window.dtype)  # (B,)
    T = window.shape[1]
    full = last == T - 1
    window = jnp.where(full, jnp.roll(window, -1, axis=1), window)  # keep the last block_size tokens
    last = jnp.where(full, last, last + 1)
    return window.at[:, last].set(idx_next), last, idx_next


def generate(model: GPT, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, uniforms: np.ndarray | None = None,
             device: jax.Device | str | None = None) -> np.ndarray:
    """Continue each row of ``idx`` (B, T0) by ``max_new_tokens`` tokens; returns (B, T0 + new).

    ``temperature == 0`` picks the most likely token (greedy). ``seed`` makes sampling
    reproducible; ``uniforms`` (max_new_tokens, B) in [0, 1) replaces the framework's RNG
    by inverse-CDF sampling, so that two backends fed the same numbers pick the same tokens.
    """
    device = _device(device)
    was_training = not model.transformer.drop.deterministic
    model.eval()
    graphdef, state = nnx.split(model)
    idx = np.asarray(idx)
    B, T0 = idx.shape
    T = model.config.block_size
    # [torch≠jax] torch grows idx and crops it to block_size; here a fixed (B, block_size) window
    # keeps one compiled step for every length (causal attention never reads past `last`)
    n = min(T0, T)
    window = np.zeros((B, T), dtype=np.int32)
    window[:, :n] = idx[:, T0 - n:]
    window, last = jax.device_put(window, device), jax.device_put(np.int32(n - 1), device)
    # [torch≠jax] torch draws from a stateful Generator; JAX splits an explicit key per token
    key = jax.random.key(0 if seed is None else seed)
    no_uniforms = np.zeros(B, dtype=np.float32)
    new_tokens = []
    for i in range(max_new_tokens):
        key, subkey = jax.random.split(key)
        u = no_uniforms if uniforms is None else np.asarray(uniforms[i], dtype=np.float32)
        window, last, idx_next = _sample_step(
            window, last, subkey, u, np.float32(temperature or 1.0), state, graphdef=graphdef,
            greedy=temperature == 0, top_k=top_k, use_uniforms=uniforms is not None)
        new_tokens.append(idx_next)
    if was_training:
        model.train()
    new = np.asarray(jnp.stack(new_tokens, axis=1)) if new_tokens else np.zeros((B, 0), dtype=np.int32)
    return np.concatenate([idx, new.astype(idx.dtype)], axis=1)


def _train_step(graphdef, state, x, y):
    """One AdamW step, as a pure function of the arrays in ``state`` (the model and its optimizer)."""
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
        _, loss = model(x, y)
        return loss

    # [torch≠jax] functional gradients: no .backward(), no .grad to zero
    loss, grads = nnx.value_and_grad(loss_fn)(model)  # w.r.t. every nnx.Param
    optimizer.update(model, grads)  # clip, AdamW at lr = schedule(step), weight decay
    return loss, nnx.state((model, optimizer))


@nnx.jit
def _loss_and_grads(model, x, y):
    return nnx.value_and_grad(lambda m: m(x, y)[1])(model)


@nnx.jit
def _logits(model, x):
    logits, _ = model(x)
    return logits


def _map_optax_states(tree, fn):
    """Rebuild optax's state (nested tuples of NamedTuple states), passing each NamedTuple through ``fn``."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(_map_optax_states(t, fn) for t in tree)
    return tree


class Trainer:
    """One model, its optimizer and its device: what the CLI, the benchmark and the parity suite drive."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig,
                 weights: dict[str, np.ndarray] | None = None):
        self.model_config = model_config
        self.train_config = train_config
        self.device = select_device(train_config.device)
        self.dtype = resolve_dtype(train_config.dtype, self.device)
        set_matmul_precision(train_config.tf32)
        _enable_x64(self.dtype)
        # bfloat16 is a compute dtype; parameters and optimizer state stay float32
        param_dtype = "float64" if self.dtype == "float64" else "float32"
        self._model = create_model(model_config, weights, device=self.device, param_dtype=param_dtype,
                                   attention=train_config.attention, seed=train_config.seed)
        self._optimizer = configure_optimizer(self._model, train_config, self.device)
        if self.dtype == "bfloat16":
            # [torch≠jax] no autocast context: the Linear layers compute in bfloat16 from float32
            # params (Flax's dtype=), as autocast runs torch's Linears; embeddings, the residual
            # stream, LayerNorms, the tied head (wte.attend, a small matmul) and the loss stay float32
            self._model.set_attributes(nnx.Linear, dtype=jnp.bfloat16)
        # [torch≠jax] jax.jit always compiles: split the NNX objects once into a static graph and
        # a pytree of arrays; the jitted step maps arrays to arrays, donating the old buffers
        # commit every array (optax makes its counts wherever jax puts new arrays) to the device,
        # so the first step's inputs look exactly like every later step's: one compilation
        nnx.update((self._model, self._optimizer), jax.device_put(nnx.state((self._model, self._optimizer)), self.device))
        self._graphdef, self._state = nnx.split((self._model, self._optimizer))
        self._synced = True  # do the NNX objects hold the current arrays?
        self._step_fn = jax.jit(_train_step, static_argnums=0, donate_argnums=1)
        self._compiled = None  # the AOT executable from compile(), and the batch it was built for
        self._compiled_for = None
        self._iter_num = 0  # optimizer steps taken; drives the learning-rate schedule

    # -- the NNX objects, brought up to date with the arrays of the compiled step --------------
    def _sync(self) -> None:
        if not self._synced:
            nnx.update((self._model, self._optimizer), self._state)
            self._synced = True

    def _resplit(self) -> None:
        """After the NNX objects were changed outside the step, take their arrays as the state."""
        self._state = nnx.state((self._model, self._optimizer))
        self._synced = True

    @property
    def model(self) -> GPT:
        self._sync()
        return self._model

    @property
    def optimizer(self) -> nnx.Optimizer:
        self._sync()
        return self._optimizer

    @property
    def iter_num(self) -> int:
        """Optimizer steps taken (a host-side count: reading it never waits for the device)."""
        return self._iter_num

    @iter_num.setter
    def iter_num(self, value: int) -> None:
        # like torch's iter_num, this moves the learning-rate schedule (optax's schedule count);
        # AdamW's own count (bias correction) comes with load_optimizer_state
        self._sync()
        self._set_optax_state(lambda s: s._replace(count=self._put(value, s.count))
                              if isinstance(s, optax.ScaleByScheduleState) else s)
        self._iter_num = int(value)
        self._resplit()

    # -- moving data -------------------------------------------------------------------------
    def to_device(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(np.asarray(array), self.device)

    def _put(self, value, like: jax.Array) -> jax.Array:
        return jax.device_put(np.asarray(value, dtype=like.dtype), self.device)

    def wait(self, loss: jax.Array | None = None) -> None:
        """Block until all queued work (the step that produced ``loss``, its update) is done."""
        jax.block_until_ready((loss, self._state))

    def compile(self, x, y) -> dict[str, float]:
        """Ahead-of-time lowering and compilation of the training step for batches shaped like
        (x, y), timed separately; ``step`` then runs this executable. [torch≠jax] torch.compile is lazy."""
        x, y = self.to_device(x), self.to_device(y)
        t0 = time.perf_counter()
        lowered = self._step_fn.lower(self._graphdef, self._state, x, y)
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
        x = x if isinstance(x, jax.Array) else self.to_device(x)
        y = y if isinstance(y, jax.Array) else self.to_device(y)
        if self._compiled is not None and self._compiled_for == (x.shape, x.dtype, y.shape, y.dtype):
            loss, self._state = self._compiled(self._state, x, y)  # static graphdef is baked in
        else:
            loss, self._state = self._step_fn(self._graphdef, self._state, x, y)
        self._synced = False  # the NNX objects still point at the donated buffers
        self._iter_num += 1
        return loss

    def loss_and_grads(self, x, y) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and the gradient of every parameter (canonical layout), without a step."""
        loss, grads = _loss_and_grads(self.model, self.to_device(x), self.to_device(y))
        self._resplit()  # dropout may have advanced the model's RNG streams
        grads = _by_path(nnx.as_pure(grads))
        return float(loss), {s.name: _to_canonical(s, grads[_flax_path(s)]) for s in param_layout(self.model_config)}

    def logits(self, x, train: bool = False) -> np.ndarray:
        model = self.model
        model.train() if train else model.eval()
        logits = _logits(model, self.to_device(x))
        model.train()
        self._resplit()
        return np.asarray(logits.astype(jnp.float32)) if self.dtype == "bfloat16" else np.asarray(logits)

    def estimate_loss(self, get_batch: Callable, eval_iters: int) -> dict[str, float]:
        return estimate_loss(self.model, get_batch, eval_iters, self.device)

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 uniforms: np.ndarray | None = None) -> np.ndarray:
        return generate(self.model, idx, max_new_tokens, temperature, top_k, seed, uniforms, self.device)

    # -- state in the canonical layout -------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        return export_weights(self.model)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        load_weights(self.model, weights)
        self._resplit()

    def _optax_states(self) -> list:
        found = []
        _map_optax_states(nnx.as_pure(self.optimizer.opt_state), lambda s: found.append(s) or s)
        return found

    def _set_optax_state(self, fn) -> None:
        new_state = _map_optax_states(nnx.as_pure(self._optimizer.opt_state), fn)
        nnx.update(self._optimizer.opt_state, nnx.state(new_state))  # as nnx.Optimizer.update does

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """AdamW's moments as ``exp_avg/<name>``, ``exp_avg_sq/<name>``, and the step count.

        [torch≠jax] torch's exp_avg / exp_avg_sq are optax's mu / nu; its step is optax's count."""
        adam = next(s for s in self._optax_states() if isinstance(s, optax.ScaleByAdamState))
        mu, nu = _by_path(adam.mu), _by_path(adam.nu)
        out = {"step": np.asarray(self.iter_num, dtype=np.int64)}
        for spec in param_layout(self.model_config):
            out[f"exp_avg/{spec.name}"] = _to_canonical(spec, mu[_flax_path(spec)])
            out[f"exp_avg_sq/{spec.name}"] = _to_canonical(spec, nu[_flax_path(spec)])
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        step = int(state["step"])
        self._sync()

        def load(s):
            if isinstance(s, optax.ScaleByAdamState):  # the moments, and the count for bias correction
                return s._replace(count=self._put(step, s.count),
                                  mu=_replace_canonical(s.mu, state, "exp_avg/", self.model_config),
                                  nu=_replace_canonical(s.nu, state, "exp_avg_sq/", self.model_config))
            if isinstance(s, optax.ScaleByScheduleState):  # the count the lr schedule reads
                return s._replace(count=self._put(step, s.count))
            return s

        self._set_optax_state(load)
        self._optimizer.step[...] = self._put(step, self._optimizer.step[...])
        self._iter_num = step
        self._resplit()

    def rng_state(self) -> np.ndarray:
        """[torch≠jax] every Dropout's RNG stream (key data and count), as one uint32 array."""
        leaves = jax.tree.leaves(nnx.as_pure(nnx.state(self.model, nnx.RngState)))
        return np.concatenate([np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                                          else a, dtype=np.uint32).ravel() for a in leaves])

    def set_rng_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.uint32)
        rng_state = nnx.as_pure(nnx.state(self.model, nnx.RngState))
        leaves, treedef = jax.tree.flatten(rng_state)
        new, offset = [], 0
        for a in leaves:
            is_key = jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
            template = jax.random.key_data(a) if is_key else a
            chunk = state[offset:offset + template.size].reshape(template.shape)
            offset += template.size
            value = jax.device_put(chunk.astype(template.dtype), self.device)
            new.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(a)) if is_key else value)
        if offset != state.size:
            raise UserError(f"the saved jax RNG state has {state.size} numbers, this model needs {offset}; "
                            "resume with the model config the checkpoint was written with")
        nnx.update(self._model, jax.tree.unflatten(treedef, new))
        self._resplit()
