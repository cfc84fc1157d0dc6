"""The JAX GPT: shapes, initial loss, causality, overfitting, sampling, resume, the lr schedule.

Mirrors tests/test_torch_model.py. The model tests run under jit; causality also eagerly
(``jax.disable_jit()``), with the explicit masked softmax.
"""

import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from backends.jax import train as jt
from backends.jax.model import GPT
from common.config import ModelConfig, TrainConfig, build_configs
from common.errors import UserError
from common.params import init_weights, param_layout

CFG = ModelConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)
# training tests use one layer: XLA's compile time grows with depth, and it dominates on a CPU
CFG1 = ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32)
TRAIN = TrainConfig(batch_size=4, max_iters=200, eval_interval=50, eval_iters=2, learning_rate=3e-3,
                    min_lr=3e-4, warmup_iters=5, lr_decay_iters=200, device="cpu", dtype="float32")
REPO = Path(__file__).resolve().parents[1]


def _batch(B=4, T=16, V=65, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T), dtype=np.int32)
    y = rng.integers(0, V, (B, T), dtype=np.int32)
    return x, y


@nnx.jit
def _jit_forward(model, x, y=None):
    return model(x, y)


def _forward(model, x, y=None, jit=True):
    if jit:
        return _jit_forward(model, x, y)
    with jax.disable_jit():
        return model(x, y)


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_shapes_and_initial_loss(attention):
    model = jt.create_model(CFG, attention=attention)
    x, y = _batch()
    logits, loss = _forward(model, jnp.asarray(x), jnp.asarray(y))
    assert logits.shape == (4, 16, 65) and logits.dtype == jnp.float32
    assert abs(float(loss) - math.log(65)) < 0.1  # near-uniform predictions at init
    logits, loss = _forward(model, jnp.asarray(x[:, :5]))
    assert logits.shape == (4, 5, 65) and loss is None


def test_fused_and_manual_attention_agree():
    x, _ = _batch()
    a = jt.create_model(CFG, attention="fused")
    b = jt.create_model(CFG, attention="manual")
    la, _ = a(jnp.asarray(x))
    lb, _ = b(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(la), np.asarray(lb), atol=1e-5)


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


@pytest.mark.parametrize("attention,jit", [("fused", True), ("manual", True), ("manual", False)],
                         ids=["fused-jit", "manual-jit", "manual-eager"])
def test_causality(attention, jit):
    """Logits at position t have zero gradient with respect to the inputs after t, and do not
    change when later tokens do."""
    model = jt.create_model(CFG if jit else CFG1, attention=attention)  # eager is slow: one layer
    x, _ = _batch(B=1)
    t = 6

    def logit_at_t(model):  # depends on position s only through x[s] and wpe[s]
        logits, _ = model(jnp.asarray(x))
        return logits[:, t].sum()

    if jit:  # (eagerly, differentiating op by op is slow; the perturbation check below suffices)
        grads = nnx.jit(nnx.grad(logit_at_t))(model)
        g = np.asarray(grads["transformer"]["wpe"]["embedding"][...])
        assert np.all(g[t + 1:] == 0.0)  # position embeddings after t: exactly no influence
        assert np.all(np.abs(g[: t + 1]).sum(axis=1) > 0)  # every position up to t: some influence

    x2 = x.copy()
    x2[:, t + 1:] = (x2[:, t + 1:] + 7) % 65  # change every token after t
    a, _ = _forward(model, jnp.asarray(x), None, jit)
    b, _ = _forward(model, jnp.asarray(x2), None, jit)
    np.testing.assert_array_equal(np.asarray(a[:, : t + 1]), np.asarray(b[:, : t + 1]))
    assert not np.allclose(np.asarray(a[:, t + 1:]), np.asarray(b[:, t + 1:]))


def test_dropout_follows_train_and_eval_modes():
    cfg = ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32, dropout=0.5)
    x, _ = _batch()
    for attention in ("fused", "manual"):
        model = jt.create_model(cfg, attention=attention)
        a, _ = model(jnp.asarray(x))
        b, _ = model(jnp.asarray(x))  # the dropout streams advanced: new masks
        assert not np.allclose(np.asarray(a), np.asarray(b))
        model.eval()
        c, _ = model(jnp.asarray(x))
        d, _ = model(jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(c), np.asarray(d))
        model.train()


