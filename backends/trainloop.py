"""The training loop behind ``microgpt train``, the same for every backend.

It drives a backend's ``Trainer`` with batches from the shared numpy sampler:
``estimate_loss()`` every ``eval_interval`` steps, the last and the best checkpoint,
exact resume (same batches, same RNG), a progress bar, Ctrl-C or SIGTERM that saves before it
exits (``common/signals.py``), and the metrics as CSV and the loss curves as a PNG
(``backends/metrics.py``). The run holds the lock of its folders (``common/lock.py``) and a
disk that fills up stops it in one line with the last checkpoint kept (``common/writes.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import BACKENDS, load_backend, process
from backends import metrics as metrics_mod
from common import config as config_mod
from common import generation, lock, outputs, signals
from common.batches import BatchSampler
from common.checkpoint import Checkpoint, FILENAME, TOKENIZER_FILENAME, load_checkpoint, nonfinite, save_checkpoint
from common.corpus import load_corpus, not_cached, read_text, resolve_corpus
from common.errors import UserError
from common.parallel import SINGLE_DEVICE
from common.schedule import get_lr
from common.tokenizer import CharTokenizer
from common.writes import WriteError

LAST, BEST = "last", "best"
EVAL_SEED_OFFSET = 1  # evaluation batches come from their own generator: seed + 1
METRICS_FIELDS = metrics_mod.METRICS_FIELDS


class TrainingDiverged(UserError):
    pass


@dataclass
class RunResult:
    out_dir: Path
    step: int
    best_val_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    signal: int | None = None  # the stop signal that interrupted it (SIGINT, SIGTERM)
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


def run_folders(out_dir: Path) -> list[Path]:
    """The folders a run writes into, each locked while it runs (common/lock.py)."""
    return [out_dir, out_dir / LAST, out_dir / BEST]


def train(backend: str, preset: str, overrides: dict[str, Any], data: str | None, out_dir: str | Path,
          resume: bool = False, progress: bool = True, overwrite: bool = False) -> RunResult:
    out_dir = Path(out_dir)
    for folder in run_folders(out_dir):  # a run in progress there: one line naming it, before anything
        lock.check_free(folder)
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
    module = load_backend(backend)
    with process.settings(module, train_config):
        return _train(module, backend, preset, model_config, train_config, tokenizer, corpus, corpus_path,
                      out_dir, resumed, progress)


def _train(module, backend, preset, model_config, train_config, tokenizer, corpus, corpus_path, out_dir,
           resumed, progress) -> RunResult:
    trainer = module.Trainer(model_config, train_config, resumed.weights if resumed else None)
    main = trainer.parallel.is_main  # many devices: rank 0 alone shows progress and writes files
    with contextlib.ExitStack() as held:
        if main:  # the folders are this run's until it exits: a second run there is refused, naming it
            held.enter_context(lock.hold_all(run_folders(out_dir)))
            for folder in (out_dir / LAST, out_dir / BEST):
                outputs.remove_stale_temporaries(folder, (FILENAME, TOKENIZER_FILENAME))  # left by a kill
        return _loop(module, backend, preset, model_config, train_config, tokenizer, corpus, corpus_path,
                     out_dir, resumed, progress, trainer, main)


def _loop(module, backend, preset, model_config, train_config, tokenizer, corpus, corpus_path, out_dir,
          resumed, progress, trainer, main) -> RunResult:
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
        # the rows up to the checkpoint: from metrics.csv (older checkpoints carried them in their header)
        history = (list(resumed.extra["history"]) if "history" in resumed.extra
                   else metrics_mod.read(out_dir, resumed.step) if main else [])
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
            backend=backend, extra={"data": "shakespeare" if not_cached(corpus_path) else str(corpus_path.resolve())},
        )  # the history is in metrics.csv, not here: a header's size must not grow with the run

    saved = {"step": resumed.step if resumed is not None else None}

    def kept() -> str:
        return (f"the last good checkpoint (step {saved['step']}) in {str(out_dir / LAST)!r} is kept"
                if saved["step"] is not None else "no checkpoint was written")

    def diverged(what: str, step: int) -> TrainingDiverged:
        fix = "lower --learning_rate" + (" or set --grad_clip=1.0" if train_config.grad_clip == 0 else "")
        return TrainingDiverged(f"{what} at step {step}; training stopped and {kept()}; {fix}")

    def save(step: int, best: bool, losses: dict[str, float] | None = None) -> None:
        """Never a checkpoint whose loss, weights or optimizer state are not finite."""
        ckpt = checkpoint(step)  # on every rank: fsdp gathers the shards
        if losses is not None and not all(math.isfinite(v) for v in losses.values()):
            raise diverged(f"the estimated loss became {', '.join(f'{k} {v}' for k, v in losses.items())}", step)
        bad = nonfinite(ckpt.weights) or nonfinite(ckpt.optimizer or {})
        if bad:
            raise diverged(f"the {'weights' if bad[0] in ckpt.weights else 'optimizer state'} became "
                           f"non-finite ({', '.join(bad[:2])})", step)
        if main:  # rank 0 writes, once: the metrics first, so that they always reach as far as last/
            try:
                log.flush()
                save_checkpoint(out_dir / LAST, ckpt)
                saved["step"] = step  # what --resume continues from
                if best:
                    save_checkpoint(out_dir / BEST, ckpt)
            except WriteError as exc:  # a full disk: the atomic save kept the previous checkpoint
                raise WriteError(f"{exc.problem}; training stopped at step {step} and {kept()}; {exc.advice}; "
                                 f"continue the run with --resume") from None
        saved["step"] = step

    log = metrics_mod.MetricsLog(out_dir, history) if main else None
    stop = signals.StopRequest()  # Ctrl-C and SIGTERM: stop after this step, save, write the metrics
    tokens_per_iter = train_config.batch_size * model_config.block_size
    bar = _progress(train_config.max_iters, trainer.iter_num, f"{backend} {preset}", progress and main)
    say = bar.write if main else (lambda line: None)
    start = time.perf_counter()
    it = trainer.iter_num
    try:
        with signals.handled(stop):
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
                stop.requested = trainer.parallel.any_rank(stop.requested)  # every rank stops at the same step
                if it >= train_config.max_iters or stop.requested:
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
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ms=f"{dt * 1e3:.1f}",
                                tok_s=f"{tokens_per_iter / dt:,.0f}", refresh=False)
            if stop.requested and it < train_config.max_iters:
                save(it, best=False)
                by = f" ({signals.describe(stop.signum)})" if stop.signum is not None else ""
                say(f"interrupted at step {it}{by}: checkpoint saved to {out_dir / LAST}; continue with --resume")
        # from here a stop signal ends the command at once (run_command): the run is saved already
        trainer.parallel.close()  # every rank: the process group ends here, in order; rank 0 goes on alone
        seconds = time.perf_counter() - start
        exact = None
        if main and not stop.requested and (out_dir / BEST / FILENAME).is_file():
            from backends.evaluate import record_best

            exact = record_best(module, out_dir / BEST, corpus.val, progress)
        if main:
            log.finish(exact)
    finally:
        bar.close()
        if main:  # whatever stopped the run, the rows so far are kept (a resume keeps those up to last/)
            with contextlib.suppress(WriteError):
                log.flush()
    return RunResult(out_dir=out_dir, step=it, best_val_loss=best_val, history=history,
                     interrupted=stop.requested, signal=stop.signum if stop.requested else None,
                     seconds=seconds, exact_val_loss=exact, main=main)


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
    # the text must fit in memory (the same bound each backend's generate applies to its array)
    generation.check_fits(num_samples, len(prompt), max_new_tokens, generation.SAMPLE_BYTES_PER_TOKEN)
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
