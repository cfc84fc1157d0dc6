"""The training loop behind ``microgpt train``, the same for every backend.

It drives a backend's ``Trainer`` with batches from the shared numpy sampler:
``estimate_loss()`` every ``eval_interval`` steps, the last and the best checkpoint,
exact resume (same batches, same RNG), a progress bar, Ctrl-C that saves before it
exits, and at the end the metrics as CSV and the loss curves as a PNG.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import BACKENDS, load_backend, process
from common import config as config_mod
from common.batches import BatchSampler
from common import outputs
from common.checkpoint import Checkpoint, FILENAME, TOKENIZER_FILENAME, load_checkpoint, nonfinite, save_checkpoint
from common.corpus import load_corpus, read_text, resolve_corpus
from common.errors import UserError
from common.parallel import SINGLE_DEVICE
from common.schedule import get_lr
from common.tokenizer import CharTokenizer

LAST, BEST = "last", "best"
METRICS_FILES = ("metrics.csv", "loss.png")
EVAL_SEED_OFFSET = 1  # evaluation batches come from their own generator: seed + 1
METRICS_FIELDS = ("iter", "lr", "loss", "train_loss", "val_loss", "ms_per_iter", "tokens_per_s",
                  "exact_val_loss")  # the last: one final row, the best checkpoint's (backends/evaluate.py)


class TrainingDiverged(UserError):
    pass


@dataclass
class RunResult:
    out_dir: Path
    step: int
    best_val_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    exact_val_loss: Any = None  # common.exact_loss.ExactLoss of OUT/best/, when the run finished
    main: bool = True  # rank 0 of a run on many devices (the one that reports)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a training out dir holding ``best/`` or ``last/``."""
    path = Path(path)
    if path.is_file() or (path / FILENAME).is_file():
        return path
    for sub in (BEST, LAST):
        if (path / sub / FILENAME).is_file():
            return path / sub
    return path  # load_checkpoint reports what is missing


def train(backend: str, preset: str, overrides: dict[str, Any], data: str | None, out_dir: str | Path,
          resume: bool = False, progress: bool = True, overwrite: bool = False) -> RunResult:
    out_dir = Path(out_dir)
    resumed: Checkpoint | None = None
    if resume:
        outputs.check_run_dir(out_dir, resume=True, overwrite=overwrite)
        if not (out_dir / LAST / FILENAME).is_file():
            raise UserError(f"--resume: there is no checkpoint in {str(out_dir / LAST)!r}; train without --resume first")
        resumed = load_checkpoint(out_dir / LAST)
        shape_keys = set(overrides) & set(config_mod.model_keys())
        if shape_keys:
            raise UserError(f"--resume keeps the checkpoint's model; drop the override(s) {', '.join(sorted(shape_keys))}")
        data = data or resumed.extra.get("data")

    else:
        config_mod.build_configs(preset, overrides)  # report a bad config before looking for the corpus
    corpus_path = resolve_corpus(data, progress=progress)
    if resumed is not None:
        tokenizer = resumed.tokenizer
        model_config = resumed.model_config
        train_values = config_mod.to_dict(resumed.train_config) | SINGLE_DEVICE | overrides  # devices: this run's
        train_config = config_mod.TrainConfig(**train_values)
    else:
        tokenizer = CharTokenizer.from_text(read_text(corpus_path))
        model_config, train_config = config_mod.build_configs(preset, overrides, vocab_size=tokenizer.vocab_size)
    corpus = load_corpus(corpus_path, tokenizer)
    corpus.check_block_size(model_config.block_size)
    if not resume:  # (a resumed run's folder was checked before its checkpoint was read)
        outputs.check_run_dir(out_dir, overwrite=overwrite)  # before any work: never a late traceback
    for folder, names in ((out_dir, METRICS_FILES), (out_dir / LAST, (FILENAME, TOKENIZER_FILENAME)),
                          (out_dir / BEST, (FILENAME, TOKENIZER_FILENAME))):
        outputs.remove_stale_temporaries(folder, names)  # left by a kill inside an atomic write

    module = load_backend(backend)
    with process.settings(module, train_config):
        return _train(module, backend, preset, model_config, train_config, tokenizer, corpus, corpus_path,
                      out_dir, resumed, progress)


