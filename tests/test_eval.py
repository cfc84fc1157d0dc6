"""``microgpt eval``: every token scored exactly once, the loss computed by hand on a 3-window
split, the same numbers from both backends, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from backends.cli import main
from common.checkpoint import Checkpoint, save_checkpoint
from common.config import build_configs
from common.exact_loss import batches, plan_windows, token_nll
from common.params import init_weights
from common.tokenizer import CharTokenizer

TEXT_CHARS = "abcdefgh \n"


def _text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(TEXT_CHARS), size=n))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint (block_size 16) with non-trivial weights, and a 300-character corpus whose
    val split (the last 30 characters) is 3 windows: targets 1-16, 17-24, 25-29."""
    root = tmp_path_factory.mktemp("eval")
    corpus = root / "corpus.txt"
    corpus.write_text(_text(300), encoding="utf-8")
    tokenizer = CharTokenizer.from_text(TEXT_CHARS)
    mc, tc = build_configs("tiny", {"device": "cpu"}, vocab_size=tokenizer.vocab_size)
    rng = np.random.default_rng(1)
    weights = {k: (v + rng.normal(0, 0.3, v.shape)).astype(np.float32) for k, v in init_weights(mc, 0).items()}
    save_checkpoint(root / "ckpt", Checkpoint(mc, tc, tokenizer, weights, backend="torch",
                                              extra={"data": str(corpus)}))
    return root / "ckpt", corpus, tokenizer, mc, tc, weights


def test_plan_by_hand():
    p = plan_windows(17, 8, 4)  # 16 targets: windows end at 8, 12, 16
    assert p.starts.tolist() == [0, 4, 8] and p.scored.tolist() == [8, 4, 4] and p.length == 8
    p = plan_windows(16, 8, 4)  # 15 targets: the last window ends at the end, scoring only 3 new ones
    assert p.starts.tolist() == [0, 4, 7] and p.scored.tolist() == [8, 4, 3]
    p = plan_windows(5, 8)  # shorter than a window: one window of the whole split
    assert p.starts.tolist() == [0] and p.scored.tolist() == [4] and p.length == 4
    assert plan_windows(17, 8, 8).starts.tolist() == [0, 8]


@pytest.mark.parametrize("n,block,stride,batch", [(30, 16, 8, 2), (101, 8, 3, 4), (9, 8, 1, 3), (64, 8, 8, 5)])
def test_every_target_scored_exactly_once(n, block, stride, batch):
    tokens = np.arange(n)
    seen = []
    for x, y, mask in batches(tokens, plan_windows(n, block, stride), batch):
        assert x.shape == y.shape == mask.shape == (batch, min(block, n - 1))
        assert (y == x + 1).all()  # each target is the next token
        seen += y[mask].tolist()
    assert sorted(seen) == list(range(1, n))


def test_token_nll_is_the_cross_entropy():
    logits = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    expected = [math.log(1 + math.e + math.e ** 2) - 1.0, math.log(math.e ** 3 + math.e ** -1 + math.e ** 0.5) - 3.0]
    np.testing.assert_allclose(token_nll(logits, np.array([1, 0])), expected, rtol=1e-14)


def test_hand_computed_loss_on_three_windows(setup, capsys):
    pytest.importorskip("torch")
    from backends.torch.train import Trainer

    ckpt, corpus, tokenizer, mc, tc, weights = setup
    val = tokenizer.encode(corpus.read_text(encoding="utf-8"))[270:]
    assert len(val) == 30
    trainer = Trainer(mc, tc, weights)
    # by hand: target j is predicted from its window's tokens before it; the windows start at 0, 8, 13
    nll = []
    for j in range(1, 30):
        start = 0 if j <= 16 else 8 if j <= 24 else 13
        logits = trainer.logits(val[None, start:j])[0, -1].astype(np.float64)
        nll.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[val[j]])
    by_hand = float(np.mean(nll))
    out = ckpt.parent / "val.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--backend", "torch", "--batch-size", "2",
                 "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["splits"]["val"]
    assert (result["tokens"], result["windows"], result["stride"]) == (29, 3, 8)
    assert abs(result["loss"] - by_hand) < 1e-6
    assert abs(result["bits_per_char"] - by_hand / math.log(2)) < 1e-6
    assert abs(result["perplexity"] - math.exp(by_hand)) < 1e-5
    assert "val: loss" in capsys.readouterr().out


