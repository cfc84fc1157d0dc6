"""Single ops at a preset's shapes, for ``python -m benchmarks.ops``: the main op of each category
of the step's attribution (``benchmarks/attribution.py``), built the way ``model.py`` and
``train.py`` run it. Mirrors ``backends/jax/ops.py``: the same ops, names and shapes.

``micro_ops(model_config, train_config)`` returns ``{name: (run, flops, shape)}``: ``run()`` does
the op once and waits for it; ``flops`` counts its multiply-adds twice (0 when it is not a matmul).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from backends.torch.model import layer_norm
from backends.torch.train import select_device
from common.config import ModelConfig, TrainConfig
from common.params import param_layout


def _wait(device: torch.device) -> None:
    # [torch≠jax] torch waits for the GPU (torch.cuda.synchronize); JAX's ops wait on their results
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def micro_ops(cfg: ModelConfig, tc: TrainConfig) -> dict[str, tuple[Callable[[], None], float, str]]:
    device = select_device(tc.device)
    B, T, C, V, nh = tc.batch_size, cfg.block_size, cfg.n_embd, cfg.vocab_size, cfg.n_head
    N = B * T
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, grad=False):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_(grad)

    x, w, dy = rand(N, C), rand(4 * C, C), rand(N, 4 * C)  # c_fc: x (N, C) @ W^T (C, 4C)
    q, k, v = (rand(B, nh, T, C // nh, grad=True) for _ in range(3))
    h, g = rand(N, 4 * C, grad=True), rand(N, 4 * C)
    att = rand(B, nh, T, T)
    ln_in, ln = rand(N, C, grad=True), layer_norm(cfg).to(device)
    logits, targets = rand(N, V, grad=True), torch.randint(0, V, (N,), generator=gen).to(device)
    params = [rand(*s.shape) for s in param_layout(cfg)]
    opt = torch.optim.AdamW([torch.nn.Parameter(p) for p in params], lr=1e-3, betas=(tc.beta1, tc.beta2), eps=1e-8,
                            weight_decay=tc.weight_decay, fused=device.type in ("cuda", "cpu"))
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)
    heads = rand(B, T, nh, C // nh)

    def run(fn):
        def go():
            fn()
            _wait(device)
        return go

    def attention():  # scores, causal mask, softmax, dropout, weighted sum; forward and backward
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=cfg.dropout, is_causal=True)
        y.backward(torch.ones_like(y))

    def gelu():
        y = F.gelu(h, approximate="none")
        y.backward(g)

    def layernorm():
        y = ln(ln_in)
        y.backward(torch.ones_like(y))

    def loss():
        F.cross_entropy(logits, targets).backward()

    mm = 2.0 * N * C * 4 * C
    hs = C // nh
    ops = {
        "forward matmul": (run(lambda: x @ w.t()), mm, f"({N}, {C}) @ ({C}, {4 * C})"),
        "weight-grad matmul": (run(lambda: dy.t() @ x), mm, f"({4 * C}, {N}) @ ({N}, {C})"),
        "input-grad matmul": (run(lambda: dy @ w), mm, f"({N}, {4 * C}) @ ({4 * C}, {C})"),
        "attention": (run(attention), 2 * 3 * 2.0 * B * nh * T * T * hs, f"({B}, {nh}, {T}, {hs}) causal, "
                      f"dropout {cfg.dropout}, fwd+bwd"),
        "elementwise: GELU": (run(gelu), 0.0, f"({N}, {4 * C}) fwd+bwd"),
        "layernorm": (run(layernorm), 0.0, f"({N}, {C}) fwd+bwd"),
        "loss": (run(loss), 0.0, f"({N}, {V}) fwd+bwd"),
        "optimizer": (run(opt.step), 0.0, f"AdamW over {sum(p.numel() for p in params):,} parameters"),
        "copies/layout": (run(lambda: heads.transpose(1, 2).contiguous()), 0.0,
                          f"({B}, {T}, {nh}, {hs}) -> ({B}, {nh}, {T}, {hs})"),
    }
    if cfg.dropout > 0:
        ops["elementwise: dropout"] = (run(lambda: F.dropout(att, cfg.dropout, training=True)), 0.0,
                                       f"({B}, {nh}, {T}, {T}) p={cfg.dropout}")
    return ops
