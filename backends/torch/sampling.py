"""Sampling from the PyTorch GPT: ``generate``, which ``Trainer.generate`` and ``microgpt sample`` run;
``backends/jax/sampling.py`` is its mirror. Both make ``SAMPLE_CHUNK`` tokens at a time into one host
array whose size is checked first (``common/generation.py``).

[torch≠jax] torch runs the model on the cropped context token by token, eagerly."""

from __future__ import annotations

import numpy as np
import torch

from backends.torch.model import GPT
from common.generation import SAMPLE_CHUNK, output_buffer


@torch.no_grad()
def generate(model: GPT, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, uniforms: np.ndarray | None = None,
             device: torch.device | str | None = None) -> np.ndarray:
    """Continue each row of ``idx`` (B, T0) by ``max_new_tokens`` tokens; returns (B, T0 + new).

    ``temperature == 0`` picks the most likely token (greedy). ``seed`` makes sampling
    reproducible; ``uniforms`` (max_new_tokens, B) in [0, 1) replaces the framework's RNG
    by inverse-CDF sampling, so that two backends fed the same numbers pick the same tokens.
    """
    out = output_buffer(idx, max_new_tokens)  # (B, T0 + new) on the host, the prompt in front; refused if too big
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    B, T0 = np.shape(idx)
    T = model.config.block_size
    # the model's context: the last block_size tokens, grown by one and cropped at every token
    window = torch.as_tensor(out[:, max(0, T0 - T):T0], dtype=torch.long, device=device)
    # [torch≠jax] torch draws from a stateful Generator; JAX splits an explicit key per token
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else seed)
    for start in range(0, max_new_tokens, SAMPLE_CHUNK):
        tokens = []
        for i in range(start, min(start + SAMPLE_CHUNK, max_new_tokens)):
            logits, _ = model(window)
            logits = logits[:, -1, :].float()  # (B, vocab_size): only the last position predicts
            if temperature == 0:
                idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = torch.softmax(logits, dim=-1)
                if uniforms is None:
                    idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
                else:
                    u = torch.as_tensor(uniforms[i], dtype=probs.dtype, device=device)[:, None]  # (B, 1)
                    cdf = torch.cumsum(probs, dim=-1)
                    idx_next = torch.clamp((cdf <= u).sum(-1, keepdim=True), max=probs.size(-1) - 1)
            tokens.append(idx_next)
            window = torch.cat((window, idx_next), dim=1)[:, -T:]  # keep the last block_size tokens
        out[:, T0 + start:T0 + start + len(tokens)] = torch.cat(tokens, dim=1).cpu().numpy()  # (B, chunk) to the host
    model.train(was_training)
    return out
