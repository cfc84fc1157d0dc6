"""Every bad input and fault of issue 10, in one table: exit status 2, exactly one line on
stderr, no traceback, no warning, and every file that was in the working folder before
the command still has the same bytes (SHA-256) after it.

Each row builds its inputs in a fresh working folder from two shared fixtures (a tiny
trained run and a tiny nanoGPT checkpoint), then calls the command's ``main(argv)`` in
this process; one subprocess checks that torch's own warnings never reach the terminal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from backends import cli
from benchmarks import run as bench_run
from common.checkpoint import FILENAME, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backend", "torch", "--preset", "tiny", "--no-progress", "--device=cpu"]
SHORT = ["--max_iters=2", "--eval_interval=1", "--lr_decay_iters=2", "--warmup_iters=0"]
CHARS = list("\n !,.abcdefg")
NANOGPT_ARGS = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=True, vocab_size=len(CHARS), dropout=0.0)


# -- fixtures: one tiny run, one tiny nanoGPT checkpoint -------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shakespeare_path) -> Path:
    out = tmp_path_factory.mktemp("fixture") / "run"
    assert cli.main(["train", *TINY, *SHORT, "--data", str(shakespeare_path), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def nanogpt_ckpt(tmp_path_factory) -> dict:
    import torch

    from backends.torch.model import GPT
    from common.config import ModelConfig

    state = GPT(ModelConfig(**NANOGPT_ARGS)).state_dict()
    return {"model": {k: v.clone() for k, v in state.items()}, "model_args": dict(NANOGPT_ARGS), "iter_num": 5,
            "best_val_loss": torch.tensor(2.0)}


class Ctx:
    """What a row's setup may use: the working folder and the fixtures."""

    def __init__(self, work: Path, run_dir: Path, nanogpt: dict, data: Path):
        self.work, self._run, self._nanogpt, self.data = work, run_dir, nanogpt, data

    def run(self, name: str = "run") -> Path:
        """A copy of the fixture run in the working folder."""
        dest = self.work / name
        shutil.copytree(self._run, dest)
        return dest

    def file(self, name: str, content: bytes = b"precious\n") -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def files(self, *names: str) -> Path:
        """Files of someone else's in a folder of the working folder; returns the folder."""
        return [self.file(n) for n in names][0].parent

    def ckpt_with_meta(self, edit: Callable[[dict], object]) -> Path:
        """The fixture's checkpoint with its JSON metadata replaced by ``edit(meta)`` (or edited in place)."""
        from safetensors.numpy import load, save

        blob = (self._run / "last" / FILENAME).read_bytes()
        header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
        meta = json.loads(header["__metadata__"]["microgpt"])
        new = edit(meta)
        meta = meta if new is None else new
        folder = self.work / "ckpt"
        folder.mkdir()
        (folder / FILENAME).write_bytes(save(load(blob), metadata={"microgpt": json.dumps(meta)}))
        return folder

    def nanogpt(self, name: str = "ckpt.pt", **changes) -> Path:
        import torch

        ckpt = dict(self._nanogpt) | changes
        path = self.work / name
        torch.save(ckpt, path)
        return path

    def meta(self, itos, name: str = "meta.pkl") -> Path:
        path = self.work / name
        with open(path, "wb") as f:
            pickle.dump({"vocab_size": len(itos) if hasattr(itos, "__len__") else 0, "itos": itos}, f)
        return path


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(meta: dict) -> None:
        *parents, last = path.split(".")
        d = meta
        for p in parents:
            d = d[p]
        d[last] = value
    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda meta: meta.pop(key) and None


ITOS = dict(enumerate(CHARS))


def _sample(ckpt_edit, *extra) -> Callable[[Ctx], list]:
    return lambda c: ["sample", "--checkpoint", c.ckpt_with_meta(ckpt_edit), "--max-new-tokens", 3, *extra]


def _convert(c: Ctx, ckpt: Path | None = None, meta: Path | None = None, out: str = "converted") -> list:
    return ["convert", "--from-nanogpt", ckpt or c.nanogpt(), "--meta", meta or c.meta(ITOS), "--out", c.work / out]


