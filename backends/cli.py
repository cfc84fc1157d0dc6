"""The ``microgpt`` command: train, sample, convert (and eval, see backends/evaluate.py; parity,
see backends/parity/; side-by-side, see backends/side_by_side/).

Every problem the user can fix ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys

from backends import BACKENDS
from common import config as config_mod
from common import signals
from common.config import PRESETS, parse_overrides
from common.errors import OneLineParser, UserError, option_names, reject_unknown_flags, run_command


def _add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a model on a text corpus",
                       description="Train a character-level GPT. Any --key=value after the options "
                                   "overrides the preset's config (e.g. --n_layer=2 --max_iters=500).")
    p.add_argument("--backend", default="torch", help=f"framework: {', '.join(BACKENDS)} (default torch)")
    p.add_argument("--preset", default="baby", help=f"named config: {', '.join(PRESETS)} (default baby)")
    p.add_argument("--data", default=None, help="corpus: a UTF-8 text file, or 'shakespeare' (default)")
    p.add_argument("--out", default="out", help="directory for checkpoints (last/, best/), metrics.csv, loss.png")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last exactly where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an OUT that holds an earlier run, replacing its checkpoints and metrics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory, or a training --out directory")
    p.add_argument("--backend", default=None, help="framework to sample with (default: the one that trained it)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0 picks the most likely character")
    p.add_argument("--top-k", type=int, default=200)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda/gpu, mps")


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="import a checkpoint written by nanoGPT's train.py")
    p.add_argument("--from-nanogpt", required=True, metavar="CKPT_PT", help="nanoGPT's ckpt.pt")
    p.add_argument("--meta", default=None, help="nanoGPT's meta.pkl (the character vocabulary)")
    p.add_argument("--vocab-from", default=None, metavar="TEXT",
                   help="without meta.pkl: the text the model was trained on (its sorted characters)")
    p.add_argument("--out", required=True, help="directory to write the MicroGPT checkpoint into")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="microgpt", description="A character-level GPT in PyTorch and in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    parser.train_parser = _add_train(sub)
    _add_sample(sub)
    _add_convert(sub)
    from backends.evaluate import add_parser as add_eval  # microgpt eval (framework-free at import)

    add_eval(sub)
    from backends.side_by_side.cli import add_parser as add_side_by_side  # reads the code; imports no framework

    add_side_by_side(sub)
    try:
        from backends.parity.cli import add_parser as add_parity
    except ImportError:  # the parity suite ships with the package; tolerate partial checkouts
        add_parity = None
    if add_parity is not None:
        add_parity(sub)
    return parser


def run(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command != "train" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "train":
        from backends import trainloop

        reject_unknown_flags(extra, option_names(parser.train_parser),
                             config_mod.model_keys() + config_mod.train_keys())
        overrides = parse_overrides(extra)
        if args.backend not in BACKENDS:
            raise UserError(f"unknown backend {args.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if args.preset not in PRESETS:
            raise UserError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}")
        from backends import parallel_launch  # many devices: each framework's own way of starting

        launched = parallel_launch.prepare(args.backend, args.preset, overrides, argv)  # None: train here
        if launched is not None:
            return launched
        result = trainloop.train(args.backend, args.preset, overrides, args.data, args.out,
                                 resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(),
                                 overwrite=args.overwrite)
        best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
        if result.exact_val_loss is not None:  # backends/evaluate.py
            best += f" (estimate_loss); exact val loss of best/ {result.exact_val_loss.loss:.4f}"
        if result.main:
            print(f"{'interrupted' if result.interrupted else 'done'} at step {result.step} in {result.seconds:.1f} s; "
                  f"best val loss {best}; checkpoints, metrics.csv and loss.png in {result.out_dir}")
        return signals.exit_code(signum=result.signal) if result.interrupted else 0  # 130 Ctrl-C, 143 SIGTERM
    if args.command == "sample":
        from backends import trainloop  # trainloop.sample checks its numbers before reading the checkpoint

        for text in trainloop.sample(args.checkpoint, args.backend, args.prompt, args.max_new_tokens,
                                     args.temperature, args.top_k, args.seed, args.device, args.num_samples):
            print(text)
            print("---------------")
        return 0
    if args.command == "convert":
        from backends import nanogpt_import

        path = nanogpt_import.convert(args.from_nanogpt, args.out, meta=args.meta, vocab_from=args.vocab_from,
                                      overwrite=args.overwrite)
        print(f"wrote {path}")
        return 0
    return args.func(args)


# the commands that run a model: they start with the allocator (MICROGPT_MALLOC); side-by-side reads text
MODEL_COMMANDS = ("train", "sample", "eval", "parity", "convert")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    runs_model = bool(args) and args[0] in MODEL_COMMANDS
    if argv is None and runs_model:  # started as a program: a preloaded allocator needs a fresh start
        from backends import host_memory

        with contextlib.suppress(UserError):  # a bad choice is said in one line by process.start below
            host_memory.ensure_preloaded(args, "backends.cli")
    code = run_command("microgpt", functools.partial(_started, runs_model=runs_model), args)
    if argv is None:  # the process's own command: a rank of torchrun ends without the interpreter's exit
        from backends import parallel_launch

        return parallel_launch.exit_rank(code)
    return code


def _started(argv: list[str], runs_model: bool = True) -> int:
    from backends import process

    if runs_model:
        process.start()  # the allocator, the same for every backend and command
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
