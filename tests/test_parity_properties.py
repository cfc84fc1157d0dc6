"""Property-based parity: over random small configurations (1-3 layers, heads dividing the width,
bias on and off, any sequence length up to block_size, batch 1-4), torch and jax agree in float64
on the logits, the loss and every gradient, within the suite's float64 tolerances."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from backends.parity import run_parity  # noqa: E402


@st.composite
def small_configs(draw):
    n_head = draw(st.sampled_from([1, 2, 4]))
    block_size = draw(st.integers(1, 16))
    return dict(
        model=dict(
            n_layer=draw(st.integers(1, 3)),
            n_head=n_head,
            n_embd=n_head * draw(st.sampled_from([2, 4, 8])),
            bias=draw(st.booleans()),
            block_size=block_size,
            vocab_size=draw(st.integers(2, 70)),
        ),
        seq_len=draw(st.integers(1, block_size)),
        batch_size=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=small_configs())
def test_float64_forward_and_gradients_agree(case):
    report = run_parity("float64", "tiny", seed=case["seed"], checks=["forward"], model_overrides=case["model"],
                        batch_size=case["batch_size"], seq_len=case["seq_len"], device="cpu")
    assert [r.quantity for r in report.rows] == ["logits", "loss", "grads"]
    assert report.passed, f"{case}\n{report.format_table()}"
