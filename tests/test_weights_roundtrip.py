"""Across the backends: weights and optimizer state move between torch and JAX through the
canonical numpy layout, and the same weights compute the same logits, gradients and tokens."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from backends.jax import train as jt  # noqa: E402
from backends.torch import train as tt  # noqa: E402
from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from common.config import ModelConfig, TrainConfig  # noqa: E402
from common.params import init_weights, param_layout  # noqa: E402
from common.tokenizer import CharTokenizer  # noqa: E402

CFG = ModelConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
CFG1 = ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32)
TRAIN = TrainConfig(batch_size=4, max_iters=200, eval_interval=50, eval_iters=2, learning_rate=3e-3,
                    min_lr=3e-4, warmup_iters=5, lr_decay_iters=200, device="cpu", dtype="float32")


def _batch(B=4, T=16, V=65, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T), dtype=np.int32), rng.integers(0, V, (B, T), dtype=np.int32)


@pytest.mark.parametrize("bias", [True, False])
def test_torch_to_jax_to_torch_is_bit_for_bit(bias):
    cfg = ModelConfig(**{**CFG.__dict__, "bias": bias})
    torch_model = tt.create_model(cfg, seed=7)
    with torch.no_grad():  # make every tensor distinct, biases and norms included
        for p in torch_model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    w_torch = tt.export_weights(torch_model)
    jax_model = jt.create_model(cfg, w_torch)
    w_jax = jt.export_weights(jax_model)
    back = tt.create_model(cfg, w_jax)
    w_back = tt.export_weights(back)
    assert list(w_torch) == list(w_jax) == list(w_back) == [s.name for s in param_layout(cfg)]
    for name in w_torch:
        assert w_jax[name].dtype == w_torch[name].dtype and w_jax[name].shape == w_torch[name].shape
        assert w_torch[name].tobytes() == w_jax[name].tobytes() == w_back[name].tobytes(), name
    # nothing is shared: changing the torch model leaves the JAX copy alone
    with torch.no_grad():
        torch_model.transformer.wte.weight.zero_()
    assert np.array_equal(jt.export_weights(jax_model)["transformer.wte.weight"], w_torch["transformer.wte.weight"])


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_same_weights_same_logits_and_gradients(attention):
    train = TrainConfig(**{**TRAIN.__dict__, "attention": attention})
    w = init_weights(CFG1, 11)
    a, b = tt.Trainer(CFG1, train, w), jt.Trainer(CFG1, train, w)
    x, y = _batch()
    np.testing.assert_allclose(b.logits(x), a.logits(x), rtol=0, atol=1e-4)
    loss_t, grads_t = a.loss_and_grads(x, y)
    loss_j, grads_j = b.loss_and_grads(x, y)
    assert loss_j == pytest.approx(loss_t, abs=1e-5)
    for name in grads_t:
        np.testing.assert_allclose(grads_j[name], grads_t[name], rtol=0, atol=1e-5, err_msg=name)


def test_same_tokens_greedy_and_with_the_same_uniforms():
    w = init_weights(CFG1, 5)
    a, b = tt.Trainer(CFG1, TRAIN, w), jt.Trainer(CFG1, TRAIN, w)
    idx = np.array([[1, 2, 3]])
    n = CFG1.block_size + 4  # past block_size: both keep the last block_size tokens
    assert np.array_equal(a.generate(idx, n, temperature=0.0), b.generate(idx, n, temperature=0.0))
    u = np.random.default_rng(0).random((n, 1))
    ta = a.generate(idx, n, temperature=0.9, top_k=10, uniforms=u)
    tb = b.generate(idx, n, temperature=0.9, top_k=10, uniforms=u)
    assert np.array_equal(ta, tb)


def _continue(src, dst_cls):
    dst = dst_cls(CFG1, TRAIN, src.weights())
    dst.load_optimizer_state(src.optimizer_state())
    assert dst.iter_num == src.iter_num
    return dst


@pytest.mark.parametrize("direction", ["torch->jax", "jax->torch"])
def test_optimizer_state_moves_across_and_training_continues(direction):
    first, second = (tt.Trainer, jt.Trainer) if direction == "torch->jax" else (jt.Trainer, tt.Trainer)
    batches = [_batch(seed=s) for s in range(10)]
    reference = first(CFG1, TRAIN)  # 10 steps in the first backend
    ref_losses = [float(reference.step(*b)) for b in batches]
    src = first(CFG1, TRAIN)  # 6 steps there, then 4 in the other backend
    [src.step(*b) for b in batches[:6]]
    state = src.optimizer_state()
    assert state["step"].dtype == np.int64 and int(state["step"]) == 6
    dst = _continue(src, second)
    for name, value in dst.optimizer_state().items():  # the moments arrive as they left
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    losses = [float(dst.step(*b)) for b in batches[6:]]
    np.testing.assert_allclose(losses, ref_losses[6:], rtol=0, atol=1e-4)
    for name, value in dst.weights().items():
        np.testing.assert_allclose(value, reference.weights()[name], rtol=0, atol=1e-4, err_msg=name)


def test_a_jax_checkpoint_resumes_in_torch(tmp_path):
    trainer = jt.Trainer(CFG1, TRAIN)
    batches = [_batch(seed=s) for s in range(4)]
    [trainer.step(*b) for b in batches[:2]]
    tok = CharTokenizer([chr(32 + i) for i in range(65)])
    save_checkpoint(tmp_path, Checkpoint(CFG1, TRAIN, tok, trainer.weights(), trainer.optimizer_state(),
                                         step=trainer.iter_num, rng={"jax": trainer.rng_state()}, backend="jax"))
    ckpt = load_checkpoint(tmp_path)
    torch_trainer = tt.Trainer(ckpt.model_config, ckpt.train_config, ckpt.weights)
    torch_trainer.load_optimizer_state(ckpt.optimizer)
    jax_trainer = jt.Trainer(ckpt.model_config, ckpt.train_config, ckpt.weights)
    jax_trainer.load_optimizer_state(ckpt.optimizer)
    jax_trainer.set_rng_state(ckpt.rng["jax"])
    for b in batches[2:]:
        expected = float(trainer.step(*b))
        assert float(jax_trainer.step(*b)) == expected  # same backend: exactly
        assert float(torch_trainer.step(*b)) == pytest.approx(expected, abs=1e-4)
