"""What the benchmark's parent process does around its workers, for every task (training in
``benchmarks.run``, generation in ``benchmarks.sampling``) and for ``benchmarks.ops``: check
every output before any work, start a worker in a fresh process and read its result, and write
the report whole or not at all."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from backends import host_memory
from benchmarks import parallel, sysinfo
from common import outputs
from common.errors import UserError


def check_outputs(args: argparse.Namespace, sweep_key: str | None = None, lanes=()) -> None:
    """Every file and folder this run will write: writable, and nothing replaced without --overwrite."""
    from benchmarks import plots

    files = [(flag, path) for flag, path in (("--json", args.json), ("--csv", args.csv)) if path]
    for flag, path in files:
        outputs.check_file(path, flag, args.overwrite)
    if len(files) == 2 and Path(files[0][1]).resolve() == Path(files[1][1]).resolve():
        raise UserError("--json and --csv name the same file; give each its own path")
    if args.plot:
        outputs.check_files_in(args.plot, plots.plot_names(sweep_key, bool(args.profile)), "--plot", args.overwrite)
    if args.profile:
        folder = outputs.check_dir(args.profile, "--profile")
        used = [ln.name.replace(" ", "-") for ln in lanes]
        # a lane's folder, or one per sweep value or device count (``torch-x2``)
        taken = sorted(d.name for d in (folder.iterdir() if folder.is_dir() else ()) if d.is_dir() and any(d.iterdir())
                       and any(d.name == n or d.name.startswith(n + "-") for n in used))
        if taken and not args.overwrite:
            raise UserError(f"--profile {str(folder)!r} already holds traces in {', '.join(taken)}; choose another "
                            "folder or pass --overwrite to add new traces beside them")


def worker_env(xla_flags: str = "") -> dict[str, str]:
    env = dict(os.environ)
    if xla_flags:  # a lane's XLA flags, after the user's own
        env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), xla_flags) if f)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX is imported in the worker
    repo = str(sysinfo.REPO)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(spec: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Start ``benchmarks.worker`` with ``spec`` in a file; its JSON result, or an error record."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as spec_file:  # torch's ranks share no stdin
        json.dump(spec, spec_file)
        spec_file.flush()
        proc = subprocess.run(
            parallel.worker_command(spec), stdin=subprocess.DEVNULL, text=True, stdout=subprocess.PIPE,
            stderr=None if progress else subprocess.PIPE,
            env=host_memory.child_env(spec.get("malloc") or host_memory.selected(), worker_env(spec.get("xla_flags", "")))
            | {parallel.SPEC_ENV: spec_file.name},
        )
    try:
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        result = json.loads(lines[-1])
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except (IndexError, ValueError):
        tail = (proc.stderr or "").strip().splitlines()[-15:]
        result = {"status": "error", "error": f"worker exited with status {proc.returncode} and no result"
                  + (": " + " | ".join(tail) if tail else "")}
    return result


def report_head(argv: list[str], settings: dict[str, Any], **environment: Any) -> dict[str, Any]:
    """What every report opens with: when, the command (as run and as typed), the settings, and
    the machine (packages, host, git, then ``environment``'s entries)."""
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, "-m", "benchmarks.run", *argv],
        "command_line": shlex.join(["python", "-m", "benchmarks.run", *argv]),
        "settings": settings,
        "environment": {"packages": sysinfo.package_versions(), "host": sysinfo.host(), "git": sysinfo.git_info(),
                        **environment},
    }


def finite(obj: Any) -> Any:
    """JSON has no NaN or Infinity: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_outputs(args: argparse.Namespace, report: dict[str, Any], to_csv) -> None:
    """--json and --csv, each written whole (atomically) or not at all."""
    if args.json:
        outputs.atomic_write_text(Path(args.json), json.dumps(report, indent=1, allow_nan=False) + "\n")
    if args.csv:
        outputs.atomic_write_text(Path(args.csv), to_csv(report))
