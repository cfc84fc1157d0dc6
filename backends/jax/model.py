"""The GPT, in JAX with Flax NNX. Read it side by side with ``backends/torch/model.py``.

nanoGPT's architecture: token + position embeddings, pre-LayerNorm blocks of causal
multi-head self-attention and an exact-GELU MLP, a final LayerNorm, and an LM head
that shares its weight with the token embedding. Every line where the two frameworks
genuinely differ carries a torch≠jax note in brackets: ``grep -n '\\[torch≠jax\\]' backends/*/model.py``
lists them, and ``microgpt side-by-side`` sets them beside the code.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from common.config import ModelConfig
from common.params import INIT_STD

# nanoGPT's initialisation, given to each layer as it is built (see GPT.__init__)
normal = nnx.initializers.normal(stddev=INIT_STD)
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def proj_init(config: ModelConfig):
    """The residual projections (c_proj) get a smaller std, shrinking with depth (GPT-2).
    [torch≠jax] torch re-draws the c_proj weights in ``GPT.__init__``, after ``_init_weights``;
    Flax gives each c_proj this initializer as it is built."""
    return _normal(INIT_STD / math.sqrt(2 * config.n_layer))


@functools.lru_cache(maxsize=None)
def _normal(std: float):
    # [torch≠jax] one initializer object per std: layers keep theirs as static attributes, and two models
    # built alike then have equal graph definitions, so jit reuses one compiled program for both
    return nnx.initializers.normal(stddev=std)


def gelu(x):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as nanoGPT (torch's nn.GELU) computes it.

    [torch≠jax] jax.nn.gelu(approximate=False) gives the same values through erfc, which XLA:CPU
    expands into a slower polynomial: 3.2x the time of this form forward, 1.5x backward, at
    baby's (768, 512) (benchmarks/README.md). A module-level function, for the reason of _normal."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


class Linear(nnx.Linear):
    """``nnx.Linear``'s parameters and compute dtype, applied to the 2-D view ``(B*T, in)`` of its
    input as torch's Linear runs, the bias added as torch's addmm adds it (below).

    [torch≠jax] on a 3-D input XLA:CPU computes the weight gradient by first transposing the
    activation gradient with a strided copy (``copy_bitcast_fusion``): at ``baby`` those copies
    took 50% of the step's kernel time on a Xeon (benchmarks/README.md); on the 2-D view the
    same matmuls need no copy."""

    def __call__(self, x):
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((x.reshape(-1, x.shape[-1]), self.kernel[...], bias),
                                                  dtype=self.dtype)  # to the compute dtype, as autocast casts
        y = inputs @ kernel  # (B*T, in) @ (in, out)
        if bias is not None:
            # [torch≠jax] the bias is added in float32 at least and the sum rounded once, as in torch's
            # addmm: its gradient, a sum over all B*T rows, then accumulates in float32 (nnx.Linear adds
            # it in bfloat16: the bias gradients' bf16 errors were 2.0-3.1x torch's over seeds 0-9, now
            # 0.46-0.66x; float32 and float64 compile to the same program as before)
            y = (y.astype(jnp.promote_types(y.dtype, jnp.float32)) + bias).astype(y.dtype)
        return y.reshape(*x.shape[:-1], -1)


def causal_mask(T: int) -> jax.Array:
    """(T, T) booleans: position t attends to positions 0..t."""
    return jnp.tril(jnp.ones((T, T), dtype=jnp.bool_))


def layer_norm(config: ModelConfig, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """nanoGPT's LayerNorm: eps 1e-5, with a bias only when config.bias."""
    # [torch≠jax] Flax's LayerNorm defaults to epsilon=1e-6 and a one-pass E[x²]-E[x]² variance
    return nnx.LayerNorm(config.n_embd, epsilon=1e-5, use_bias=config.bias, use_fast_variance=False,
                         scale_init=ones, bias_init=zeros, rngs=rngs)


def softmax(att: jax.Array) -> jax.Array:
    """The attention weights over the last axis, computed and returned in float32 at least: under
    bfloat16 compute the scores come out of a bfloat16 matmul; the weighted sum rounds the weights
    to bfloat16 again."""
    return jax.nn.softmax(att.astype(jnp.promote_types(att.dtype, jnp.float32)), axis=-1)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """The mean loss over every position, in float32 at least (bfloat16 logits are upcast first,
    as torch's autocast does for cross_entropy)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).mean()


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Causal attention as one fused op on (B, T, nh, hs) inputs.

    [torch≠jax] torch's scaled_dot_product_attention picks its kernel (flash, memory-efficient)
    itself; jax.nn.dot_product_attention's default is XLA's composite, so cuDNN's flash attention
    is asked for by name where it applies: bfloat16 or float16 inputs, a head width that is a
    multiple of 8 up to 128, a CUDA GPU of compute capability 8.0 or later in this process, and a
    step compiled for that GPU (``lax.platform_dependent`` chooses when the program is compiled for
    its device: a model placed on the CPU of a GPU machine gets XLA's composite)."""
    xla = functools.partial(jax.nn.dot_product_attention, is_causal=True)
    if not _cudnn_applies(jnp.dtype(q.dtype), q.shape[-1]):
        return xla(q, k, v)
    cudnn = functools.partial(jax.nn.dot_product_attention, is_causal=True, implementation="cudnn")
    return jax.lax.platform_dependent(q, k, v, cuda=cudnn, default=xla)


@functools.lru_cache(maxsize=None)
def _cudnn_applies(dtype, head_size: int) -> bool:
    if dtype not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) or head_size % 8 or head_size > 128:
        return False
    try:
        gpus = jax.devices("cuda")
    except RuntimeError:  # a CPU-only jaxlib, or no GPU
        return False
    return tuple(int(part) for part in gpus[0].compute_capability.split(".")[:2]) >= (8, 0)


