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


@pytest.mark.parametrize("bias", [True, False])
def test_torch_to_jax_to_torch_is_bit_for_bit(bias, model_config):
    cfg = ModelConfig(**{**model_config.__dict__, "bias": bias})
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
def test_same_weights_same_logits_and_gradients(attention, one_layer_config, train_config, batch):
    train = TrainConfig(**{**train_config.__dict__, "attention": attention})
    w = init_weights(one_layer_config, 11)
    a, b = tt.Trainer(one_layer_config, train, w), jt.Trainer(one_layer_config, train, w)
    x, y = batch()
    np.testing.assert_allclose(b.logits(x), a.logits(x), rtol=0, atol=1e-4)
    loss_t, grads_t = a.loss_and_grads(x, y)
    loss_j, grads_j = b.loss_and_grads(x, y)
    assert loss_j == pytest.approx(loss_t, abs=1e-5)
    for name in grads_t:
        np.testing.assert_allclose(grads_j[name], grads_t[name], rtol=0, atol=1e-5, err_msg=name)


def test_same_tokens_greedy_and_with_the_same_uniforms(one_layer_config, train_config):
    w = init_weights(one_layer_config, 5)
    a, b = tt.Trainer(one_layer_config, train_config, w), jt.Trainer(one_layer_config, train_config, w)
    idx = np.array([[1, 2, 3]])
    n = one_layer_config.block_size + 4  # past block_size: both keep the last block_size tokens
    assert np.array_equal(a.generate(idx, n, temperature=0.0), b.generate(idx, n, temperature=0.0))
    u = np.random.default_rng(0).random((n, 1))
    ta = a.generate(idx, n, temperature=0.9, top_k=10, uniforms=u)
    tb = b.generate(idx, n, temperature=0.9, top_k=10, uniforms=u)
    assert np.array_equal(ta, tb)


def _continue(src, dst_cls, one_layer_config, train_config):
    dst = dst_cls(one_layer_config, train_config, src.weights())
    dst.load_optimizer_state(src.optimizer_state())
    assert dst.iter_num == src.iter_num
    return dst


@pytest.mark.parametrize("direction", ["torch->jax", "jax->torch"])
def test_optimizer_state_moves_across_and_training_continues(direction, one_layer_config, train_config, batch):
    first, second = (tt.Trainer, jt.Trainer) if direction == "torch->jax" else (jt.Trainer, tt.Trainer)
    batches = [batch(seed=s) for s in range(10)]
    reference = first(one_layer_config, train_config)  # 10 steps in the first backend
    ref_losses = [float(reference.step(*b)) for b in batches]
    src = first(one_layer_config, train_config)  # 6 steps there, then 4 in the other backend
    [src.step(*b) for b in batches[:6]]
    state = src.optimizer_state()
    assert state["step"].dtype == np.int64 and int(state["step"]) == 6
    dst = _continue(src, second, one_layer_config, train_config)
    for name, value in dst.optimizer_state().items():  # the moments arrive as they left
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    losses = [float(dst.step(*b)) for b in batches[6:]]
    np.testing.assert_allclose(losses, ref_losses[6:], rtol=0, atol=1e-4)
    for name, value in dst.weights().items():
        np.testing.assert_allclose(value, reference.weights()[name], rtol=0, atol=1e-4, err_msg=name)


def test_a_jax_checkpoint_resumes_in_torch(tmp_path, one_layer_config, train_config, batch):
    trainer = jt.Trainer(one_layer_config, train_config)
    batches = [batch(seed=s) for s in range(4)]
    [trainer.step(*b) for b in batches[:2]]
    tok = CharTokenizer([chr(32 + i) for i in range(65)])
    save_checkpoint(tmp_path, Checkpoint(one_layer_config, train_config, tok, trainer.weights(), trainer.optimizer_state(),
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
