import pytest

from common.config import ModelConfig, PRESETS, TrainConfig, build_configs, parse_overrides
from common.errors import UserError


def test_presets_match_the_issue():
    m, t = build_configs("baby")
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert (t.batch_size, t.max_iters, t.learning_rate) == (12, 2000, 1e-3)
    m, t = build_configs("shakespeare-char")
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (6, 6, 384, 256, 0.2)
    assert (t.batch_size, t.learning_rate, t.min_lr, t.lr_decay_iters, t.max_iters) == (64, 1e-3, 1e-4, 5000, 5000)
    assert (t.warmup_iters, t.beta2, t.weight_decay, t.grad_clip) == (100, 0.99, 0.1, 1.0)
    assert set(PRESETS) >= {"tiny", "baby", "shakespeare-char"}


def test_overrides_are_typed():
    assert parse_overrides(["--n_layer=2", "--dropout", "0.1", "--compile=true", "--device=cpu"]) == {
        "n_layer": 2, "dropout": 0.1, "compile": True, "device": "cpu"}
    assert parse_overrides(["--tf32", "--bias=false", "--compile"]) == {"tf32": True, "bias": False, "compile": True}
    m, t = build_configs("tiny", {"n_layer": 3, "learning_rate": 3e-4})
    assert m.n_layer == 3 and t.learning_rate == 3e-4


@pytest.mark.parametrize("args, fragment", [
    (["--n_layers=2"], "valid keys:"),
    (["--n_layer=two"], "expects a int"),
    (["--compile=maybe"], "expects a bool"),
    (["n_layer=2"], "--key=value"),
    (["--n_layer"], "needs a value"),
])
def test_bad_overrides(args, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_overrides(args)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(n_embd=30, n_head=4), "not divisible"),
    (dict(n_layer=0), "positive"),
    (dict(block_size=-1), "positive"),
    (dict(dropout=1.5), "dropout"),
    (dict(n_layer=2.5), "type int"),
])
def test_model_config_validates(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batch_size=0), "positive"),
    (dict(learning_rate=-1.0), ">= 0"),
    (dict(min_lr=1.0, learning_rate=1e-3), "exceeds"),
    (dict(device="tpu"), "device"),
    (dict(beta2=1.0), "beta2"),
    (dict(warmup_iters=50, lr_decay_iters=10), "warm up"),
])
def test_train_config_validates(kwargs, fragment):
    with pytest.raises(UserError, match=fragment):
        TrainConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(UserError, match="tiny, baby, shakespeare-char"):
        build_configs("huge")
