"""The PyTorch GPT: shapes, initial loss, causality, overfitting, sampling, resume."""

import math

import numpy as np
import pytest
import torch

from backends.torch import train as tt
from backends.torch.model import GPT
from common.config import ModelConfig, TrainConfig, build_configs
from common.params import init_weights, param_layout

CFG = ModelConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
TRAIN = TrainConfig(batch_size=4, max_iters=200, eval_interval=50, eval_iters=2, learning_rate=3e-3,
                    min_lr=3e-4, warmup_iters=5, lr_decay_iters=200, device="cpu", dtype="float32")


def _batch(B=4, T=16, V=65, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T), dtype=np.int32)
    y = rng.integers(0, V, (B, T), dtype=np.int32)
    return x, y


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_shapes_and_initial_loss(attention):
    model = tt.create_model(CFG, attention=attention)
    x, y = _batch()
    logits, loss = model(torch.from_numpy(x), torch.from_numpy(y))
    assert logits.shape == (4, 16, 65)
    assert abs(loss.item() - math.log(65)) < 0.1  # near-uniform predictions at init
    logits, loss = model(torch.from_numpy(x[:, :5]))
    assert logits.shape == (4, 5, 65) and loss is None


def test_fused_and_manual_attention_agree():
    x, _ = _batch()
    a = tt.create_model(CFG, attention="fused").eval()
    b = tt.create_model(CFG, attention="manual").eval()
    with torch.no_grad():
        la, _ = a(torch.from_numpy(x))
        lb, _ = b(torch.from_numpy(x))
    assert torch.allclose(la, lb, atol=1e-5)


def test_lm_head_is_tied_and_native_init_follows_nanogpt():
    model = GPT(ModelConfig(block_size=16, vocab_size=65, n_layer=6, n_head=2, n_embd=128))
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(12)) < 5e-4
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_causality(attention):
    """The loss at position t has zero gradient with respect to the inputs after t."""
    model = tt.create_model(CFG, attention=attention, param_dtype="float64")
    x, _ = _batch(B=1)
    emb = model.transformer.wte(torch.from_numpy(x).long()).detach().requires_grad_(True)

    def use_emb(module, args, output):
        return emb

    handle = model.transformer.wte.register_forward_hook(use_emb)
    logits, _ = model(torch.from_numpy(x))
    handle.remove()
    t = 6
    logits[0, t].logsumexp(-1).backward()
    grad = emb.grad[0].abs().sum(-1)  # (T,)
    assert torch.all(grad[t + 1:] == 0)
    assert torch.all(grad[: t + 1] > 0)


def test_overfits_one_batch():
    trainer = tt.Trainer(CFG, TRAIN)
    x, y = _batch()
    for _ in range(150):
        loss = trainer.step(x, y)
    assert float(loss) < 0.5


def test_estimate_loss_switches_modes_and_tracks_no_gradients():
    cfg = ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32, dropout=0.5)
    model = tt.create_model(cfg)
    seen = []
    model.register_forward_hook(lambda m, a, o: seen.append((m.training, torch.is_grad_enabled())))
    x, y = _batch()
    out = tt.estimate_loss(model, lambda split: (x, y), eval_iters=3)
    assert set(out) == {"train", "val"} and out["train"] == pytest.approx(out["val"])
    assert seen == [(False, False)] * 6 and model.training


def test_seeded_generation_is_reproducible():
    trainer = tt.Trainer(CFG, TRAIN)
    idx = np.array([[1, 2, 3]])
    a = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=42)
    b = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=42)
    c = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=43)
    assert a.shape == (1, 23) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[:, :3], idx)
    long = trainer.generate(idx, CFG.block_size + 5, temperature=0.0)  # crops the context past block_size
    assert long.shape == (1, 3 + CFG.block_size + 5)


def test_uniform_sampling_is_inverse_cdf():
    trainer = tt.Trainer(CFG, TRAIN)
    idx = np.array([[5, 6]])
    greedy = trainer.generate(idx, 5, temperature=0.0)
    # top_k=1 leaves one candidate, so any uniform number picks the greedy token
    u = np.random.default_rng(0).random((5, 1))
    assert np.array_equal(trainer.generate(idx, 5, temperature=1.0, top_k=1, uniforms=u), greedy)


def test_resume_continuity():
    """2N steps in one go equal N steps, export, a fresh trainer, load, N steps: loss for loss."""
    cfg = CFG
    x = [_batch(seed=s) for s in range(8)]
    full = tt.Trainer(cfg, TRAIN)
    losses_full = [float(full.step(*b)) for b in x]
    first = tt.Trainer(cfg, TRAIN)
    losses = [float(first.step(*b)) for b in x[:4]]
    second = tt.Trainer(cfg, TRAIN, first.weights())
    second.load_optimizer_state(first.optimizer_state())
    losses += [float(second.step(*b)) for b in x[4:]]
    assert losses == losses_full
    assert all(np.array_equal(full.weights()[k], v) for k, v in second.weights().items())


def test_weights_round_trip_and_copy():
    w = init_weights(CFG, 3)
    model = tt.create_model(CFG, w)
    out = tt.export_weights(model)
    assert all(np.array_equal(out[k], w[k]) for k in w)
    out["transformer.wte.weight"][0, 0] = 123.0  # exported arrays are copies, not views
    assert model.transformer.wte.weight[0, 0].item() != 123.0
    assert [s.name for s in param_layout(CFG)] == list(out)


def test_lr_schedule_shape():
    _, cfg = build_configs("shakespeare-char")
    lrs = [tt.get_lr(i, cfg) for i in range(cfg.max_iters + 10)]
    assert lrs[0] == pytest.approx(1e-3 / 101) and lrs[99] == pytest.approx(1e-3 * 100 / 101)
    assert lrs[100] == pytest.approx(1e-3) and lrs[5000] == pytest.approx(1e-4) and lrs[-1] == 1e-4
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))


def test_device_selection():
    assert tt.select_device("cpu").type == "cpu"
    assert tt.select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        from common.errors import UserError
        with pytest.raises(UserError, match="no CUDA GPU"):
            tt.select_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
def test_bf16_autocast_on_gpu():
    trainer = tt.Trainer(CFG, TrainConfig(**{**TRAIN.__dict__, "device": "cuda", "dtype": "auto"}))
    assert trainer.dtype == "bfloat16"
    x, y = _batch()
    assert math.isfinite(float(trainer.step(x, y)))