class CausalSelfAttention(nnx.Module):
    def __init__(self, config: ModelConfig, attention: str = "fused", *, rngs: nnx.Rngs):
        # [torch≠jax] no super().__init__(); layers take explicit RNG streams (rngs) to draw their init from
        assert config.n_embd % config.n_head == 0
        # query, key and value projections for all heads, in one matmul
        # [torch≠jax] Flax stores the kernel as (in, out); torch's Linear weight is (out, in)
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, use_bias=config.bias,
                                 kernel_init=normal, bias_init=zeros, rngs=rngs)
        # output projection back into the residual stream
        self.c_proj = Linear(config.n_embd, config.n_embd, use_bias=config.bias,
                                 kernel_init=proj_init(config), bias_init=zeros, rngs=rngs)
        # [torch≠jax] each Dropout forks its own stream of rngs["dropout"]: its key is model state
        self.attn_dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.resid_dropout = nnx.Dropout(config.dropout, rngs=rngs)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attention = attention  # "fused": one fused kernel; "manual": the math spelled out
        # [torch≠jax] no mask buffer: __call__ builds the (T, T) mask, a constant of the compiled program

    def __call__(self, x):
        B, T, C = x.shape  # batch size, sequence length, embedding width (n_embd)
        q, k, v = jnp.split(self.c_attn(x), 3, axis=2)  # 3 x (B, T, C)
        # split the width into heads: (B, T, nh, hs)
        # [torch≠jax] jax.nn.dot_product_attention wants heads on axis 2, so no transpose yet
        q = q.reshape(B, T, self.n_head, C // self.n_head)
        k = k.reshape(B, T, self.n_head, C // self.n_head)
        v = v.reshape(B, T, self.n_head, C // self.n_head)
        # [torch≠jax] jax's fused attention has no dropout argument: with attention dropout
        # switched on (dropout > 0, train mode) the manual path below runs instead; nor does it
        # compute in float64 (its softmax is always float32), so float64 runs the manual path too;
        # nor has XLA:CPU a fused kernel: on a CPU its composite ran 2.4x (baby) and 1.5x
        # (shakespeare-char) slower than the manual path (benchmarks/README.md), which runs there
        if (self.attention == "fused" and x.dtype != jnp.float64 and jax.default_backend() != "cpu"
                and (self.dropout == 0.0 or self.attn_dropout.deterministic)):
            # cuDNN's flash attention on a CUDA GPU where it applies, else XLA's composite
            y = fused_attention(q, k, v)  # (B, T, nh, hs)
        else:
            # the same computation, spelled out: scores, causal mask, softmax, weighted sum
            q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # (B, nh, T, hs)
            att = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(k.shape[-1]))  # (B, nh, T, T)
            att = jnp.where(causal_mask(T), att, -jnp.inf)  # position t sees 0..t
            att = softmax(att)  # float32 at least
            att = self.attn_dropout(att)
            # [torch≠jax] torch's autocast casts the weights to bfloat16 for this matmul; here it is explicit
            y = att.astype(v.dtype) @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
            y = y.transpose(0, 2, 1, 3)  # (B, T, nh, hs)
        y = y.reshape(B, T, C)  # heads side by side again: (B, T, C)
        y = self.resid_dropout(self.c_proj(y))
        return y


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, use_bias=config.bias,
                               kernel_init=normal, bias_init=zeros, rngs=rngs)
        self.gelu = gelu  # exact erf GELU (approximate=False), as in nanoGPT
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, use_bias=config.bias,
                                 kernel_init=proj_init(config), bias_init=zeros, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(self, x):
        x = self.c_fc(x)  # (B, T, 4C)
        x = self.gelu(x)
        x = self.c_proj(x)  # (B, T, C)
        x = self.dropout(x)
        return x


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, attention: str = "fused", *, rngs: nnx.Rngs):
        self.ln_1 = layer_norm(config, rngs=rngs)
        self.attn = CausalSelfAttention(config, attention, rngs=rngs)
        self.ln_2 = layer_norm(config, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln_1(x))  # pre-LayerNorm residual blocks
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nnx.Module):
    def __init__(self, config: ModelConfig, attention: str = "fused", *, rngs: nnx.Rngs):
        self.config = config
        self.transformer = nnx.Dict(dict(
            wte=nnx.Embed(config.vocab_size, config.n_embd, embedding_init=normal, rngs=rngs),  # token embedding
            wpe=nnx.Embed(config.block_size, config.n_embd, embedding_init=normal, rngs=rngs),  # position embedding
            drop=nnx.Dropout(config.dropout, rngs=rngs),
            h=nnx.List([Block(config, attention, rngs=rngs) for _ in range(config.n_layer)]),
            ln_f=layer_norm(config, rngs=rngs),
        ))
        # [torch≠jax] no lm_head layer: __call__ ties the head to the token embedding with wte.attend
        # [torch≠jax] no _init_weights pass: every layer above was given nanoGPT's initialisers
        # (N(0, 0.02), c_proj N(0, 0.02/sqrt(2 n_layer)), zero biases, unit LayerNorm) as it was built

    def __call__(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.config.block_size, f"sequence of length {T} exceeds block_size {self.config.block_size}"
        pos = jnp.arange(0, T, dtype=jnp.int32)  # (T,), a constant of the compiled program
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over the batch
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.transformer.wte.attend(x)  # (B, T, vocab_size): x @ wte.T, the tied LM head
        if targets is None:
            return logits, None
        loss = cross_entropy(logits, targets)  # float32 at least
        return logits, loss
