import json
import os

import numpy as np
import pytest

from common import checkpoint as ckpt_mod
from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from common.config import ModelConfig, TrainConfig
from common.errors import UserError
from common.params import init_weights, param_layout
from common.tokenizer import CharTokenizer


def _ckpt(step=3, seed=0, n_embd=8):
    cfg = ModelConfig(block_size=8, vocab_size=5, n_layer=1, n_head=2, n_embd=n_embd)
    w = init_weights(cfg, seed)
    opt = {"step": np.asarray(step, dtype=np.int64)}
    for s in param_layout(cfg):
        opt[f"exp_avg/{s.name}"] = np.full(s.shape, 0.5, np.float32)
        opt[f"exp_avg_sq/{s.name}"] = np.full(s.shape, 0.25, np.float32)
    return Checkpoint(model_config=cfg, train_config=TrainConfig(max_iters=10, lr_decay_iters=10, warmup_iters=1),
                      tokenizer=CharTokenizer(list("abcde")), weights=w, optimizer=opt, step=step,
                      best_val_loss=1.5, sampler_state=np.random.PCG64(7).state, rng={"torch": np.arange(4, dtype=np.uint8)},
                      backend="torch", extra={"history": [{"iter": 0}]})


def test_round_trip(tmp_path):
    c = _ckpt()
    save_checkpoint(tmp_path / "c", c)
    d = load_checkpoint(tmp_path / "c")
    assert d.model_config == c.model_config and d.train_config == c.train_config
    assert d.tokenizer.chars == c.tokenizer.chars and d.step == 3 and d.best_val_loss == 1.5
    assert all(np.array_equal(d.weights[k], v) for k, v in c.weights.items())
    assert int(d.optimizer["step"]) == 3 and d.optimizer["step"].shape == ()
    assert np.array_equal(d.rng["torch"], np.arange(4)) and d.sampler_state == np.random.PCG64(7).state
    assert json.loads((tmp_path / "c" / "tokenizer.json").read_text())["chars"] == list("abcde")


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c", _ckpt(step=1))
    before = (tmp_path / "c" / ckpt_mod.FILENAME).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(UserError, match="^cannot write .*simulated power cut"):  # one line (common/writes.py)
        save_checkpoint(tmp_path / "c", _ckpt(step=2, seed=1))
    monkeypatch.undo()
    assert (tmp_path / "c" / ckpt_mod.FILENAME).read_bytes() == before
    assert load_checkpoint(tmp_path / "c").step == 1
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [ckpt_mod.FILENAME, "tokenizer.json"]


def test_missing_truncated_version_and_shapes(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    path = save_checkpoint(tmp_path / "c", _ckpt())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="damaged or truncated"):
        load_checkpoint(tmp_path / "c")
    # another format version
    from safetensors.numpy import load, save
    header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    meta = json.loads(header["__metadata__"]["microgpt"])
    meta["format_version"] = 99
    path.write_bytes(save(load(blob), metadata={"microgpt": json.dumps(meta)}))
    with pytest.raises(UserError, match="format version 99"):
        load_checkpoint(tmp_path / "c")
    # shapes that do not match the config
    meta["format_version"] = ckpt_mod.FORMAT_VERSION
    meta["model_config"]["n_embd"] = 4
    meta["model_config"]["n_head"] = 2
    path.write_bytes(save(load(blob), metadata={"microgpt": json.dumps(meta)}))
    with pytest.raises(UserError, match="does not match its config") as err:
        load_checkpoint(tmp_path / "c")
    assert "transformer.wte.weight" in str(err.value) and "exp_avg/" in str(err.value)


def test_never_unpickles(tmp_path):
    source = (ckpt_mod.__file__, )
    text = open(source[0]).read()
    assert "pickle" not in text.replace("unpickled", "")