def _train(c: Ctx, *extra) -> list:
    return ["train", *TINY, *SHORT, "--data", c.data, *extra]


def _bench(*extra) -> list:
    return ["bench", "--preset", "tiny", "--repeats", "1", "--quiet", *extra]


# -- the table: name -> (argv from the working folder, words the one line must hold, words it must not) --

CASES: dict[str, tuple[Callable[[Ctx], list], tuple[str, ...], tuple[str, ...]]] = {
    # data that would be lost or replaced
    "train into a non-empty folder that is not a run": (
        lambda c: _train(c, "--out", c.files("mine/metrics.csv", "mine/loss.png")),
        ("not a MicroGPT run", "metrics.csv"), ()),
    "train over an earlier run without --resume": (
        lambda c: _train(c, "--out", c.run()), ("already holds a MicroGPT run", "--resume", "--overwrite"), ()),
    "train with --resume and --overwrite": (
        lambda c: _train(c, "--out", c.run(), "--resume", "--overwrite"), ("only one",), ()),
    "convert over an existing checkpoint": (
        lambda c: _convert(c, out=str(c.run() / "last")), ("already holds a checkpoint", "--overwrite"), ()),
    "convert into a folder that is not a checkpoint": (
        lambda c: _convert(c, out=str(c.file("notes/a.txt").parent)), ("not a MicroGPT checkpoint",), ()),
    "benchmark --json over an existing file": (
        lambda c: _bench("--json", c.file("bench.json")), ("already exists", "--overwrite"), ()),
    "benchmark --csv over an existing file": (
        lambda c: _bench("--csv", c.file("bench.csv")), ("already exists", "--overwrite"), ()),
    "benchmark --plot over existing plots": (
        lambda c: _bench("--plot", c.file("plots/step_time.png").parent), ("step_time.png", "--overwrite"), ()),
    "benchmark --profile over existing traces": (
        lambda c: _bench("--backend", "torch", "--profile", c.file("prof/torch/trace.json").parent.parent),
        ("already holds traces", "--overwrite"), ()),
    "benchmark --json and --csv the same file": (
        lambda c: _bench("--json", c.work / "x.out", "--csv", c.work / "x.out"), ("same file",), ()),
    # output locations that cannot be written: refused before any work
    "train --out is a regular file": (lambda c: _train(c, "--out", c.file("afile")), ("is a file",), ()),
    "train --out under a regular file": (lambda c: _train(c, "--out", c.file("afile") / "sub"), ("is a file",), ()),
    "train --out unwritable": (lambda c: _train(c, "--out", "/proc/microgpt-nowhere"), ("cannot write",), ()),
    "convert --out unwritable": (lambda c: _convert(c, out="/proc/microgpt-nowhere"), ("cannot write",), ()),
    "benchmark --plot is a regular file": (lambda c: _bench("--plot", c.file("plot.png")), ("is a file",), ()),
    "benchmark --json unwritable": (lambda c: _bench("--json", "/proc/microgpt-nowhere/b.json"), ("cannot write",), ()),
    "benchmark --csv under a regular file": (lambda c: _bench("--csv", c.file("afile") / "b.csv"), ("is a file",), ()),
    "benchmark --json is a folder": (lambda c: _bench("--json", c.file("d/x").parent), ("is a folder",), ()),
    "benchmark --profile unwritable": (lambda c: _bench("--profile", "/proc/microgpt-nowhere"), ("cannot write",), ()),
    # checkpoint metadata: valid JSON of the wrong shape
    "metadata is a list": (_sample(lambda m: [m]), ("metadata is a list",), ()),
    "step is a string": (_sample(_set("step", "3")), ("step is '3'",), ()),
    "step is negative": (_sample(_set("step", -1)), ("step is -1",), ()),
    "tokenizer is a list": (_sample(_set("tokenizer", ["a", "b"])), ("tokenizer is a list",), ()),
    "tokenizer chars repeat": (_sample(_set("tokenizer.chars", ["a"] * 65)), ("'a' twice",), ()),
    "tokenizer char of two letters": (_sample(_set("tokenizer.chars", ["ab"] * 65)), ("tokenizer.chars holds 'ab'",), ()),
    "extra is a list": (_sample(_set("extra", [1])), ("extra is a list",), ()),
    "best_val_loss is a string": (_sample(_set("best_val_loss", "low")), ("best_val_loss is 'low'",), ()),
    "sampler_state is a list": (_sample(_set("sampler_state", [1, 2])), ("sampler_state is a list",), ()),
    "sampler_state of another generator": (_sample(_set("sampler_state.bit_generator", "MT19937")),
                                           ("sampler_state",), ()),
    "history is an object": (_sample(_set("extra.history", {"iter": 1})), ("extra.history is an object",), ()),
    "history row is a number": (_sample(_set("extra.history", [1])), ("extra.history[0] is an integer",), ()),
    "history row's iter is a string": (_sample(_set("extra.history", [{"iter": "1"}])), ("extra.history[0].iter",), ()),
    "history loss is a string": (_sample(_set("extra.history", [{"iter": 1, "loss": "x"}])),
                                 ("extra.history[0].loss",), ()),
    "model_config is a list": (_sample(_set("model_config", [])), ("model_config is a list",), ()),
    "model_config n_layer 0": (_sample(_set("model_config.n_layer", 0)), ("model_config: n_layer",), ("--n_layer",)),
    "train_config has a string": (_sample(_set("train_config.batch_size", "4")), ("train_config: batch_size",), ()),
    "format version missing": (_sample(_drop("format_version")), ("no format_version",), ("matching", "release")),
    "format version newer": (_sample(_set("format_version", 99)), ("format version 99", "upgrade"), ("matching",)),
    "format version a string": (_sample(_set("format_version", "1")), ("format_version is '1'",), ()),
    "resume from bad history": (
        lambda c: ["train", *TINY, "--data", c.data, "--resume", "--out", _resume_dir(c, _set("extra.history", "x"))],
        ("extra.history is a string",), ()),
    # sample's numbers
    "sample --temperature nan": (lambda c: ["sample", "--checkpoint", c.run(), "--temperature", "nan"],
                                 ("--temperature", "finite"), ()),
    "sample --temperature inf": (lambda c: ["sample", "--checkpoint", c.run(), "--temperature", "inf"],
                                 ("--temperature",), ()),
    "sample --temperature negative": (lambda c: ["sample", "--checkpoint", c.run(), "--temperature", "-1"],
                                      ("--temperature",), ()),
    "sample --num-samples -1": (lambda c: ["sample", "--checkpoint", c.run(), "--num-samples", "-1"],
                                ("--num-samples must be >= 1",), ()),
    "sample --num-samples 0": (lambda c: ["sample", "--checkpoint", c.run(), "--num-samples", "0"],
                               ("--num-samples must be >= 1",), ()),
    "sample --top-k 0": (lambda c: ["sample", "--checkpoint", c.run(), "--top-k", "0"], ("--top-k",), ()),
    "sample --max-new-tokens -1": (lambda c: ["sample", "--checkpoint", c.run(), "--max-new-tokens", "-1"],
                                   ("--max-new-tokens",), ()),
    "sample --top-k 0 before the checkpoint is read": (
        lambda c: ["sample", "--checkpoint", c.work / "none", "--top-k", "0"], ("--top-k must be >= 1",), ("none",)),
    "sample a vocabulary without a newline": (
        _sample(lambda m: m["tokenizer"].update(chars=["~" if ch == "\n" else ch for ch in m["tokenizer"]["chars"]])),
        ("--prompt", "no newline"), ()),
    # convert
    "itos ids not 0..n-1": (lambda c: _convert(c, meta=c.meta({i + 1: ch for i, ch in enumerate(CHARS)})),
                            ("not 0..",), ()),
    "itos ids are strings": (lambda c: _convert(c, meta=c.meta({str(i): ch for i, ch in enumerate(CHARS)})),
                             ("not 0..",), ()),
    "itos multi-character entry": (lambda c: _convert(c, meta=c.meta(ITOS | {0: "ab"})), ("not one character",), ()),
    "itos entry None": (lambda c: _convert(c, meta=c.meta(ITOS | {0: None})), ("to None, not one character",), ()),
    "itos duplicate entries": (lambda c: _convert(c, meta=c.meta(ITOS | {0: "a"})), ("two ids",), ()),
    "itos is a list": (lambda c: _convert(c, meta=c.meta(CHARS)), ("no character vocabulary",), ()),
    "--meta is a folder": (lambda c: _convert(c, meta=c.file("metadir/x").parent), ("is a folder",), ()),
    "--from-nanogpt is a folder": (lambda c: _convert(c, ckpt=c.file("ckdir/x").parent), ("is a folder",), ()),
    "ckpt model is a list": (lambda c: _convert(c, ckpt=c.nanogpt(model=[1, 2])), ("'model' entry is a list",), ()),
    "ckpt model_args is a list": (lambda c: _convert(c, ckpt=c.nanogpt(model_args=[1])),
                                  ("'model_args' entry is a list",), ()),
    "ckpt model_args of the wrong type": (
        lambda c: _convert(c, ckpt=c.nanogpt(model_args=NANOGPT_ARGS | {"n_layer": "1"})),
        ("model_args: n_layer",), ("--n_layer",)),
    "ckpt holding a class": (lambda c: _convert(c, ckpt=c.nanogpt(payload=Fraction(1, 3))),
                             ("fractions.Fraction", "weights_only"), ()),
    "raw pickle holding a class": (
        lambda c: _convert(c, ckpt=c.file("raw.pt", pickle.dumps({"model": {}, "x": Fraction(1, 3)}))),
        ("fractions.Fraction", "weights_only"), ()),
    "ckpt with a NaN weight": (
        lambda c: _convert(c, ckpt=c.nanogpt(model={k: (v * float("nan") if k == "transformer.wpe.weight" else v)
                                                    for k, v in c._nanogpt["model"].items()})),
        ("holds non-finite weights (transformer.wpe.weight)", "before the training diverged"), ()),
    "ckpt that is not a pickle": (lambda c: _convert(c, ckpt=c.file("junk.pt", b"not a checkpoint")),
                                  ("not a checkpoint",), ()),
    # flags
    "train --frobnicate": (lambda c: _train(c, "--out", c.work / "o", "--frobnicate"),
                           ("unknown option --frobnicate", "--backend", "--resume", "n_layer"), ("needs a value",)),
    "benchmark --frobnicate": (lambda c: _bench("--frobnicate"),
                               ("unknown option --frobnicate", "--json", "--task"), ("needs a value",)),
    "benchmark --sample-tokens without --task sample": (lambda c: _bench("--sample-tokens", "5"), ("--task sample",), ()),
    "benchmark --task sample --plot": (lambda c: _bench("--task", "sample", "--plot", c.work / "p"),
                                       ("--plot is for the training benchmark",), ()),
    "benchmark --task sample --sample-tokens 0": (lambda c: _bench("--task", "sample", "--sample-tokens", "0"),
                                                  ("--sample-tokens must be >= 1",), ()),
    "parity --checks ''": (lambda c: ["parity", "--checks", ""], ("no check was named",), ()),
    "parity --checks ,": (lambda c: ["parity", "--checks", ","], ("no check was named",), ()),
    "parity --json over an existing file": (lambda c: ["parity", "--json", str(c.file("parity.json"))],
                                            ("already exists", "--overwrite"), ()),
    "parity --json unwritable": (lambda c: ["parity", "--json", "/proc/microgpt-nowhere/p.json"], ("cannot write",), ()),
    "eval --json over an existing file": (lambda c: ["eval", "--checkpoint", str(c.work / "none"), "--json",
                                                     str(c.file("eval.json"))], ("already exists", "--overwrite"), ()),
    "parity --json is a folder": (lambda c: ["parity", "--json", str(c.file("pd/x").parent)], ("is a folder",), ()),
    # issue 19: requests that compare nothing or cannot fit
    "parity of a backend against itself": (lambda c: ["parity", "--candidate", "torch"],
                                           ("--candidate torch is also the --reference",), ()),
    "sample more text than memory holds": (
        lambda c: ["sample", "--checkpoint", c.run(), "--max-new-tokens", str(10 ** 13)],
        ("--max-new-tokens 10,000,000,000,000", "memory", "at most"), ()),
}


