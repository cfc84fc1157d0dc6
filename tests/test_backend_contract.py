"""The backend contract (``backends/interface.py``), the same test for every backend: shapes,
the ln(vocab) start, causality (JAX with and without jit), overfitting one batch, seeded and
inverse-CDF generation, the learning rate each step applies, resume continuity, and weights
in and out. Only the public interface is used; what differs between frameworks is tested in
``test_torch_backend.py`` and ``test_jax_backend.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import pytest

from backends import load_backend, process
from common.config import ModelConfig, TrainConfig
from common.params import init_weights, param_layout
from common.schedule import get_lr


def trainer_for(backend, model_config, train_config, weights=None, **changes):
    train_config = dataclasses.replace(train_config, **changes)
    return backend.Trainer(model_config, train_config, weights)


def no_jit(backend):
    """A JAX run with every jit switched off (op by op); nothing to switch off in eager torch."""
    if backend.BACKEND == "jax":
        import jax

        return jax.disable_jit()
    return contextlib.nullcontext()


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_shapes_and_initial_loss(backend, model_config, train_config, batch, attention):
    trainer = trainer_for(backend, model_config, train_config, attention=attention)
    x, y = batch()
    logits = trainer.logits(x)
    assert logits.shape == (4, 16, 65) and logits.dtype == np.float32
    assert trainer.logits(x[:, :5]).shape == (4, 5, 65)  # any length up to block_size
    loss, grads = trainer.loss_and_grads(x, y)
    assert abs(loss - math.log(65)) < 0.1  # near-uniform predictions at init
    assert list(grads) == [s.name for s in param_layout(model_config)]


def test_fused_and_manual_attention_agree(backend, model_config, train_config, batch):
    x, _ = batch()
    fused = trainer_for(backend, model_config, train_config, attention="fused").logits(x)
    manual = trainer_for(backend, model_config, train_config, attention="manual").logits(x)
    np.testing.assert_allclose(fused, manual, rtol=0, atol=1e-5)


# eager torch has no jit to switch off; JAX runs jitted, and op by op under jax.disable_jit()
@pytest.mark.parametrize("name, jit", [("torch", False), ("jax", True), ("jax", False)],
                         ids=["torch", "jax-jit", "jax-no-jit"])
@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_causality(name, jit, model_config, one_layer_config, train_config, batch, attention):
    """Logits at positions 0..t do not change when the tokens after t do; later ones do."""
    backend = load_backend(name)
    config = model_config if jit else one_layer_config  # op by op is slow: one layer
    trainer = trainer_for(backend, config, train_config, attention=attention)
    x, _ = batch(B=2)
    t = 6
    x2 = x.copy()
    x2[:, t + 1:] = (x2[:, t + 1:] + 7) % 65  # change every token after t
    with no_jit(backend) if not jit else contextlib.nullcontext():
        a, b = trainer.logits(x), trainer.logits(x2)
    np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
    assert np.abs(a[:, t + 1:] - b[:, t + 1:]).min(axis=-1).max() > 0


def test_overfits_one_batch(backend, one_layer_config, train_config, batch):
    trainer = trainer_for(backend, one_layer_config, train_config)
    x, y = batch()
    for _ in range(150):
        loss = trainer.step(x, y)
    assert float(loss) < 0.5
    assert trainer.iter_num == 150


def test_each_step_applies_get_lr(backend, one_layer_config, train_config, batch):
    """With b1 = b2 = 0 and no decay or clipping, AdamW moves every weight by exactly the step's
    learning rate (lr * g / |g|): the optimizer applies get_lr(iter_num), step after step, and
    setting iter_num moves the schedule."""
    trainer = trainer_for(backend, one_layer_config, train_config, beta1=0.0, beta2=0.0, weight_decay=0.0,
                          grad_clip=0.0, warmup_iters=4, lr_decay_iters=12, learning_rate=1e-2, min_lr=1e-3)
    name = "transformer.h.0.mlp.c_fc.weight"
    iters = list(range(14)) + [150]
    for i, it in enumerate(iters):
        trainer.iter_num = it
        before = trainer.weights()[name]
        trainer.step(*batch(seed=i))
        moved = np.abs(trainer.weights()[name] - before)
        # (a gradient within a few eps = 1e-8 of zero moves its weight by less: not the median)
        assert np.median(moved) == pytest.approx(get_lr(it, trainer.train_config), rel=1e-4), f"step {it}"
        assert trainer.iter_num == it + 1


def test_seeded_generation(backend, one_layer_config, train_config):
    trainer = trainer_for(backend, one_layer_config, train_config)
    idx = np.array([[1, 2, 3]])
    a = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=42)
    b = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=42)
    c = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=43)
    assert a.shape == (1, 23) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[:, :3], idx)
    long = trainer.generate(idx, one_layer_config.block_size + 5, temperature=1.0, top_k=10, seed=1)
    assert long.shape == (1, 3 + one_layer_config.block_size + 5)  # past block_size
    wide = trainer.generate(np.arange(40).reshape(2, 20) % 65, 3, temperature=1.0, top_k=10, seed=1)
    assert wide.shape == (2, 23)  # a prompt longer than block_size


def test_generation_sees_the_last_block_size_tokens(backend, one_layer_config, train_config):
    """Past block_size, the next token depends on the last block_size tokens only, and greedy
    generation is the argmax of the logits at the last position."""
    trainer = trainer_for(backend, one_layer_config, train_config)
    tail = np.random.default_rng(1).integers(0, 65, (1, one_layer_config.block_size))
    a = trainer.generate(np.concatenate([[[1, 2, 3]], tail], axis=1), 4, temperature=0.0)
    b = trainer.generate(np.concatenate([[[9, 9, 9]], tail], axis=1), 4, temperature=0.0)
    c = trainer.generate(tail, 4, temperature=0.0)
    assert np.array_equal(a[:, -4:], b[:, -4:]) and np.array_equal(a[:, -4:], c[:, -4:])
    assert c[0, one_layer_config.block_size] == int(np.argmax(trainer.logits(tail)[0, -1]))


def test_uniform_sampling_is_inverse_cdf(backend, one_layer_config, train_config):
    trainer = trainer_for(backend, one_layer_config, train_config)
    idx = np.array([[5, 6]])
    greedy = trainer.generate(idx, 5, temperature=0.0)
    u = np.random.default_rng(0).random((5, 1))  # top_k=1 leaves one candidate, whatever the uniform
    assert np.array_equal(trainer.generate(idx, 5, temperature=1.0, top_k=1, uniforms=u), greedy)
    probs = np.exp(trainer.logits(idx)[0, -1] - trainer.logits(idx)[0, -1].max())
    cdf = np.cumsum(probs / probs.sum())
    pick = trainer.generate(idx, 1, temperature=1.0, uniforms=np.array([[0.5]]))[0, -1]
    assert pick == int(np.searchsorted(cdf, 0.5, side="right"))  # the first token whose CDF passes 0.5


def test_resume_continuity(backend, one_layer_config, train_config, batch):
    """2N steps in one go equal N steps, export, a fresh trainer, load, N steps: loss for loss,
    with dropout on, so the random state must resume too."""
    config = dataclasses.replace(one_layer_config, dropout=0.2)
    batches = [batch(seed=s) for s in range(8)]
    with process.settings(backend, train_config):  # the global seed torch draws dropout from
        full = trainer_for(backend, config, train_config)
        losses_full = [float(full.step(*b)) for b in batches]
        weights_full = full.weights()
    with process.settings(backend, train_config):
        first = trainer_for(backend, config, train_config)
        losses = [float(first.step(*b)) for b in batches[:4]]
        second = trainer_for(backend, config, train_config, first.weights())
        second.load_optimizer_state(first.optimizer_state())
        second.set_rng_state(first.rng_state())
        assert second.iter_num == 4
        losses += [float(second.step(*b)) for b in batches[4:]]
        weights = second.weights()
    np.testing.assert_allclose(losses, losses_full, rtol=0, atol=1e-6)
    assert losses[0] != losses[1]
    for name, value in weights.items():
        np.testing.assert_allclose(value, weights_full[name], rtol=0, atol=1e-6, err_msg=name)


def test_dropout_follows_train_and_eval_modes(backend, one_layer_config, train_config, batch):
    x, y = batch()
    config = dataclasses.replace(one_layer_config, dropout=0.5)
    # (JAX's fused attention has no dropout: in training its manual path runs, the same program)
    for attention in ("fused", "manual") if backend.BACKEND == "torch" else ("fused",):
        trainer = trainer_for(backend, config, train_config, attention=attention)
        a, b = trainer.logits(x, train=True), trainer.logits(x, train=True)
        assert not np.allclose(a, b)  # fresh masks on every call
        np.testing.assert_array_equal(trainer.logits(x), trainer.logits(x))
    est = trainer.estimate_loss(lambda split: (x, y), eval_iters=3)
    assert set(est) == {"train", "val"} and est["train"] == pytest.approx(est["val"])  # dropout off
    assert est["train"] == pytest.approx(float(np.mean(_eval_loss(trainer.logits(x), y))), rel=1e-5)
    assert trainer.loss_and_grads(x, y)[0] != trainer.loss_and_grads(x, y)[0]  # and back on after


def _eval_loss(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, y[..., None].astype(np.int64), -1)


def test_weights_round_trip_as_copies(backend, model_config, train_config):
    w = init_weights(model_config, 3)
    model = backend.create_model(model_config, w)
    out = backend.export_weights(model)
    assert list(out) == [s.name for s in param_layout(model_config)]
    assert all(np.array_equal(out[k], w[k]) and out[k].dtype == w[k].dtype and out[k].shape == w[k].shape
               for k in w)
    out["transformer.wte.weight"][0, 0] = 123.0  # exported arrays are copies, not views
    w["transformer.wpe.weight"][0, 0] = 456.0  # and loaded ones were copied in
    again = backend.export_weights(model)
    assert again["transformer.wte.weight"][0, 0] != 123.0 and again["transformer.wpe.weight"][0, 0] != 456.0
    with pytest.raises(ValueError, match="shape"):
        backend.load_weights(model, {**again, "transformer.wpe.weight": np.zeros((3, 3), np.float32)})
    trainer = trainer_for(backend, model_config, train_config, again)
    assert all(np.array_equal(trainer.weights()[k], again[k]) for k in again)


def test_no_bias_config(backend, model_config, train_config):
    config = dataclasses.replace(model_config, bias=False)
    trainer = trainer_for(backend, config, train_config)
    assert list(trainer.weights()) == [s.name for s in param_layout(config)]
    assert not any(name.endswith(".bias") for name in trainer.weights())
    assert set(trainer.optimizer_state()) == {"step"} | {f"{k}/{s.name}" for s in param_layout(config)
                                                         for k in ("exp_avg", "exp_avg_sq")}


def test_float64_inside_the_process_settings(backend, one_layer_config, batch):
    tc = TrainConfig(batch_size=4, device="cpu", dtype="float64")
    with process.settings(backend, tc):
        trainer = backend.Trainer(one_layer_config, tc)
        x, y = batch()
        loss, grads = trainer.loss_and_grads(x, y)
        assert abs(loss - math.log(65)) < 0.1
        assert all(v.dtype == np.float64 for v in [*trainer.weights().values(), *grads.values()])
        assert all(v.dtype == np.float64 for k, v in trainer.optimizer_state().items() if k != "step")
        assert trainer.logits(x).dtype == np.float64


def test_device_selection(backend):
    assert backend.select_device("cpu") is not None
    assert backend.resolve_dtype("auto", backend.select_device("cpu")) == "float32"
    assert backend.resolve_dtype("float64", backend.select_device("cpu")) == "float64"
    assert set(backend.DTYPES) == {"float32", "bfloat16", "float64"}


def test_the_module_satisfies_the_contract(backend, one_layer_config, train_config):
    from backends.interface import Backend, Trainer

    assert isinstance(backend, Backend)
    assert isinstance(trainer_for(backend, one_layer_config, train_config), Trainer)
    assert isinstance(one_layer_config, ModelConfig)