def _train(module, backend, preset, model_config, train_config, tokenizer, corpus, corpus_path, out_dir,
           resumed, progress) -> RunResult:
    trainer = module.Trainer(model_config, train_config, resumed.weights if resumed else None)
    splits = {"train": corpus.train, "val": corpus.val}
    sampler = BatchSampler(splits, train_config.batch_size, model_config.block_size, train_config.seed)
    history: list[dict[str, Any]] = []
    best_val = None
    if resumed is not None:
        if resumed.optimizer is not None:
            trainer.load_optimizer_state(resumed.optimizer)
        if resumed.sampler_state:
            sampler.set_state(resumed.sampler_state)
        if backend in resumed.rng:  # another backend's RNG state means nothing here
            trainer.set_rng_state(resumed.rng[backend])
        history = list(resumed.extra.get("history", []))
        best_val = resumed.best_val_loss
        trainer.iter_num = resumed.step

    def get_eval_batch_fn():
        # the same evaluation batches at every evaluation, independent of the training batches
        eval_sampler = BatchSampler(splits, train_config.batch_size, model_config.block_size,
                                    train_config.seed + EVAL_SEED_OFFSET)
        return eval_sampler.get_batch

    def checkpoint(step: int) -> Checkpoint:
        return Checkpoint(
            model_config=model_config, train_config=train_config, tokenizer=tokenizer,
            weights=trainer.weights(), optimizer=trainer.optimizer_state(), step=step,
            best_val_loss=best_val, sampler_state=sampler.state(), rng={backend: trainer.rng_state()},
            backend=backend, extra={"data": str(corpus_path.resolve()), "history": history},
        )

    saved = {"step": resumed.step if resumed is not None else None}

    def diverged(what: str, step: int) -> TrainingDiverged:
        kept = (f"the last good checkpoint (step {saved['step']}) in {str(out_dir / LAST)!r} is kept"
                if saved["step"] is not None else "no checkpoint was written")
        fix = "lower --learning_rate" + (" or set --grad_clip=1.0" if train_config.grad_clip == 0 else "")
        return TrainingDiverged(f"{what} at step {step}; training stopped and {kept}; {fix}")

    def save(step: int, best: bool, losses: dict[str, float] | None = None) -> None:
        """Never a checkpoint whose loss or weights are not finite."""
        ckpt = checkpoint(step)  # on every rank: fsdp gathers the shards
        if losses is not None and not all(math.isfinite(v) for v in losses.values()):
            raise diverged(f"the estimated loss became {', '.join(f'{k} {v}' for k, v in losses.items())}", step)
        bad = nonfinite(ckpt.weights)
        if bad:
            raise diverged(f"the weights became non-finite ({', '.join(bad[:2])})", step)
        if main:  # rank 0 writes, once
            save_checkpoint(out_dir / LAST, ckpt)
            if best:
                save_checkpoint(out_dir / BEST, ckpt)
        saved["step"] = step

    stop = {"requested": False, "at": 0.0}

    def on_sigint(signum, frame):
        # a second Ctrl-C stops at once; not one within a second of the first: under torchrun a rank gets
        # the terminal's SIGINT and the launcher's forwarded copy of it
        if stop["requested"] and time.monotonic() - stop["at"] > 1.0:
            raise KeyboardInterrupt
        if not stop["requested"]:
            stop["requested"], stop["at"] = True, time.monotonic()

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    tokens_per_iter = train_config.batch_size * model_config.block_size
    main = trainer.parallel.is_main  # many devices: rank 0 alone shows progress and writes files
    bar = _progress(train_config.max_iters, trainer.iter_num, f"{backend} {preset}", progress and main)
    say = bar.write if main else (lambda line: None)
    start = time.perf_counter()
    it = trainer.iter_num
    try:
        while True:
            if it % train_config.eval_interval == 0 or it == train_config.max_iters:
                if not any(row["iter"] == it and row.get("val_loss") is not None for row in history):
                    losses = trainer.estimate_loss(get_eval_batch_fn(), train_config.eval_iters)
                    history.append({"iter": it, "lr": get_lr(it, train_config), "loss": None,
                                    "train_loss": losses["train"], "val_loss": losses["val"],
                                    "ms_per_iter": None, "tokens_per_s": None})
                    say(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                    improved = best_val is None or losses["val"] < best_val
                    if improved and math.isfinite(losses["val"]):
                        best_val = losses["val"]
                    save(it, improved, losses)
            stop["requested"] = trainer.parallel.any_rank(stop["requested"])  # every rank stops at the same step
            if it >= train_config.max_iters or stop["requested"]:
                break
            x, y = sampler.get_batch("train")
            lr = get_lr(it, train_config)
            t0 = time.perf_counter()
            loss = float(trainer.step(x, y))  # the host read waits for the step to finish
            dt = time.perf_counter() - t0
            if not math.isfinite(loss):
                raise diverged(f"the loss became {loss}", it)
            it += 1
            history.append({"iter": it, "lr": lr, "loss": loss, "train_loss": None, "val_loss": None,
                            "ms_per_iter": dt * 1e3, "tokens_per_s": tokens_per_iter / dt})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ms=f"{dt * 1e3:.1f}", tok_s=f"{tokens_per_iter / dt:,.0f}",
                            refresh=False)
        if stop["requested"] and it < train_config.max_iters:
            save(it, best=False)
            say(f"interrupted at step {it}: checkpoint saved to {out_dir / LAST}; continue with --resume")
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous_handler)
    seconds = time.perf_counter() - start
    exact = None
    if main and not stop["requested"] and (out_dir / BEST / FILENAME).is_file():
        from backends.evaluate import record_best

        exact = record_best(module, out_dir / BEST, corpus.val, progress)
    if main:
        write_metrics(out_dir, history, exact)
    return RunResult(out_dir=out_dir, step=it, best_val_loss=best_val, history=history,
                     interrupted=stop["requested"], seconds=seconds, exact_val_loss=exact, main=main)


