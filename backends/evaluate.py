"""``microgpt eval``: the exact loss of a checkpoint, every token of a split scored once.

The windows, the per-token loss and the summary are framework-free (``common/exact_loss.py``,
where the scheme is described); here a backend's ``Trainer.logits`` runs the model forward in
eval mode without gradients (``torch.no_grad``; a jitted function in JAX), a batch of windows
at a time. ``microgpt train`` calls :func:`exact_loss` on its best checkpoint at the end of a run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from backends import BACKENDS, load_backend, process
from common import outputs
from common.checkpoint import load_checkpoint
from common.corpus import load_corpus, resolve_corpus
from common.errors import UserError
from common.exact_loss import SPLITS, ExactLoss, batches, check_stride, plan_windows, summarize, token_nll
from common.parallel import SINGLE_DEVICE

DEFAULT_BATCH_SIZE = 64  # windows per forward pass
PROGRESS_MIN_BATCHES = 20  # a progress bar only for splits longer than this


def exact_loss(trainer, tokens, *, stride: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = False, desc: str = "eval") -> ExactLoss:
    """The exact loss of ``trainer``'s model on ``tokens`` (one split's token ids)."""
    block_size = trainer.model_config.block_size
    plan = plan_windows(len(tokens), block_size, stride)
    n_batches = -(-len(plan) // batch_size)
    from tqdm import tqdm

    bar = tqdm(total=n_batches, desc=desc, unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=not progress or n_batches < PROGRESS_MIN_BATCHES)
    total = 0.0
    try:
        for x, y, mask in batches(tokens, plan, batch_size):
            logits = trainer.logits(x)  # (B, T, V), eval mode, no gradients
            total += float(token_nll(logits, y)[mask].sum())
            bar.update(1)
    finally:
        bar.close()
    return summarize(total, plan.n_targets, plan, block_size)


def eval_dtype(train_dtype: str) -> str:
    """Exact losses are measured in float32 (float64 for a float64 run), whatever the training
    compute dtype: so that runs on a GPU in bfloat16 and on a CPU compare."""
    return "float64" if train_dtype == "float64" else "float32"


def evaluate(checkpoint: str | Path, split: str = "val", data: str | None = None, backend: str | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto", stride: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """``microgpt eval``: the exact loss of a checkpoint on one split or both, as a dict."""
    from backends.trainloop import find_checkpoint

    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if backend is not None and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    path = find_checkpoint(checkpoint)
    if not Path(path).exists():
        raise UserError(f"there is no checkpoint at {str(checkpoint)!r}; pass a checkpoint directory or a "
                        "training --out directory (holding best/ or last/)")
    ckpt = load_checkpoint(path)
    check_stride(stride, ckpt.model_config.block_size)  # before the corpus and the backend are loaded
    data = data or ckpt.extra.get("data")
    corpus_path = resolve_corpus(data, progress=progress)
    try:
        corpus = load_corpus(corpus_path, ckpt.tokenizer)
    except UserError as exc:
        raise UserError(f"corpus {str(corpus_path)!r} does not fit the checkpoint's tokenizer: {exc}") from None
    backend = backend or (ckpt.backend if ckpt.backend in BACKENDS else "torch")
    module = load_backend(backend)
    train_config = replace(ckpt.train_config, device=device, dtype=eval_dtype(ckpt.train_config.dtype),
                           compile=False, **SINGLE_DEVICE)  # a checkpoint of many devices scores on one
    names = ("train", "val") if split == "both" else (split,)
    result: dict[str, Any] = {"checkpoint": str(path), "step": ckpt.step, "data": str(corpus_path),
                              "backend": backend, "splits": {}}
    with process.settings(module, train_config):
        trainer = module.Trainer(ckpt.model_config, train_config, ckpt.weights)
        result |= {"device": str(trainer.device), "dtype": trainer.dtype}
        for name in names:
            loss = exact_loss(trainer, getattr(corpus, name), stride=stride, batch_size=batch_size,
                              progress=progress, desc=f"eval {name}")
            result["splits"][name] = loss.to_dict()
    return result


# -- the command line (backends.cli adds it) -------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="the exact loss of a checkpoint: every token of a split scored once",
        description="Score every token of a split exactly once, each with up to block_size tokens of context "
                    "(windows of block_size with a stride; the first window scores all its tokens, each later "
                    "one only its new ones), and print the mean loss in nats, bits per character and perplexity.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory, or a training --out directory")
    p.add_argument("--split", default="val", help=f"{', '.join(SPLITS)} (default val)")
    p.add_argument("--data", default=None, help="corpus (default: the one the checkpoint was trained on)")
    p.add_argument("--backend", default=None, help="framework (default: the one that wrote the checkpoint)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="windows per forward pass (default 64)")
    p.add_argument("--stride", type=int, default=None, help="tokens between windows (default block_size // 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda/gpu, mps")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    if args.json:  # the output location is checked before any work (common/outputs.py)
        outputs.check_file(args.json, "--json", args.overwrite)
    result = evaluate(args.checkpoint, args.split, args.data, args.backend, args.batch_size, args.device,
                      args.stride, progress=not args.no_progress and sys.stderr.isatty())
    print(f"{result['checkpoint']} (step {result['step']}), {result['backend']} {result['dtype']} on "
          f"{result['device']}, {result['data']}")
    for name, loss in result["splits"].items():
        print(f"{name}: {ExactLoss(**loss).describe()}")
    if args.json:
        outputs.write_json(args.json, result)
    return 0


def record_best(module, best_dir: Path, tokens, progress: bool = False) -> ExactLoss:
    """At the end of ``microgpt train``: the exact val loss of the best checkpoint, computed by
    :func:`exact_loss` and written into that checkpoint's metadata (``extra["exact_val_loss"]``)."""
    from common.checkpoint import save_checkpoint

    ckpt = load_checkpoint(best_dir)
    # one device: rank 0 alone scores, after the other ranks are done
    train_config = replace(ckpt.train_config, dtype=eval_dtype(ckpt.train_config.dtype), compile=False, **SINGLE_DEVICE)
    trainer = module.Trainer(ckpt.model_config, train_config, ckpt.weights)
    loss = exact_loss(trainer, tokens, progress=progress, desc="exact val loss")
    ckpt.extra["exact_val_loss"] = loss.to_dict() | {"dtype": trainer.dtype}
    save_checkpoint(best_dir, ckpt)
    return loss
