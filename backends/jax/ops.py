"""Single ops at a preset's shapes, for ``python -m benchmarks.ops``: the main op of each category
of the step's attribution (``benchmarks/attribution.py``), built the way ``model.py`` and
``train.py`` run it. Mirrors ``backends/torch/ops.py``: the same ops, names and shapes.

``micro_ops(model_config, train_config)`` returns ``{name: (run, flops, shape)}``: ``run()`` does
the op once and waits for it; ``flops`` counts its multiply-adds twice (0 when it is not a matmul).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from backends.jax.model import causal_mask, gelu, layer_norm
from backends.jax.train import select_device
from common.config import ModelConfig, TrainConfig
from common.params import param_layout


def micro_ops(cfg: ModelConfig, tc: TrainConfig) -> dict[str, tuple[Callable[[], None], float, str]]:
    device = select_device(tc.device)
    B, T, C, V, nh = tc.batch_size, cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_head
    N = B * T
    keys = (jax.random.fold_in(jax.random.key(0), i) for i in range(1 << 30))

    def rand(*shape):
        return jax.device_put(jax.random.normal(next(keys), shape, jnp.float32), device)

    x, w, dy = rand(N, C), rand(C, 4 * C), rand(N, 4 * C)  # c_fc: x (N, C) @ kernel (C, 4C)
    q, k, v = (rand(B, T, nh, C // nh) for _ in range(3))
    h, g = rand(N, 4 * C), rand(N, 4 * C)
    att = rand(B, nh, T, T)
    ln_in = rand(N, C)
    logits, targets = rand(N, V), jax.random.randint(next(keys), (N,), 0, V)
    params = [rand(*s.shape) for s in param_layout(cfg)]
    tx = optax.adamw(1e-3, b1=tc.beta1, b2=tc.beta2, eps=1e-8, weight_decay=tc.weight_decay)
    opt_state, grads = tx.init(params), [rand(*p.shape) for p in params]
    heads = rand(B, T, nh, C // nh)
    key = jax.random.key(1)

    def attend(q, k, v, key):  # as CausalSelfAttention: manual with dropout in training, fused otherwise
        if cfg.dropout == 0.0:
            return jax.nn.dot_product_attention(q, k, v, is_causal=True)
        q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
        a = jnp.where(causal_mask(T), (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(k.shape[-1]), -jnp.inf)
        a = jax.nn.softmax(a, axis=-1)
        keep = jax.random.bernoulli(key, 1.0 - cfg.dropout, a.shape)
        return (jnp.where(keep, a / (1.0 - cfg.dropout), 0.0) @ v).transpose(0, 2, 1, 3)

    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    attention = jax.jit(jax.grad(lambda q, k, v, key: attend(q, k, v, key).sum(), argnums=(0, 1, 2)))
    gelu_vjp = jax.jit(lambda h, g: jax.vjp(gelu, h)[1](g))
    ln_def, ln_state = nnx.split(layer_norm(cfg, rngs=nnx.Rngs(0)))
    ln_grad = jax.jit(jax.grad(lambda x: nnx.merge(ln_def, ln_state)(x).sum()))
    loss_grad = jax.jit(jax.grad(lambda z: optax.softmax_cross_entropy_with_integer_labels(z, targets).mean()))
    step = jax.jit(update)
    fwd, wgrad, igrad = (jax.jit(f) for f in (lambda x, w: x @ w, lambda dy, x: x.T @ dy, lambda dy, w: dy @ w.T))
    dropout = jax.jit(lambda a, key: jnp.where(jax.random.bernoulli(key, 1.0 - cfg.dropout, a.shape),
                                               a / (1.0 - cfg.dropout), 0.0))

    def run(fn, *args):
        def go():
            jax.block_until_ready(fn(*args))
        return go

    mm = 2.0 * N * C * 4 * C
    hs = C // nh
    ops = {
        "forward matmul": (run(fwd, x, w), mm, f"({N}, {C}) @ ({C}, {4 * C})"),
        "weight-grad matmul": (run(wgrad, dy, x), mm, f"({4 * C}, {N}) @ ({N}, {C})"),
        "input-grad matmul": (run(igrad, dy, w), mm, f"({N}, {4 * C}) @ ({4 * C}, {C})"),
        "attention": (run(attention, q, k, v, key), 2 * 3 * 2.0 * B * nh * T * T * hs,
                      f"({B}, {nh}, {T}, {hs}) causal, dropout {cfg.dropout}, fwd+bwd"),
        "elementwise: GELU": (run(gelu_vjp, h, g), 0.0, f"({N}, {4 * C}) fwd+bwd"),
        "layernorm": (run(ln_grad, ln_in), 0.0, f"({N}, {C}) fwd+bwd"),
        "loss": (run(loss_grad, logits), 0.0, f"({N}, {V}) fwd+bwd"),
        "optimizer": (run(step, grads, opt_state, params), 0.0,
                      f"AdamW over {sum(p.size for p in params):,} parameters"),
        "copies/layout": (run(jax.jit(lambda a: a.transpose(0, 2, 1, 3).copy()), heads), 0.0,
                          f"({B}, {T}, {nh}, {hs}) -> ({B}, {nh}, {T}, {hs})"),
    }
    if cfg.dropout > 0:
        ops["elementwise: dropout"] = (run(dropout, att, key), 0.0, f"({B}, {nh}, {T}, {T}) p={cfg.dropout}")
    return ops
