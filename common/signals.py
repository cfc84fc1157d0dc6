"""One way to stop: SIGINT (Ctrl-C) and SIGTERM (what SLURM, Kubernetes and ``kill`` send before a
SIGKILL) take the same path, and the exit status says which: 128 + the signal's number (130, 143).

- Anywhere in a command (``common.errors.run_command`` installs :func:`stop_now`): the signal
  raises :class:`Stopped`, a ``KeyboardInterrupt``, so that every ``finally`` runs, an atomic
  write removes its temporary file, and the command ends in one line.
- In the training loop (:class:`StopRequest`): the first signal asks the loop to stop after the
  current step; it saves ``last/``, writes the metrics, and exits. A second one more than a second
  later stops at once (not one within a second: under ``torchrun`` a rank gets the terminal's
  SIGINT and the launcher's forwarded copy of it).
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def describe(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Stopped(KeyboardInterrupt):
    """A stop signal ended the command."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(describe(signum))
        self.signum = signum


def signum_of(exc: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt``: Python's own is SIGINT's."""
    return getattr(exc, "signum", signal.SIGINT)


def exit_code(exc: BaseException | None = None, signum: int | None = None) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended (130 for Ctrl-C)."""
    return 128 + int(signum if signum is not None else signum_of(exc))


def stop_now(signum: int, frame) -> None:
    raise Stopped(signum)


@contextmanager
def handled(handler: Callable) -> Iterator[None]:
    """``handler`` for every stop signal inside the block (the main thread's; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class StopRequest:
    """The training loop's handler: ``requested`` after the first signal, ``signum`` which one."""

    GRACE_S = 1.0

    def __init__(self):
        self.requested, self.signum, self.at = False, None, 0.0

    def __call__(self, signum: int, frame) -> None:
        if self.requested and time.monotonic() - self.at > self.GRACE_S:
            raise Stopped(signum)
        if not self.requested:
            self.requested, self.signum, self.at = True, signum, time.monotonic()
