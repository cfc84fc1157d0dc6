"""The parity suite: do the PyTorch and the JAX backends compute the same model?

Both backends start from the same canonical weights (``common.params.init_weights``) and are
fed the same batches (``common.batches.BatchSampler``); the suite then compares, one row per
quantity, the torch backend (the *reference*) with the JAX backend (the *candidate*). What
each check compares, how errors are measured and why each tolerance is what it is:
``backends/parity/README.md``.

- ``tolerances.py``: the one table of tolerances, each with its reason;
- ``report.py``: a row, the report, and the error arithmetic;
- ``session.py``: the trainers, weights, batches and training run the checks share;
- ``checks.py``: one function per check, independent of each other;
- ``hooks.py``: the framework-specific parts (native init, submodules);
- ``reference.py``: bfloat16 (or float32) against a float64 truth (``--against float64``);
- ``cli.py``: ``microgpt parity``.

``microgpt parity`` and the tests both call :func:`run_parity`. Nothing here imports a
framework at import time: ``backends.cli`` imports the command line at startup.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Iterator

from backends import BACKENDS, load_backend, process
from backends.device_check import resolve_in_process
from backends.parity.checks import CHECKS as _CHECKS
from backends.parity.report import ParityReport, Row, compare, init_std_row
from backends.parity.session import Session, synthetic_corpus
from backends.parity.tolerances import PARITY_DTYPES, TOLERANCES, Tol
from common.config import PRESETS, ModelConfig, TrainConfig, build_configs, to_dict
from common.errors import UserError

CHECKS = tuple(_CHECKS)
# opt-in checks, named with --checks: each runs child processes (backends/parity/parallel.py: ~1 min)
OPTIONAL_CHECKS = {"parallel": lambda session: _parallel_rows(session)}


def _parallel_rows(session):
    from backends.parity.parallel import parallel

    return parallel(session)

__all__ = ["CHECKS", "PARITY_DTYPES", "TOLERANCES", "ParityReport", "Row", "Session", "Tol", "compare",
           "init_std_row", "make_configs", "parity_overrides", "run_parity", "running", "synthetic_corpus"]


def make_configs(preset: str, dtype: str, seed: int, model_overrides: dict | None = None,
                 train_overrides: dict | None = None, device: str = "auto",
                 attention: str = "fused") -> tuple[ModelConfig, TrainConfig]:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if dtype not in PARITY_DTYPES:
        hint = (" (bfloat16 is compared against float64, not backend against backend: drop --against backend)"
                if dtype == "bfloat16" else "")
        raise UserError(f"unknown parity dtype {dtype!r}{hint}; choose one of: {', '.join(PARITY_DTYPES)}")
    return build_configs(preset, parity_overrides(dtype, seed, model_overrides, train_overrides, device, attention))


def parity_overrides(dtype: str, seed: int, model_overrides: dict | None, train_overrides: dict | None,
                     device: str, attention: str) -> dict:
    """The settings every parity run makes over its preset. Dropout is off unless asked for: each
    framework draws its masks from its own RNG, so with a preset's dropout (shakespeare-char's 0.2)
    gradients and training runs would compare two different random masks, not two implementations;
    dropout is tested on its own (tests/test_dropout.py)."""
    return ({"dropout": 0.0} | dict(model_overrides or {}) | dict(train_overrides or {})
            | dict(dtype=dtype, seed=seed, tf32=False, compile=False, device=device, attention=attention))


@contextlib.contextmanager
def running(session: Session) -> Iterator[None]:
    """The parity suite is an entry point: it makes the process-wide settings its backends need
    for the session's config (``backends.process``), and the hooks' own, and undoes them after."""
    with contextlib.ExitStack() as stack:
        for name in dict.fromkeys(session.names):
            stack.enter_context(process.settings(load_backend(name), session.tc))
        for hooks in {h.name: h for h in session.hooks}.values():
            stack.enter_context(hooks.context())
        yield


def run_parity(dtype: str = "float64", preset: str = "tiny", seed: int = 0, *, steps: int = 50,
               checks: Iterable[str] | None = None, reference: str = "torch", candidate: str = "jax",
               model_overrides: dict | None = None, train_overrides: dict | None = None,
               batch_size: int | None = None, seq_len: int | None = None, device: str = "auto",
               attention: str = "fused", against: str | None = None) -> ParityReport:
    """Run the suite (or the ``checks`` named, in :data:`CHECKS`) and return its report.

    ``against="float64"`` (the default, and the only choice, for bfloat16) compares each backend at
    ``dtype`` with a float64 torch computation instead (``backends/parity/reference.py``)."""
    against = against or ("float64" if dtype == "bfloat16" else "backend")
    if against not in ("backend", "float64"):
        raise UserError(f"unknown --against {against!r}; choose backend (one backend against the other) or float64")
    if against == "float64":
        from backends.parity.reference import run_reference

        if checks is not None:
            raise UserError("--checks selects checks of the backend-against-backend suite; leave it out with "
                            "--against float64")
        return run_reference(dtype, preset, seed, steps=steps, backends=(reference, candidate), device=device,
                             attention=attention, model_overrides=model_overrides, train_overrides=train_overrides)
    checks = list(CHECKS if checks is None else checks)
    if not checks:
        raise UserError(f"no check was named; choose from: {', '.join(CHECKS)} (or leave --checks out for all)")
    unknown = [c for c in checks if c not in CHECKS + tuple(OPTIONAL_CHECKS)]
    if unknown:
        raise UserError(f"unknown check(s) {', '.join(unknown)}; choose from: {', '.join(CHECKS + tuple(OPTIONAL_CHECKS))}")
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    for name in (reference, candidate):
        if name not in BACKENDS:
            raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    mc, tc = make_configs(preset, dtype, seed, model_overrides, train_overrides, device, attention)
    if seq_len is not None and not 1 <= seq_len <= mc.block_size:
        raise UserError(f"sequence length {seq_len} must be in 1..block_size={mc.block_size}")
    if batch_size is not None and not 1 <= batch_size <= tc.batch_size:
        raise UserError(f"batch size {batch_size} must be in 1..{tc.batch_size}")
    resolve_in_process((reference, candidate), device)  # one device type for both, or one line, before any work
    start = time.perf_counter()
    session = Session(reference, candidate, mc, tc, dtype, seed, steps, batch_size, seq_len)
    rows: list[Row] = []
    with running(session):
        for name, check in (_CHECKS | OPTIONAL_CHECKS).items():  # always in the report's order
            if name in checks:
                rows += check(session)
    return ParityReport(rows, dtype, preset, seed, reference, candidate, steps, to_dict(mc), to_dict(tc),
                        time.perf_counter() - start)
