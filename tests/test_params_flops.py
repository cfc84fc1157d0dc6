import math

import numpy as np

from common.config import ModelConfig
from common.flops import flops_per_iter, flops_per_token
from common.params import count_params, init_weights, param_layout


def test_layout_uses_nanogpt_names_and_torch_shapes():
    cfg = ModelConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=6, bias=True)
    specs = {s.name: s for s in param_layout(cfg)}
    assert specs["transformer.wte.weight"].shape == (11, 6)
    assert specs["transformer.wpe.weight"].shape == (8, 6)
    assert specs["transformer.h.1.attn.c_attn.weight"].shape == (18, 6)  # (out, in)
    assert specs["transformer.h.0.mlp.c_proj.weight"].shape == (6, 24)
    assert "lm_head.weight" not in specs  # tied to wte
    assert {n for n, s in specs.items() if s.decay} == {n for n, s in specs.items() if len(s.shape) >= 2}
    assert not any(s.decay for n, s in specs.items() if n.endswith("bias") or ".ln_" in n)
    no_bias = {s.name for s in param_layout(ModelConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=6, bias=False))}
    assert not any(n.endswith(".bias") for n in no_bias)


def test_init_is_nanogpts_and_seeded():
    cfg = ModelConfig(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128)
    w = init_weights(cfg, seed=0)
    assert np.array_equal(w["transformer.h.0.attn.c_attn.weight"], init_weights(cfg, seed=0)["transformer.h.0.attn.c_attn.weight"])
    assert abs(w["transformer.wte.weight"].std() - 0.02) < 1e-3
    assert abs(w["transformer.h.2.mlp.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 5e-4
    assert abs(w["transformer.h.2.attn.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 5e-4
    assert np.all(w["transformer.h.0.ln_1.weight"] == 1) and np.all(w["transformer.h.0.attn.c_attn.bias"] == 0)
    assert all(v.dtype == np.float32 for v in w.values())


def test_flops_against_a_hand_count():
    # L=1, H=2, C=4 (Q=2), V=10, T=8, with biases
    cfg = ModelConfig(block_size=8, vocab_size=10, n_layer=1, n_head=2, n_embd=4, bias=True)
    wte, wpe = 10 * 4, 8 * 4
    block = (4 + 4) + (4 * 12 + 12) + (4 * 4 + 4) + (4 + 4) + (4 * 16 + 16) + (16 * 4 + 4)
    ln_f = 4 + 4
    n = wte + block + ln_f  # position embeddings excluded, like nanoGPT
    assert count_params(cfg) == n == 292
    assert count_params(cfg, non_embedding=False) == n + wpe
    assert flops_per_token(cfg) == 6 * 292 + 12 * 1 * 2 * 2 * 8
    assert flops_per_iter(cfg, batch_size=3) == flops_per_token(cfg) * 3 * 8