def test_overfits_one_batch():
    trainer = jt.Trainer(CFG1, TRAIN)
    x, y = _batch()
    for _ in range(150):
        loss = trainer.step(x, y)
    assert float(loss) < 0.5
    assert trainer.iter_num == 150


def test_compile_is_ahead_of_time_and_reused():
    trainer = jt.Trainer(CFG1, TRAIN)
    x, y = _batch()
    times = trainer.compile(x, y)
    assert set(times) == {"lower_s", "compile_s"} and all(v >= 0 for v in times.values())
    compiled, jitted = trainer.compiled_step, trainer._step_fn._cache_size()
    loss = trainer.step(x, y)
    trainer.wait(loss)
    assert trainer._step_fn._cache_size() == jitted  # the AOT executable ran: nothing compiled just in time
    assert trainer.compiled_step is compiled is not None and math.isfinite(float(loss))


def test_estimate_loss_switches_modes_and_tracks_no_gradients():
    cfg = ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32, dropout=0.5)
    model = jt.create_model(cfg)
    x, y = _batch()
    seen = []

    def get_batch(split):
        seen.append(model.transformer.drop.deterministic)  # eval mode while batches are drawn
        return x, y

    out = jt.estimate_loss(model, get_batch, eval_iters=3)
    assert set(out) == {"train", "val"} and out["train"] == pytest.approx(out["val"])  # dropout off: same loss
    assert seen == [True] * 6 and not model.transformer.drop.deterministic  # back in train mode
    model.eval()
    _, loss = model(jnp.asarray(x), jnp.asarray(y))
    model.train()
    assert out["train"] == pytest.approx(float(loss), rel=1e-6)


def test_seeded_generation_is_reproducible():
    trainer = jt.Trainer(CFG1, TRAIN)
    idx = np.array([[1, 2, 3]])
    a = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=42)
    b = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=42)
    c = trainer.generate(idx, 20, temperature=1.0, top_k=10, seed=43)
    assert a.shape == (1, 23) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[:, :3], idx)
    compiled = jt._sample_step._cache_size()
    long = trainer.generate(idx, CFG1.block_size + 5, temperature=1.0, top_k=10, seed=1)  # past block_size
    assert long.shape == (1, 3 + CFG1.block_size + 5)
    trainer.generate(np.arange(40).reshape(2, 20) % 65, 3, temperature=1.0, top_k=10, seed=1)  # T0 > block_size
    assert jt._sample_step._cache_size() == compiled + 1  # one more only for the new batch size B=2


def test_generation_crops_to_the_last_block_size_tokens():
    """Past block_size, the next token depends on the last block_size tokens only (as torch crops)."""
    trainer = jt.Trainer(CFG1, TRAIN)
    rng = np.random.default_rng(1)
    tail = rng.integers(0, 65, (1, CFG1.block_size))
    a = trainer.generate(np.concatenate([[[1, 2, 3]], tail], axis=1), 4, temperature=0.0)
    b = trainer.generate(np.concatenate([[[9, 9, 9]], tail], axis=1), 4, temperature=0.0)
    c = trainer.generate(tail, 4, temperature=0.0)
    assert np.array_equal(a[:, -4:], b[:, -4:]) and np.array_equal(a[:, -4:], c[:, -4:])
    # greedy equals the argmax of the logits at the last position
    logits = trainer.logits(tail)
    assert c[0, CFG1.block_size] == int(np.argmax(logits[0, -1]))


def test_uniform_sampling_is_inverse_cdf():
    trainer = jt.Trainer(CFG1, TRAIN)
    idx = np.array([[5, 6]])
    greedy = trainer.generate(idx, 5, temperature=0.0)
    # top_k=1 leaves one candidate, so any uniform number picks the greedy token
    u = np.random.default_rng(0).random((5, 1))
    assert np.array_equal(trainer.generate(idx, 5, temperature=1.0, top_k=1, uniforms=u), greedy)


