"""On a CUDA GPU (issue 20): what the two backends compute there. Skipped with the reason without one
(``gpu_missing`` in conftest.py); each test takes seconds to a minute on one H100.

- the parity suite on the GPU: backend against backend in float32 with TF32 off, and each backend
  in bfloat16 against a float64 truth;
- the fused attention kernels (torch's SDPA restricted to flash / memory-efficient attention, JAX's
  ``dot_product_attention`` with cuDNN where it applies) against the manual path, each measured
  against float64, in bfloat16 and in float32;
- ``torch.compile`` on the GPU equal to eager.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest

from backends import load_backend, process
from backends.parity.reference import normwise_errors, split_qkv
from backends.parity.tolerances import ERROR_RATIO, REFERENCE_BUDGETS, TENSOR_RATIO_FLOOR, TOLERANCES
from common.config import ModelConfig, TrainConfig, build_configs
from common.params import init_weights

# the head width (128 / 4 = 32) is one cuDNN's flash attention takes (a multiple of 8, at most 128)
ATTENTION_MODEL = ModelConfig(block_size=64, vocab_size=65, n_layer=2, n_head=4, n_embd=128)


def _failed(report) -> str:
    return "\n".join(f"{r.quantity}: {r.max_abs:.3g} / {r.max_rel:.3g} over {r.tolerance} {r.worst}"
                     for r in report.rows if not r.passed)


# -- the parity suite on the GPU ------------------------------------------------------------------

@pytest.mark.gpu
def test_parity_float32_on_the_gpu_with_tf32_off():
    from backends.parity import run_parity

    report = run_parity("float32", device="cuda")
    assert (report.train_config["device"], report.train_config["tf32"]) == ("cuda", False)
    assert report.passed, _failed(report)


@pytest.mark.gpu
def test_parity_bfloat16_on_the_gpu_against_float64():
    from backends.parity.reference import run_reference

    report = run_reference("bfloat16", device="cuda")
    assert report.train_config["device"] == "cuda"
    assert report.passed, _failed(report)


# -- fused attention against the manual path --------------------------------------------------------

def _measure(backend: str, attention: str, dtype: str, device: str, x, y) -> dict[str, np.ndarray]:
    """Eval-mode logits and every gradient (query, key and value apart), from nanoGPT's init."""
    module = load_backend(backend)
    config = TrainConfig(batch_size=x.shape[0], device=device, dtype=dtype, attention=attention, tf32=False)
    kernels = contextlib.nullcontext()
    if backend == "torch" and attention == "fused" and device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        # flash or memory-efficient attention, nothing else: torch raises if neither takes these inputs
        kernels = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
    with process.settings(module, config), kernels:
        trainer = module.Trainer(ATTENTION_MODEL, config, init_weights(ATTENTION_MODEL, 0))
        logits = trainer.logits(x)
        _, grads = trainer.loss_and_grads(x, y)
        lowered = _lowered_step(trainer, x, y) if backend == "jax" else ""
    return {"logits": {"logits": logits}, "grads": split_qkv(grads), "lowered": lowered}


def _lowered_step(trainer, x, y) -> str:
    """The JAX training step as lowered for the trainer's device (StableHLO text)."""
    x, y = trainer.parallel.batch(x), trainer.parallel.batch(y)
    return trainer._step_fn.lower(trainer._graphdef, trainer._state, x, y, trainer._lr()).as_text()


@pytest.fixture(scope="module")
def attention_truth(batch):
    x, y = batch(B=8, T=ATTENTION_MODEL.block_size, V=ATTENTION_MODEL.vocab_size, seed=3)
    return x, y, _measure("torch", "manual", "float64", "cpu", x, y)


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.gpu("torch")),
                                     pytest.param("jax", marks=pytest.mark.gpu("jax"))])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_fused_attention_on_the_gpu_is_as_accurate_as_the_manual_path(backend, dtype, attention_truth):
    """Each path's error against float64 within the dtype's budget, and the fused kernel's within
    3x of the manual path's (both first raised to the dtype's round-off), tensor by tensor."""
    x, y, truth = attention_truth
    fused, manual = (_measure(backend, a, dtype, "cuda", x, y) for a in ("fused", "manual"))
    floor = TENSOR_RATIO_FLOOR[dtype]
    for quantity in ("logits", "grads"):
        budget = REFERENCE_BUDGETS[dtype][quantity].rel
        err_f, err_m = (normwise_errors(truth[quantity], side[quantity]) for side in (fused, manual))
        for name in truth[quantity]:
            f, m = err_f[name]["rel"], err_m[name]["rel"]
            assert f <= budget and m <= budget, (quantity, name, f, m, budget)
            assert max(f, floor) <= ERROR_RATIO * max(m, floor), (quantity, name, f, m)
    if backend == "jax":  # cuDNN's flash attention where it applies (bfloat16), XLA's composite in float32
        assert ("__cudnn$fmha" in fused["lowered"]) == (dtype == "bfloat16")
        assert "__cudnn$fmha" not in manual["lowered"]


# -- torch.compile -----------------------------------------------------------------------------------

@pytest.mark.gpu("torch")
def test_torch_compile_on_the_gpu_equals_eager():
    """Ten float32 steps (TF32 off) of the tiny preset, eager and compiled, from the same weights and
    batches: the losses and the final logits within the float32 parity tolerances."""
    from backends.parity.session import synthetic_corpus
    from common.batches import BatchSampler

    torch_train = load_backend("torch")
    mc, tc = build_configs("tiny", dict(device="cuda", dtype="float32", tf32=False))
    weights = init_weights(mc, 0)
    sampler = BatchSampler(synthetic_corpus(mc.vocab_size), tc.batch_size, mc.block_size, 0)
    batches = [sampler.get_batch("train") for _ in range(10)]
    losses, logits = {}, {}
    for compiled in (False, True):
        config = dataclasses.replace(tc, compile=compiled)
        with process.settings(torch_train, config):
            trainer = torch_train.Trainer(mc, config, weights)
            losses[compiled] = [float(trainer.step(x, y)) for x, y in batches]
            logits[compiled] = trainer.logits(batches[0][0])
    assert np.max(np.abs(np.subtract(losses[True], losses[False]))) <= TOLERANCES["float32"]["loss_curve"].atol
    assert np.max(np.abs(logits[True] - logits[False])) <= TOLERANCES["float32"]["final_params"].atol
