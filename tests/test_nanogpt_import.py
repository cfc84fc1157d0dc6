"""``microgpt convert --from-nanogpt`` on a checkpoint written in nanoGPT's format."""

import pickle

import pytest
import torch

from backends.cli import main
from backends.torch import train as tt
from backends.torch.model import GPT
from common.checkpoint import load_checkpoint
from common.config import ModelConfig

ARGS = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True, vocab_size=12, dropout=0.0)
CHARS = list("\n !,.abcdefg")


class NotData:  # a class in a pickle: exactly what a weights-only load must refuse
    pass


def _nanogpt_checkpoint(path, compiled=True, extra=None):
    model = GPT(ModelConfig(**ARGS))
    state = model.state_dict()  # includes the tied lm_head.weight, like nanoGPT's
    # nanoGPT without flash attention also saves the causal mask as a buffer named attn.bias
    for i in range(ARGS["n_layer"]):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(8, 8)).view(1, 1, 8, 8)
    if compiled:  # torch.compile'd models save every key with this prefix
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    ckpt = {"model": state, "optimizer": {}, "model_args": ARGS, "iter_num": 250,
            "best_val_loss": torch.tensor(1.5), "config": {"dataset": "shakespeare_char"}}
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return model


def _meta(path):
    with open(path, "wb") as f:
        pickle.dump({"vocab_size": len(CHARS), "itos": dict(enumerate(CHARS)), "stoi": {c: i for i, c in enumerate(CHARS)}}, f)


@pytest.mark.parametrize("compiled", [True, False])
def test_convert_and_sample(tmp_path, capsys, compiled):
    model = _nanogpt_checkpoint(tmp_path / "ckpt.pt", compiled)
    _meta(tmp_path / "meta.pkl")
    assert main(["convert", "--from-nanogpt", str(tmp_path / "ckpt.pt"), "--meta", str(tmp_path / "meta.pkl"),
                 "--out", str(tmp_path / "ours")]) == 0
    ckpt = load_checkpoint(tmp_path / "ours")
    assert ckpt.step == 250 and ckpt.best_val_loss == 1.5 and ckpt.tokenizer.chars == CHARS
    ours = tt.create_model(ckpt.model_config, ckpt.weights).eval()
    x = torch.randint(0, 12, (2, 8))
    with torch.no_grad():
        assert torch.equal(ours(x)[0], model.eval()(x)[0])
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "ours"), "--backend", "torch", "--prompt", "abc",
                 "--max-new-tokens", "10", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("abc")


def test_refuses_pickled_objects(tmp_path, capsys):
    _nanogpt_checkpoint(tmp_path / "evil.pt", extra={"payload": NotData()})
    code = main(["convert", "--from-nanogpt", str(tmp_path / "evil.pt"), "--vocab-from", __file__,
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "weights_only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"itos": NotData()}, f)
    _nanogpt_checkpoint(tmp_path / "ok.pt")
    code = main(["convert", "--from-nanogpt", str(tmp_path / "ok.pt"), "--meta", str(tmp_path / "meta.pkl"),
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "refusing to load" in capsys.readouterr().err


def test_vocabulary_must_match(tmp_path, capsys):
    _nanogpt_checkpoint(tmp_path / "ckpt.pt")
    text = tmp_path / "text.txt"
    text.write_text("only five chars: abcde", encoding="utf-8")
    code = main(["convert", "--from-nanogpt", str(tmp_path / "ckpt.pt"), "--vocab-from", str(text),
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "vocab_size 12" in capsys.readouterr().err
