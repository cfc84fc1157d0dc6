"""The command line of ``python -m benchmarks.run``: its flags, their defaults, and the checks
that need no worker (the sweep, the corpus). ``benchmarks.run`` plans and runs; this module reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from backends import check_installed, host_memory
from benchmarks import variants
from common import config as config_mod
from common.corpus import TRAIN_FRACTION, read_text, resolve_corpus
from common.errors import OneLineParser, UserError

PROG = "python -m benchmarks.run"
BACKEND_CHOICES = ("torch", "jax", "all")
DEVICE_CHOICES = ("auto", "cpu", "gpu", "cuda")
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
# (timed steps, warmup steps) when --steps/--warmup are not given: about a minute in all for
# `baby` on a laptop CPU; shakespeare-char takes seconds per step on a CPU.
DEFAULT_STEPS = {"tiny": (20, 5), "baby": (20, 5), "shakespeare-char": (3, 2)}
FALLBACK_STEPS = (10, 3)
DEFAULT_VOCAB = 65  # tiny Shakespeare's, for synthetic tokens when no corpus is around


def build_parser() -> argparse.ArgumentParser:
    presets = ", ".join(config_mod.PRESETS)
    p = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0].split(": ", 1)[1] + " Each run: cold costs (compile, first step), "
        "warmup with a sanity gate, per-step latency, then amortised throughput. Extra --key=value "
        "arguments override the preset's config (e.g. --n_layer=2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", default="train", choices=("train", "sample"),
                   help="what to time: train (one training step) or sample (text generation, tokens/s)")
    p.add_argument("--backend", default="all", help="framework to time: torch, jax, or all (both, interleaved)")
    p.add_argument("--preset", default="baby", help=f"model and batch shape: {presets}")
    p.add_argument("--device", default="auto",
                   help="auto (a GPU if there is one, else the CPU), cpu, or gpu (CUDA; exit status 2 without one)")
    p.add_argument("--dtype", default="auto",
                   help="compute dtype: float32 or bfloat16 (torch autocast, JAX compute dtype); auto is "
                        "bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--tf32", default=False, action=argparse.BooleanOptionalAction,
                   help="let float32 matmuls use TF32 on a GPU; the report states which (no effect on a CPU)")
    p.add_argument("--compile", default=False, action=argparse.BooleanOptionalAction,
                   help="torch.compile the torch model (its compile time is reported); JAX always jit-compiles")
    p.add_argument("--compile-mode", default=None, metavar="MODES",
                   help="torch variants, comma-separated, each its own column: " + ", ".join(variants.TORCH_MODES)
                        + " (eager: no compile; default: eager)")
    p.add_argument("--xla-variant", default=None, metavar="NAMES",
                   help="JAX variants, comma-separated, each its own column: " + ", ".join(variants.XLA_VARIANTS)
                        + " (XLA:CPU's engine for the dots; default: default)")
    p.add_argument("--malloc", default=None, metavar="NAMES",
                   help="the workers' C allocator, comma-separated, each value a column for each backend: "
                        + ", ".join(host_memory.ALLOCATORS) + f" (default: ${host_memory.ENV}, else tcmalloc where "
                        "Debian's libtcmalloc-minimal4 is installed, else reuse; jemalloc needs libjemalloc2)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per run, for latency and again for throughput (default: "
                        + ", ".join(f"{k} {v[0]}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps after the first, ending with the first batch again for the sanity gate "
                        "(default: " + ", ".join(f"{k} {v[1]}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per backend and configuration")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...",
                   help="time each value of one config key, e.g. batch_size=4,8,16 or n_embd=64,128,256")
    p.add_argument("--data", default=None,
                   help="shakespeare (tiny Shakespeare, found via $MICROGPT_DATA_DIR or the user cache), "
                        "synthetic (random tokens of the same vocabulary), or a PATH to a UTF-8 text; "
                        "default: shakespeare if found, else synthetic (said in one line)")
    p.add_argument("--json", default=None, metavar="PATH", help="write everything (raw step times, summary, "
                                                                "environment) as JSON")
    p.add_argument("--csv", default=None, metavar="PATH", help="write the summary as CSV, with jax/torch rows")
    p.add_argument("--plot", default=None, metavar="DIR", help="write step-time and tokens/s PNGs into DIR")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="also trace a few steps (outside the timed run, first repeat) with torch.profiler "
                        "and jax.profiler into DIR/<backend>")
    p.add_argument("--profile-steps", type=int, default=3, help="steps traced with --profile")
    p.add_argument("--fresh-peak", action="store_true",
                   help="measure the device's float32 matmul peak again instead of using the cached figure")
    p.add_argument("--seed", type=int, default=1337, help="seed of the batch sampler")
    p.add_argument("--sample-tokens", type=int, default=None,
                   help="--task sample: new tokens per generate call (default 1000)")
    p.add_argument("--num-samples", type=int, default=None, help="--task sample: rows generated at once (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files that --json, --csv, --plot or --profile would write if they exist")
    p.add_argument("--devices", default=None, metavar="N1,N2", help="time each device count (benchmarks/parallel.py)")
    p.add_argument("--parallel", default=None, help="ddp or fsdp, with --devices")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no per-run lines (the bar is also off when stdout is not a terminal)")
    return p


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise UserError(f"--{name} must be >= {minimum}, got {value}")


def checked_overrides(args: argparse.Namespace, extra: list[str], positive: dict[str, int | None],
                      own_flags: tuple[str, ...]) -> dict[str, Any]:
    """The checks every task makes, in this order: --backend is known and installed, --preset,
    --device and --dtype are known, each of ``positive`` (flag name: value) is >= 1, and no --key=value override sets one of
    ``own_flags``; returns the overrides with --device, --tf32 and --dtype (unless auto) added."""
    if args.backend not in BACKEND_CHOICES:
        raise UserError(f"unknown backend {args.backend!r}; choose one of: {', '.join(BACKEND_CHOICES)}")
    for backend in BACKEND_CHOICES[:-1] if args.backend == "all" else (args.backend,):
        check_installed(backend)  # every framework importable before the first worker, not after its runs
    config_mod.preset(args.preset)  # raises for an unknown preset
    if args.device not in DEVICE_CHOICES:
        raise UserError(f"unknown device {args.device!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
    if args.dtype not in DTYPE_CHOICES:
        raise UserError(f"unknown dtype {args.dtype!r}; choose one of: {', '.join(DTYPE_CHOICES)}")
    for name, value in positive.items():
        _positive(name, value)
    overrides = config_mod.parse_overrides(extra)
    for key in own_flags:
        if key in overrides:
            raise UserError(f"set {key} with its own flag (--{key.replace('_', '-')}), not as an override")
    overrides.update({"device": args.device, "tf32": bool(args.tf32)})
    if args.dtype != "auto":
        overrides["dtype"] = args.dtype
    return overrides


def parse_sweep(text: str | None) -> tuple[str, list[Any]] | None:
    if text is None:
        return None
    if "=" not in text:
        raise UserError(f"--sweep expects KEY=V1,V2,..., got {text!r}")
    key, values = text.split("=", 1)
    key = key.strip().replace("-", "_")
    raw = [v.strip() for v in values.split(",") if v.strip()]
    if not raw:
        raise UserError(f"--sweep {key}= has no values; write e.g. --sweep {key}=4,8,16")
    parsed = [config_mod.parse_overrides([f"--{key}={v}"])[key] for v in raw]
    if len(set(map(repr, parsed))) != len(parsed):
        raise UserError(f"--sweep {key} repeats a value")
    return key, parsed


def resolve_data(data: str | None, quiet: bool) -> dict[str, Any]:
    """The corpus the workers read, or synthetic tokens; the vocabulary size either way."""
    if data == "synthetic":
        try:
            path = resolve_corpus(None, download=False)
            vocab = len(set(read_text(path)))
        except UserError:
            vocab = DEFAULT_VOCAB
        return {"kind": "synthetic", "path": None, "vocab_size": vocab, "note": None}
    if data is None:
        try:
            path = resolve_corpus(None, download=False)
        except UserError as exc:
            note = f"no corpus found ({str(exc).split(';')[0]}); timing on synthetic tokens (vocabulary {DEFAULT_VOCAB})"
            print(f"{PROG}: {note}", file=sys.stderr)
            return {"kind": "synthetic", "path": None, "vocab_size": DEFAULT_VOCAB, "note": note}
    else:
        path = resolve_corpus(data, download=False)
    text = read_text(path)
    smallest = min(int(len(text) * TRAIN_FRACTION), len(text) - int(len(text) * TRAIN_FRACTION))
    return {"kind": "corpus", "path": str(Path(path).resolve()), "vocab_size": len(set(text)), "note": None,
            "smallest_split": smallest}