def test_resume_continuity():
    """2N steps in one go equal N steps, export, a fresh trainer, load, N steps: loss for loss
    (with dropout, so the RNG streams must resume too)."""
    cfg = ModelConfig(**{**CFG1.__dict__, "dropout": 0.2})
    x = [_batch(seed=s) for s in range(8)]
    full = jt.Trainer(cfg, TRAIN)
    losses_full = [float(full.step(*b)) for b in x]
    first = jt.Trainer(cfg, TRAIN)
    losses = [float(first.step(*b)) for b in x[:4]]
    second = jt.Trainer(cfg, TRAIN, first.weights())
    second.load_optimizer_state(first.optimizer_state())
    second.set_rng_state(first.rng_state())  # the dropout streams
    assert second.iter_num == 4
    losses += [float(second.step(*b)) for b in x[4:]]
    np.testing.assert_allclose(losses, losses_full, rtol=0, atol=1e-6)
    assert all(np.allclose(full.weights()[k], v, rtol=0, atol=1e-6) for k, v in second.weights().items())


def test_weights_round_trip_and_copy():
    w = init_weights(CFG, 3)
    model = jt.create_model(CFG, w)
    out = jt.export_weights(model)
    assert all(np.array_equal(out[k], w[k]) and out[k].dtype == w[k].dtype for k in w)
    assert [s.name for s in param_layout(CFG)] == list(out)
    # Linear weights come out in torch's (out, in) layout: c_attn is (3C, C), its Flax kernel (C, 3C)
    assert out["transformer.h.0.attn.c_attn.weight"].shape == (96, 32)
    assert model.transformer.h[0].attn.c_attn.kernel[...].shape == (32, 96)
    out["transformer.wte.weight"][0, 0] = 123.0  # exported arrays are copies, not views
    w["transformer.wpe.weight"][0, 0] = 456.0  # and loaded ones were copied in
    assert float(model.transformer.wte.embedding[0, 0]) != 123.0
    assert float(model.transformer.wpe.embedding[0, 0]) != 456.0
    with pytest.raises(ValueError, match="shape"):
        jt.load_weights(model, {**out, "transformer.wpe.weight": np.zeros((3, 3), np.float32)})


def test_no_bias_config():
    cfg = ModelConfig(**{**CFG.__dict__, "bias": False})
    trainer = jt.Trainer(cfg, TRAIN)
    assert list(trainer.weights()) == [s.name for s in param_layout(cfg)]
    assert set(trainer.optimizer_state()) == {"step"} | {f"{k}/{s.name}" for s in param_layout(cfg)
                                                         for k in ("exp_avg", "exp_avg_sq")}


def test_lr_schedule_shape():
    _, cfg = build_configs("shakespeare-char")
    lrs = [jt.get_lr(i, cfg) for i in range(cfg.max_iters + 10)]
    assert lrs[0] == pytest.approx(1e-3 / 101) and lrs[99] == pytest.approx(1e-3 * 100 / 101)
    assert lrs[100] == pytest.approx(1e-3) and lrs[5000] == pytest.approx(1e-4) and lrs[-1] == 1e-4


@pytest.mark.parametrize("preset", ["tiny", "baby", "shakespeare-char"])
def test_lr_schedule_equals_torch_get_lr_over_a_whole_run(preset):
    from backends.torch.train import get_lr as torch_get_lr

    _, cfg = build_configs(preset)
    counts = np.arange(cfg.max_iters + 10, dtype=np.int32)  # optax's count: updates so far
    got = np.asarray(jax.jit(jax.vmap(jt._lr_schedule(cfg)))(counts), dtype=np.float64)
    want = np.array([torch_get_lr(int(it), cfg) for it in counts])  # torch's it for the same step
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)


