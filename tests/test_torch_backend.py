"""What only the PyTorch backend has: one Parameter for the tied head, torch's own init pass,
autograd's view of causality, ``no_grad`` in evaluation, the global generator, CUDA and autocast.
The behaviour both backends share is in ``test_backend_contract.py``."""

import math

import numpy as np
import pytest
import torch

from backends import process
from backends.torch import train as tt
from backends.torch.model import GPT
from common.config import ModelConfig, TrainConfig
from common.errors import UserError


def test_lm_head_is_tied_and_native_init_follows_nanogpt():
    model = GPT(ModelConfig(block_size=16, vocab_size=65, n_layer=6, n_head=2, n_embd=128))
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(12)) < 5e-4
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3


@pytest.mark.parametrize("attention", ["fused", "manual"])
def test_causality_by_gradient(model_config, batch, attention):
    """The logits at position t have exactly zero gradient with respect to the inputs after t."""
    model = tt.create_model(model_config, attention=attention, param_dtype="float64")
    x, _ = batch(B=1)
    emb = model.transformer.wte(torch.from_numpy(x).long()).detach().requires_grad_(True)
    handle = model.transformer.wte.register_forward_hook(lambda module, args, output: emb)
    logits, _ = model(torch.from_numpy(x))
    handle.remove()
    t = 6
    logits[0, t].logsumexp(-1).backward()
    grad = emb.grad[0].abs().sum(-1)  # (T,)
    assert torch.all(grad[t + 1:] == 0)
    assert torch.all(grad[: t + 1] > 0)


def test_estimate_loss_runs_in_eval_mode_without_gradients(one_layer_config, batch):
    model = tt.create_model(ModelConfig(**{**one_layer_config.__dict__, "dropout": 0.5}))
    seen = []
    model.register_forward_hook(lambda m, a, o: seen.append((m.training, torch.is_grad_enabled())))
    x, y = batch()
    out = tt.estimate_loss(model, lambda split: (x, y), eval_iters=3)
    assert set(out) == {"train", "val"} and out["train"] == pytest.approx(out["val"])
    assert seen == [(False, False)] * 6 and model.training


def test_building_a_model_leaves_the_global_generator_alone(model_config):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    tt.create_model(model_config)
    assert torch.equal(torch.rand(3), expected)


def test_process_settings_seed_dropout_and_set_precision_then_restore():
    before = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32, torch.rand(1))
    with process.settings(tt, TrainConfig(seed=5, tf32=True)):
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
        first = torch.rand(2)
    with process.settings(tt, TrainConfig(seed=5)):
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
        assert torch.equal(torch.rand(2), first)  # the seed, not what ran before
    assert (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32) == before[:2]


def test_rng_state_of_the_wrong_size_is_refused(one_layer_config, train_config):
    trainer = tt.Trainer(one_layer_config, train_config)
    with pytest.raises(UserError, match="RNG state"):
        trainer.set_rng_state(np.zeros(7, dtype=np.uint8))


def test_a_gpu_written_rng_state_resumes_on_the_cpu(one_layer_config, train_config):
    """A checkpoint written on a GPU holds the CPU's generator and the GPU's (16 more bytes): on a
    CPU the first part is restored and the GPU's is set aside, not refused as damaged."""
    trainer = tt.Trainer(one_layer_config, train_config)
    torch.manual_seed(11)
    cpu_state = trainer.rng_state()
    expected = torch.rand(3)
    torch.manual_seed(0)
    trainer.set_rng_state(np.concatenate([cpu_state, np.arange(16, dtype=np.uint8)]))
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(UserError, match="RNG state"):
        trainer.set_rng_state(cpu_state[:-1])


def test_device_selection_refuses_a_missing_gpu():
    assert tt.select_device("cpu").type == "cpu"
    assert tt.select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            tt.select_device("cuda")


@pytest.mark.gpu("torch")
def test_bf16_autocast_on_gpu(model_config, train_config, batch):
    trainer = tt.Trainer(model_config, TrainConfig(**{**train_config.__dict__, "device": "cuda", "dtype": "auto"}))
    assert trainer.dtype == "bfloat16"
    x, y = batch()
    assert math.isfinite(float(trainer.step(x, y)))
    assert all(v.dtype == np.float32 for v in trainer.weights().values())
