"""What only the JAX backend has: no separate head, Flax's initialisers, the gradient as a value,
one ahead-of-time compiled step, one compiled sampling step for every length, 64-bit mode as a
process setting, the bfloat16 compute dtype, devices. The behaviour both backends share is in
``test_backend_contract.py``."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from backends import process
from backends.jax import bench, train as jt
from backends.jax.model import GPT
from common.config import ModelConfig, TrainConfig
from common.errors import UserError
from common.params import param_layout


def compilations() -> int:
    return bench.compile_stats()["compilations"]


def test_lm_head_is_tied_and_native_init_follows_nanogpt():
    cfg = ModelConfig(block_size=16, vocab_size=65, n_layer=6, n_head=2, n_embd=128)
    model = GPT(cfg, rngs=nnx.Rngs(params=0, dropout=0))
    names = {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any("lm_head" in n for n in names)  # the head is wte.attend: no weight of its own
    assert len(names) == len(param_layout(cfg))
    block = model.transformer.h[0]
    assert abs(float(block.mlp.c_proj.kernel[...].std()) - 0.02 / math.sqrt(12)) < 5e-4
    assert abs(float(block.mlp.c_fc.kernel[...].std()) - 0.02) < 1e-3
    assert float(jnp.abs(block.mlp.c_fc.bias[...]).max()) == 0.0 and float(block.ln_1.scale[...].min()) == 1.0
    h = jnp.asarray(np.random.default_rng(0).standard_normal((3, 128)), jnp.float32)
    np.testing.assert_allclose(model.transformer.wte.attend(h), h @ model.transformer.wte.embedding[...].T, rtol=1e-5)


def test_linear_kernels_are_stored_transposed(model_config):
    model = jt.create_model(model_config)
    # canonical (torch) c_attn weight is (3C, C); the Flax kernel (C, 3C)
    assert jt.export_weights(model)["transformer.h.0.attn.c_attn.weight"].shape == (96, 32)
    assert model.transformer.h[0].attn.c_attn.kernel[...].shape == (32, 96)


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_causality_by_gradient(model_config, batch, attention):
    """The logits at position t have exactly zero gradient with respect to the position embeddings after t."""
    model = jt.create_model(model_config, attention=attention)
    x, _ = batch(B=1)
    t = 6

    def logit_at_t(model):  # depends on position s only through x[s] and wpe[s]
        logits, _ = model(jnp.asarray(x))
        return logits[:, t].sum()

    grads = nnx.jit(nnx.grad(logit_at_t))(model)
    g = np.asarray(grads["transformer"]["wpe"]["embedding"][...])
    assert np.all(g[t + 1:] == 0.0)
    assert np.all(np.abs(g[: t + 1]).sum(axis=1) > 0)


def test_estimate_loss_runs_in_eval_mode(one_layer_config, batch):
    model = jt.create_model(ModelConfig(**{**one_layer_config.__dict__, "dropout": 0.5}))
    x, y = batch()
    seen = []

    def get_batch(split):
        seen.append(model.transformer.drop.deterministic)  # eval mode while batches are drawn
        return x, y

    out = jt.estimate_loss(model, get_batch, eval_iters=3)
    assert set(out) == {"train", "val"} and out["train"] == pytest.approx(out["val"])
    assert seen == [True] * 6 and not model.transformer.drop.deterministic  # back in train mode


def test_compile_is_ahead_of_time_and_reused(one_layer_config, train_config, batch):
    trainer = jt.Trainer(one_layer_config, train_config)
    x, y = batch()
    times = trainer.compile(x, y)
    assert set(times) == {"lower_s", "compile_s"} and all(v >= 0 for v in times.values())
    compiled, before = trainer.compiled_step, compilations()
    for _ in range(3):
        loss = trainer.step(x, y)
    trainer.wait(loss)
    assert compilations() == before  # the AOT executable ran: nothing compiled just in time
    assert trainer.compiled_step is compiled is not None and math.isfinite(float(loss))


def test_one_compiled_sampling_step_serves_every_length(one_layer_config, train_config):
    trainer = jt.Trainer(one_layer_config, train_config)
    idx = np.array([[1, 2, 3]] * 5)  # a batch of 5 prompts: no other test samples 5 at once
    first = compilations()
    trainer.generate(idx, 2, temperature=1.0, top_k=7, seed=1)
    before = compilations()
    assert before > first  # the sampling loop for B=5 was compiled just now: the count sees it
    trainer.generate(idx, one_layer_config.block_size + 5, temperature=1.0, top_k=7, seed=1)  # past block_size
    trainer.generate(idx[:, :2], 100, temperature=1.0, top_k=7, seed=2)
    assert compilations() == before


def test_float64_needs_the_process_settings(one_layer_config):
    tc = TrainConfig(batch_size=4, device="cpu", dtype="float64")
    before = jax.config.jax_enable_x64
    with jax.enable_x64(False), pytest.raises(UserError, match="64-bit mode") as err:
        jt.Trainer(one_layer_config, tc)
    assert "\n" not in str(err.value)
    with process.settings(jt, tc):
        assert jax.config.jax_enable_x64 and jt.Trainer(one_layer_config, tc).weights()
    assert jax.config.jax_enable_x64 == before  # undone after


def test_process_settings_set_the_gpu_matmul_precision_and_restore_it():
    before = jax.config.jax_default_matmul_precision
    on_gpu = jax.devices()[0].platform == "gpu"
    with process.settings(jt, TrainConfig(tf32=True)):
        assert jax.config.jax_default_matmul_precision == ("tensorfloat32" if on_gpu else before)
    with process.settings(jt, TrainConfig(tf32=False)):
        assert jax.config.jax_default_matmul_precision == ("highest" if on_gpu else before)
    with process.settings(jt, TrainConfig(tf32=True, device="cpu")):  # a CPU's float32 matmul is always full
        assert jax.config.jax_default_matmul_precision == before
    assert jax.config.jax_default_matmul_precision == before


def test_bfloat16_compute_keeps_float32_params(one_layer_config, train_config, batch):
    trainer = jt.Trainer(one_layer_config, TrainConfig(**{**train_config.__dict__, "dtype": "bfloat16"}))
    assert trainer.model.transformer.h[0].attn.c_attn.dtype == jnp.bfloat16
    # like torch's autocast: embeddings (and with them the residual stream) stay float32
    assert trainer.model.transformer.wte.dtype == jnp.float32
    x, y = batch()
    loss = trainer.step(x, y)
    assert loss.dtype == jnp.float32 and abs(float(loss) - math.log(65)) < 0.2
    assert all(v.dtype == np.float32 for v in trainer.weights().values())


def test_rng_state_of_the_wrong_size_is_refused(one_layer_config, train_config):
    trainer = jt.Trainer(one_layer_config, train_config)
    state = trainer.rng_state()
    trainer.set_rng_state(state)  # its own state goes back in
    with pytest.raises(UserError, match="RNG state"):
        trainer.set_rng_state(state[:-1])


def test_device_selection():
    assert jt.select_device("cpu").platform == "cpu"
    assert jt.select_device("auto").platform in ("cpu", "gpu")
    if not jax.devices()[0].platform == "gpu":
        for name in ("cuda", "gpu"):
            with pytest.raises(UserError, match="no GPU"):
                jt.select_device(name)
    with pytest.raises(UserError, match="torch"):
        jt.select_device("mps")


def test_choosing_jax_imports_only_jax(tmp_path):
    code = ("import sys, backends; backends.load_backend('jax');"
            "assert {'jax', 'flax', 'optax'} <= set(sys.modules) and 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr[-2000:]