def test_both_backends_give_the_same_numbers(setup):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    from backends.evaluate import evaluate

    ckpt = setup[0]
    results = [evaluate(ckpt, "both", backend=b, batch_size=8, device="cpu", progress=False)["splits"]
               for b in ("torch", "jax")]
    for split in ("train", "val"):
        t, j = results[0][split], results[1][split]
        assert t["tokens"] == j["tokens"] == (269 if split == "train" else 29)
        assert abs(t["loss"] - j["loss"]) < 1e-5, (split, t["loss"], j["loss"])
        assert t["loss"] < math.log(len(TEXT_CHARS)) + 2  # a real number, not a padding artefact


@pytest.mark.parametrize("case", ["no checkpoint", "foreign characters", "unknown split", "batch size 0",
                                  "stride too large", "unknown backend"])
def test_bad_input_is_one_line_and_exit_2(case, setup, tmp_path, capsys):
    ckpt = setup[0]
    args = {"no checkpoint": ["--checkpoint", str(tmp_path / "nothing")],
            "unknown split": ["--split", "test"], "batch size 0": ["--batch-size", "0"],
            "stride too large": ["--stride", "17"], "unknown backend": ["--backend", "tf"]}.get(case, [])
    if case == "foreign characters":
        foreign = tmp_path / "foreign.txt"
        foreign.write_text(_text(200) + "XYZ", encoding="utf-8")
        args = ["--data", str(foreign)]
    if "--checkpoint" not in args:
        args = ["--checkpoint", str(ckpt)] + args
    assert main(["eval", "--device", "cpu"] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("microgpt: error:"), err
    if case == "foreign characters":
        assert "'X'" in err and "tokenizer" in err


def test_train_records_the_exact_val_loss_of_best(tmp_path, small_corpus, capsys):
    """``microgpt train`` ends with the best checkpoint's exact val loss: printed, in best/'s
    metadata and as the last row of metrics.csv, and equal to what ``microgpt eval`` computes."""
    import csv

    from common.checkpoint import load_checkpoint

    out = tmp_path / "run"
    assert main(["train", "--backend", "torch", "--preset", "tiny", "--data", str(small_corpus), "--out", str(out),
                 "--no-progress", "--device=cpu"]) == 0
    assert "exact val loss of best/" in capsys.readouterr().out
    recorded = load_checkpoint(out / "best").extra["exact_val_loss"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows[-1]["exact_val_loss"] and all(not r["exact_val_loss"] for r in rows[:-1])
    assert float(rows[-1]["exact_val_loss"]) == pytest.approx(recorded["loss"], abs=1e-12)
    assert main(["eval", "--checkpoint", str(out), "--device", "cpu", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["splits"]["val"]["loss"] == pytest.approx(recorded["loss"], abs=1e-9)


def test_write_json_is_atomic_and_a_failed_write_is_one_line(tmp_path):
    """outputs.write_json, behind eval --json and parity --json: indented JSON and a newline, the
    folder made, and an OSError turned into the one-line UserError naming the flag."""
    from common import outputs
    from common.errors import UserError

    path = tmp_path / "sub" / "r.json"
    outputs.write_json(path, {"a": np.float32(1.5)}, default=lambda o: o.item())
    assert path.read_text() == '{\n "a": 1.5\n}\n'
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"^cannot write .*; choose another --json path$"):
        outputs.write_json(blocker / "r.json", {})
    assert blocker.read_text() == "x"
