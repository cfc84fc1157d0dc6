"""The GPT, in PyTorch. Read it side by side with ``backends/jax/model.py``.

nanoGPT's architecture: token + position embeddings, pre-LayerNorm blocks of causal
multi-head self-attention and an exact-GELU MLP, a final LayerNorm, and an LM head
that shares its weight with the token embedding. Every line where the two frameworks
genuinely differ carries a torch≠jax note in brackets: ``grep -n '\\[torch≠jax\\]' backends/*/model.py``
lists them, and ``microgpt side-by-side`` sets them beside the code.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from common.config import ModelConfig
from common.params import INIT_STD


def causal_mask(T: int) -> torch.Tensor:
    """(T, T) booleans: position t attends to positions 0..t."""
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def layer_norm(config: ModelConfig) -> nn.LayerNorm:
    """nanoGPT's LayerNorm: eps 1e-5, with a bias only when config.bias."""
    return nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)


def softmax(att: torch.Tensor) -> torch.Tensor:
    """The attention weights over the last axis, computed and returned in float32 at least: under bfloat16
    autocast the scores come out of a bfloat16 matmul, and CPU autocast (unlike CUDA's) would
    run the softmax in bfloat16; the next matmul rounds the weights to bfloat16 again."""
    return F.softmax(att, dim=-1, dtype=torch.promote_types(att.dtype, torch.float32))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean loss over every position, in float32 at least (bfloat16 logits are upcast first,
    as autocast's float32 op list does for cross_entropy)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1).long())


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "fused"):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # query, key and value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection back into the residual stream
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attention = attention  # "fused": one fused kernel; "manual": the math spelled out
        # [torch≠jax] torch keeps the causal mask as a non-trainable buffer on the module
        mask = causal_mask(config.block_size).view(1, 1, config.block_size, config.block_size)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        B, T, C = x.size()  # batch size, sequence length, embedding width (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        # split the width into heads and move the head axis forward: (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.attention == "fused":
            # flash / memory-efficient attention where the device has it
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        else:
            # the same computation, spelled out: scores, causal mask, softmax, weighted sum
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T)
            att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))  # position t sees 0..t
            att = softmax(att)  # float32 at least
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        y = self.resid_dropout(self.c_proj(y))
        return y


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="none")  # exact erf GELU, as in nanoGPT
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)  # (B, T, 4C)
        x = self.gelu(x)
        x = self.c_proj(x)  # (B, T, C)
        x = self.dropout(x)
        return x


class Block(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "fused"):
        super().__init__()
        self.ln_1 = layer_norm(config)
        self.attn = CausalSelfAttention(config, attention)
        self.ln_2 = layer_norm(config)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))  # pre-LayerNorm residual blocks
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "fused"):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, attention) for _ in range(config.n_layer)]),
            ln_f=layer_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # [torch≠jax] weight tying: torch shares one Parameter object; Flax calls wte.attend
        self.transformer.wte.weight = self.lm_head.weight
        # nanoGPT's initialisation; the residual projections get a smaller std (GPT-2)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def forward(self, idx, targets=None):
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of length {T} exceeds block_size {self.config.block_size}"
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,), created on the device
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C), broadcast over the batch
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size), with the tied token embedding
        if targets is None:
            return logits, None
        loss = cross_entropy(logits, targets)  # float32 at least
        return logits, loss
