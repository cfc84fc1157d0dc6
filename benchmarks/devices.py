"""Which device each backend would run on, asked before any worker starts (``backends/device_check.py``:
the same type for both, or one line and exit status 2).

The parent never imports a framework, so each backend answers in a short process of its own:
``python -m benchmarks.devices BACKEND DEVICE`` prints ``describe_device(select_device(DEVICE))``
as one JSON object (``{"status": "user_error", "error": ...}`` for a device that is not there).
It costs one framework import per backend, and only when two backends are to run on a device
other than ``cpu``. Tests replace :func:`probe` (the one place a process is started) to make a
backend report a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from backends.device_check import check_same_device
from common.errors import UserError


def probe(backends: list[str], device: str) -> dict[str, dict[str, Any]]:
    """Per backend, ``{"status": "ok", "type", "name", "cuda"}`` or an error record: each from a
    fresh process of its own, all started at once."""
    from benchmarks.launch import worker_env

    procs = {b: subprocess.Popen([sys.executable, "-m", "benchmarks.devices", b, device], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())
             for b in backends}
    answers = {}
    for backend, proc in procs.items():
        stdout, stderr = proc.communicate()
        try:
            answers[backend] = json.loads(stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            tail = stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}, no output"]
            answers[backend] = {"status": "error", "error": tail[0]}
    return answers


def resolve(backends: list[str], device: str) -> dict[str, dict[str, Any]] | None:
    """Each backend's device, checked to be of one type; None when there is nothing to compare
    (one backend, or ``--device cpu``)."""
    backends = list(dict.fromkeys(backends))
    if len(backends) < 2 or device == "cpu":
        return None
    found = {}
    for backend, answer in probe(backends, device).items():
        if answer.get("status") == "user_error":  # e.g. --device gpu without one
            raise UserError(answer["error"])
        if answer.get("status") != "ok":
            raise UserError(f"the {backend} backend could not say which device it would use: {answer.get('error')}")
        found[backend] = {k: answer.get(k) for k in ("type", "name", "cuda")}
    check_same_device(found)
    return found


def main(argv: list[str]) -> int:
    """The probe process: one JSON line on stdout, whatever the framework prints on import."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        from backends import load_backend

        backend, device = argv
        module = load_backend(backend)
        result = {"status": "ok", **module.describe_device(module.select_device(device))}
    except UserError as exc:
        result = {"status": "user_error", "error": str(exc)}
    except Exception as exc:  # reported to the parent, which says it in one line
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(result) + "\n")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