def test_optimizer_applies_the_schedule_step_by_step():
    """With b1 = b2 = 0, no decay, no clipping, an AdamW update is lr * g / |g|: every parameter
    entry moves by the step's learning rate, which must be torch's get_lr(it) for step it."""
    cfg = TrainConfig(**{**TRAIN.__dict__, "beta1": 0.0, "beta2": 0.0, "weight_decay": 0.0, "grad_clip": 0.0,
                         "warmup_iters": 4, "lr_decay_iters": 12, "learning_rate": 1e-2, "min_lr": 1e-3})
    model = jt.create_model(CFG1)
    optimizer = jt.configure_optimizer(model, cfg, "cpu")
    rng = np.random.default_rng(0)
    for it in range(16):
        before = np.asarray(model.transformer.wte.embedding[...])
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype),
                             nnx.state(model, nnx.Param))
        optimizer.update(model, grads)
        moved = np.abs(np.asarray(model.transformer.wte.embedding[...]) - before)
        np.testing.assert_allclose(moved, jt.get_lr(it, cfg), rtol=1e-3, err_msg=str(it))
    assert int(optimizer.step[...]) == 16


def test_iter_num_moves_the_schedule():
    trainer = jt.Trainer(CFG1, TRAIN)
    trainer.iter_num = 150
    counts = [s.count for s in trainer._optax_states() if isinstance(s, optax.ScaleByScheduleState)]
    assert [int(c) for c in counts] == [150] and trainer.iter_num == 150


def test_float64_and_schedule_under_x64():
    """dtype=float64 (the parity suite's) enables x64; run in a fresh process to keep this one 32-bit."""
    code = (
        "import numpy as np, jax, jax.numpy as jnp\n"
        "from backends.jax import train as jt\n"
        "from common.config import ModelConfig, TrainConfig, build_configs\n"
        "cfg = ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32)\n"
        "tc = TrainConfig(batch_size=4, device='cpu', dtype='float64', warmup_iters=5, lr_decay_iters=50)\n"
        "t = jt.Trainer(cfg, tc)\n"
        "assert jax.config.jax_enable_x64\n"
        "x = np.random.default_rng(0).integers(0, 65, (4, 16)).astype(np.int32)\n"
        "assert all(v.dtype == np.float64 for v in t.weights().values())\n"
        "loss = t.step(x, x); assert loss.dtype == jnp.float64\n"
        "assert all(v.dtype == np.float64 for k, v in t.optimizer_state().items() if k != 'step')\n"
        "_, c = build_configs('shakespeare-char')\n"
        "got = np.asarray(jax.vmap(jt._lr_schedule(c))(jnp.arange(c.max_iters + 5)))\n"
        "want = np.array([jt.get_lr(i, c) for i in range(c.max_iters + 5)])\n"
        "assert got.dtype == np.float64 and np.array_equal(got, want), np.abs(got - want).max()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_bfloat16_compute_keeps_float32_params():
    trainer = jt.Trainer(CFG1, TrainConfig(**{**TRAIN.__dict__, "dtype": "bfloat16"}))
    assert trainer.model.transformer.h[0].attn.c_attn.dtype == jnp.bfloat16
    # like torch's autocast: embeddings (and with them the residual stream) stay float32
    assert trainer.model.transformer.wte.dtype == jnp.float32
    x, y = _batch()
    loss = trainer.step(x, y)
    assert loss.dtype == jnp.float32 and abs(float(loss) - math.log(65)) < 0.2
    assert all(v.dtype == np.float32 for v in trainer.weights().values())


def test_device_selection_and_precision():
    assert jt.select_device("cpu").platform == "cpu"
    assert jt.select_device("auto").platform in ("cpu", "gpu")
    assert jt.resolve_dtype("auto", jt.select_device("cpu")) == "float32"
    if not jt._gpus():
        with pytest.raises(UserError, match="no GPU"):
            jt.select_device("cuda")
        with pytest.raises(UserError, match="no GPU"):
            jt.select_device("gpu")
    with pytest.raises(UserError, match="torch"):
        jt.select_device("mps")
    jt.set_matmul_precision(True)
    assert jax.config.jax_default_matmul_precision == "tensorfloat32"
    jt.set_matmul_precision(False)
    assert jax.config.jax_default_matmul_precision == "highest"


def test_choosing_jax_imports_only_jax():
    code = (
        "import sys, backends;"
        "backends.load_backend('jax');"
        "assert {'jax', 'flax', 'optax'} <= set(sys.modules) and 'torch' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
