"""``microgpt parity``: the command line of the parity suite (``backends.cli`` adds it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from backends.parity.checks import CHECKS
from backends.parity.tolerances import PARITY_DTYPES
from common import outputs
from common.config import PRESETS
from common.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "parity", help="check that the torch and jax backends compute the same model",
        description="Compare the PyTorch and the JAX backend from identical weights and batches: logits, loss, "
                    "gradients, an AdamW step, a training run, the lr schedule, estimate_loss, generation, "
                    "checkpoint cross-loading, every submodule and the native initialisation. Prints a table and "
                    "exits 1 if any quantity is out of tolerance.")
    p.add_argument("--dtype", default="float64",
                   help=f"{', '.join(PARITY_DTYPES)} or bfloat16 (default float64; bfloat16 implies --against float64)")
    p.add_argument("--against", default=None,
                   help="backend: the candidate against the reference backend (default for float64/float32); "
                        "float64: each backend at --dtype against a float64 torch computation (bfloat16, float32)")
    p.add_argument("--preset", default="tiny", help=f"model and training config: {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--seed", type=int, default=0, help="weights, batches and random numbers (default 0)")
    p.add_argument("--steps", type=int, default=50, help="length of the shared training run (default 50)")
    p.add_argument("--checks", default=None, help=f"comma-separated subset of: {', '.join(CHECKS)} (default all), "
                                                  "or the opt-in parallel (many devices, child processes)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda/gpu (default auto)")
    p.add_argument("--attention", default="fused", help="fused or manual attention (default fused)")
    p.add_argument("--reference", default="torch", help="backend to compare against (default torch)")
    p.add_argument("--candidate", default="jax", help="backend under test (default jax)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the full report, per tensor, as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from backends.parity import run_parity

    if args.candidate == args.reference:  # a backend against itself passes whatever it computes
        raise UserError(f"--candidate {args.candidate} is also the --reference; compare two different backends, "
                        f"e.g. --reference torch --candidate jax")
    if args.json:  # the output location is checked before any work (common/outputs.py)
        outputs.check_file(args.json, "--json", args.overwrite)
    checks = None if args.checks is None else [c.strip() for c in args.checks.split(",") if c.strip()]
    report = run_parity(args.dtype, args.preset, args.seed, steps=args.steps, checks=checks,
                        reference=args.reference, candidate=args.candidate, device=args.device,
                        attention=args.attention, against=args.against)
    print(report.format_table())
    if args.json:
        outputs.write_json(Path(args.json), report.to_dict(), default=_json_default)  # makes the folder too
    return 0 if report.passed else 1


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
