"""Dropout cannot match across frameworks bit for bit (each draws its masks from its own RNG), so
it is tested on its own: eval mode is deterministic and the same in both backends; train mode with
dropout > 0 differs from eval mode; within one backend the same seed gives the same result and
another seed another one."""

from __future__ import annotations

import numpy as np
import pytest

from backends import load_backend, process
from backends.parity import TOLERANCES, compare
from common.config import build_configs

pytest.importorskip("torch")
pytest.importorskip("jax")

BACKENDS = ["torch", "jax"]


def configs(seed=0):
    return build_configs("tiny", dict(dropout=0.2, device="cpu", dtype="float32", seed=seed))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 65, size=(4, 16), dtype=np.int32)
    y = rng.integers(0, 65, size=(4, 16), dtype=np.int32)
    return x, y


def trainer(backend, seed=0):
    mc, tc = configs(seed)
    from common.params import init_weights

    return load_backend(backend).Trainer(mc, tc, init_weights(mc, 0))  # same weights, whatever the seed


def test_eval_mode_is_deterministic_and_equal_across_backends(batch):
    x, _ = batch
    logits = {}
    for backend in BACKENDS:
        tr = trainer(backend)
        first, second = tr.logits(x), tr.logits(x)
        assert np.array_equal(first, second), backend
        logits[backend] = first
    row = compare("eval logits, dropout 0.2", {"l": logits["torch"]}, {"l": logits["jax"]},
                  TOLERANCES["float32"]["logits"])
    assert row.passed, row.describe()


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_mode_drops_out(backend, batch):
    x, _ = batch
    tr = trainer(backend)
    eval_logits = tr.logits(x)
    train_a, train_b = tr.logits(x, train=True), tr.logits(x, train=True)
    assert np.abs(train_a - eval_logits).max() > 1e-3
    assert np.abs(train_a - train_b).max() > 1e-3  # fresh masks on every call
    assert np.array_equal(tr.logits(x), eval_logits)  # and back to deterministic in eval mode


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_result_other_seed_other_result(backend, batch):
    x, y = batch

    def run(seed):
        module = load_backend(backend)
        with process.settings(module, configs(seed)[1]):  # torch seeds its global generator here
            tr = trainer(backend, seed)  # and jax the model's streams
            logits = tr.logits(x, train=True)
            loss, grads = tr.loss_and_grads(x, y)  # a training forward and backward, dropout on
        return logits, loss, grads["transformer.wte.weight"]

    logits_a, loss_a, grad_a = run(seed=7)
    logits_b, loss_b, grad_b = run(seed=7)
    logits_c, loss_c, grad_c = run(seed=8)
    assert np.array_equal(logits_a, logits_b) and loss_a == loss_b and np.array_equal(grad_a, grad_b)
    assert np.abs(logits_a - logits_c).max() > 1e-3 and loss_a != loss_c