def _resume_dir(c: Ctx, edit) -> Path:
    """A run folder whose last/ checkpoint has edited metadata."""
    folder = c.ckpt_with_meta(edit)
    run = c.work / "badrun"
    run.mkdir()
    folder.rename(run / "last")
    return run


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, monkeypatch, capsys, run_dir, nanogpt_ckpt, shakespeare_path):
    make_argv, words, not_words = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = [str(a) for a in make_argv(Ctx(work, run_dir, nanogpt_ckpt, shakespeare_path))]
    before = _digests(work)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = bench_run.main(argv[1:]) if argv[0] == "bench" else cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    for w in not_words:
        assert w not in err, (w, err)
    assert not [str(w.message) for w in caught], "a warning reached the user"
    assert _digests(work) == before, "a pre-existing file changed"
    assert not (work / "converted").exists() and not (work / "o").exists()


def test_warnings_of_torch_never_reach_the_terminal(tmp_path, nanogpt_ckpt):
    """A raw pickle makes torch warn about its protocol: in a real process, still one line."""
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": {}, "model_args": Fraction(1, 3)}, protocol=4))
    proc = subprocess.run([sys.executable, "-m", "backends.cli", "convert", "--from-nanogpt", str(raw),
                           "--vocab-from", str(raw), "--out", str(tmp_path / "x")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "fractions.Fraction" in proc.stderr and not (tmp_path / "x").exists()


# -- faults: divergence and kills --------------------------------------------------------------------

def test_divergence_keeps_the_last_finite_checkpoint(tmp_path, capsys, shakespeare_path):
    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--data", str(shakespeare_path), "--out", str(out), "--learning_rate=1e6",
                     "--min_lr=1e5", "--eval_interval=1", "--max_iters=30", "--lr_decay_iters=30", "--warmup_iters=0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "training stopped" in err and "--grad_clip=1.0" not in err  # grad_clip is already 1.0
    ckpt = load_checkpoint(out / "last")  # loading checks every weight is finite
    assert f"(step {ckpt.step})" in err
    assert all(np.isfinite(v).all() for v in ckpt.weights.values())
    with open(out / "metrics.csv") as f:  # the history up to the checkpoint: finite
        rows = [r for r in csv.DictReader(f) if r["iter"] and int(r["iter"]) <= ckpt.step]
    assert rows and all(not r["val_loss"] or np.isfinite(float(r["val_loss"])) for r in rows)


def test_stale_temporaries_are_removed_and_the_run_continues(tmp_path, capsys, run_dir, shakespeare_path):
    """A kill inside a save leaves `.checkpoint.safetensors.*.tmp`; the next start in the folder removes it."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    stale = [run / "last" / f".{FILENAME}.x1y2.tmp", run / "best" / ".tokenizer.json.ab.tmp", run / ".metrics.csv.q.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    step = load_checkpoint(run / "last").step
    code = cli.main(["train", *TINY, "--data", str(shakespeare_path), "--out", str(run), "--resume",
                     f"--max_iters={step + 1}", f"--lr_decay_iters={step + 1}"])
    assert code == 0, capsys.readouterr().err
    assert not any(p.exists() for p in stale)
    assert load_checkpoint(run / "last").step == step + 1


def test_overwrite_starts_over(tmp_path, capsys, run_dir, shakespeare_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    code = cli.main(["train", *TINY, "--data", str(shakespeare_path), "--out", str(run), "--overwrite",
                     "--max_iters=1", "--lr_decay_iters=1", "--warmup_iters=0"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(run / "last").step == 1