def write_metrics(out_dir: Path, history: list[dict[str, Any]], exact=None) -> None:
    """``metrics.csv`` (one row per step and per evaluation, and a last row with the best checkpoint's
    exact val loss) and ``loss.png`` (train and val)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.remove_stale_temporaries(out_dir, METRICS_FILES)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS_FIELDS})
    if exact is not None:
        writer.writerow({k: "" for k in METRICS_FIELDS} | {"exact_val_loss": exact.loss})
    outputs.atomic_write_text(out_dir / "metrics.csv", buf.getvalue())  # whole files only, even after a kill
    plot_losses(out_dir / "loss.png", history)


def plot_losses(path: Path, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in history if r.get("loss") is not None]
    evals = [r for r in history if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if steps:
        ax.plot([r["iter"] for r in steps], [r["loss"] for r in steps], lw=0.6, alpha=0.35, label="train (batch)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train (estimate_loss)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val (estimate_loss)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    outputs.save_figure(fig, path)
    plt.close(fig)


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", disable=not enabled, dynamic_ncols=True)


def sample(checkpoint_path: str | Path, backend: str | None, prompt: str, max_new_tokens: int,
           temperature: float, top_k: int | None, seed: int | None, device: str = "auto",
           num_samples: int = 1) -> list[str]:
    # every number in range before the checkpoint is read
    if not math.isfinite(temperature) or temperature < 0:
        raise UserError(f"--temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {num_samples}")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}")
    if max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    ckpt = load_checkpoint(find_checkpoint(checkpoint_path))
    if not prompt:
        raise UserError("--prompt is empty; give at least one character (the default is a newline)")
    if prompt == "\n" and "\n" not in ckpt.tokenizer.stoi:
        raise UserError("this model's vocabulary has no newline, the default prompt; pass --prompt with characters "
                        f"it was trained on, e.g. --prompt {ckpt.tokenizer.chars[0]!r}")
    ids = ckpt.tokenizer.encode(prompt)
    if backend is None:  # by default, the backend that wrote the checkpoint
        backend = ckpt.backend if ckpt.backend in BACKENDS else "torch"
    module = load_backend(backend)
    train_config = config_mod.TrainConfig(**(config_mod.to_dict(ckpt.train_config) | SINGLE_DEVICE | {"device": device}))
    with process.settings(module, train_config):
        trainer = module.Trainer(ckpt.model_config, train_config, ckpt.weights)
        idx = np.tile(ids[None, :], (num_samples, 1))
        out = trainer.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    return [ckpt.tokenizer.decode(row) for row in out]
