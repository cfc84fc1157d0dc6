"""Sampling from the JAX GPT: ``generate``, which ``Trainer.generate`` and ``microgpt sample`` run;
``backends/torch/sampling.py`` is its mirror. Both make ``SAMPLE_CHUNK`` tokens at a time into one host
array whose size is checked first (``common/generation.py``).

[torch≠jax] JAX compiles chunks of tokens (``lax.scan`` in a fixed ``(B, block_size)`` window) and
copies each chunk to the host: linear time and constant memory per token, one compile per shape."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from backends.jax.device import Placement, as_device
from backends.jax.model import GPT
from common.generation import SAMPLE_CHUNK, output_buffer


@functools.partial(jax.jit, static_argnames=("graphdef", "greedy", "top_k", "use_uniforms"))
def _sample_chunk(window, last, key, uniforms, temperature, state, *, graphdef, greedy, top_k, use_uniforms):
    """One token per row of ``uniforms`` (chunk, B), each picked after ``window[:, last]`` and
    written into the window (shifted left once full); returns the new tokens as (B, chunk).
    [torch≠jax] the compiled loop ``generate`` calls once per chunk; torch's ``generate`` calls the
    model once per token, eagerly, and needs no such function."""
    model = nnx.merge(graphdef, state)

    def one_token(carry, u):
        window, last, key = carry
        key, subkey = jax.random.split(key)
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
                cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
                idx_next = jnp.minimum((cdf <= u[:, None]).sum(-1), logits.shape[-1] - 1)
            else:
                idx_next = jax.random.categorical(subkey, logits, axis=-1)
        idx_next = idx_next.astype(window.dtype)  # (B,)
        full = last == window.shape[1] - 1
        window = jnp.where(full, jnp.roll(window, -1, axis=1), window)  # keep the last block_size tokens
        last = jnp.where(full, last, last + 1)
        return (window.at[:, last].set(idx_next), last, key), idx_next

    (window, last, key), tokens = jax.lax.scan(one_token, (window, last, key), uniforms)
    return window, last, key, tokens.T


def generate(model: GPT, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, uniforms: np.ndarray | None = None,
             device: Placement | str | None = None) -> np.ndarray:
    """Continue each row of ``idx`` (B, T0) by ``max_new_tokens`` tokens; returns (B, T0 + new).

    ``temperature == 0`` picks the most likely token (greedy). ``seed`` makes sampling
    reproducible; ``uniforms`` (max_new_tokens, B) in [0, 1) replaces the framework's RNG
    by inverse-CDF sampling, so that two backends fed the same numbers pick the same tokens.
    """
    out = output_buffer(idx, max_new_tokens)  # (B, T0 + new) on the host, the prompt in front; refused if too big
    # by default where the model lives, as torch's; on a mesh the Trainer passes its replicated sharding
    device = as_device(device) if device is not None else jax.tree.leaves(nnx.state(model, nnx.Param))[0].sharding
    was_training = not model.transformer.drop.deterministic
    model.eval()
    graphdef, state = nnx.split(model)
    B, T0 = np.shape(idx)
    T = model.config.block_size
    # [torch≠jax] torch grows its window token by token and crops it to block_size; here a compiled loop
    # (lax.scan) makes SAMPLE_CHUNK tokens per call in a fixed (B, block_size) window, so one
    # program serves every length (causal attention never reads past `last`)
    n = min(T0, T)
    window = np.zeros((B, T), dtype=np.int32)
    window[:, :n] = out[:, T0 - n:T0]
    window, last = jax.device_put(window, device), jax.device_put(np.int32(n - 1), device)
    # [torch≠jax] torch draws from a stateful Generator; JAX splits an explicit key per token
    key = jax.device_put(jax.random.key(0 if seed is None else seed), device)  # committed, as the loop's output
    for start in range(0, max_new_tokens, SAMPLE_CHUNK):
        chunk = min(SAMPLE_CHUNK, max_new_tokens - start)
        u = np.zeros((SAMPLE_CHUNK, B), dtype=np.float32)  # a whole chunk (one program), made per chunk
        if uniforms is not None:
            u[:chunk] = np.asarray(uniforms[start:start + chunk], dtype=np.float32)
        window, last, key, tokens = _sample_chunk(
            window, last, key, u, np.float32(temperature or 1.0), state,
            graphdef=graphdef, greedy=temperature == 0, top_k=top_k, use_uniforms=uniforms is not None)
        out[:, T0 + start:T0 + start + chunk] = np.asarray(tokens)[:, :chunk]  # (B, chunk) to the host
    if was_training:
        model.train()
    return out
