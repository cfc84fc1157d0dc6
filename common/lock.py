"""One process at a time in a folder MicroGPT writes: an exclusive lock on ``FOLDER/.microgpt.lock``.

A training run holds the lock of its ``--out`` folder and of ``last/`` and ``best/`` from before
it removes a killed run's temporary files until it exits; ``microgpt convert`` holds its
``--out``'s. A second process that wants one of them is refused in one line naming the holder's
pid (exit status 2), before it has written anything.

The lock is ``fcntl.flock`` on an open file: the operating system releases it when the process
ends, however it ends (a SIGKILL, a crash, a power cut), so a lock is never stale. The file itself
stays (it holds the last holder's pid, for the message); removing it on exit would let a third
process lock a new file while a second still waits on the old one.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from common.errors import UserError
from common.writes import writing

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; MicroGPT runs unlocked there
    fcntl = None

LOCK_FILE = ".microgpt.lock"
TRIES = 5


class FolderBusy(UserError):
    """Another live process holds the folder's lock."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "a process whose pid is not recorded yet"


def _busy(folder: Path, fd: int, flag: str) -> FolderBusy:
    return FolderBusy(f"{flag} {str(folder)!r} is in use by another MicroGPT process ({_holder(fd)}); "
                      f"wait for it to finish, stop it, or choose another folder")


def check_free(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse now if a live process holds ``folder``'s lock; creates nothing (for checks that come
    before the arguments are all known to be good)."""
    if fcntl is None:
        return
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file (or unreadable): nobody to wait for; acquire() decides
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(Path(folder), fd, flag) from None
        except OSError:
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def hold(folder: str | os.PathLike, flag: str = "--out") -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock until the block ends (or the process does)."""
    folder = Path(folder)
    path = folder / LOCK_FILE
    if fcntl is None:
        yield folder
        return
    with writing(path):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        for attempt in range(TRIES):  # check_free() elsewhere may hold a shared lock for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == TRIES - 1:
                    raise _busy(folder, fd, flag) from None
                time.sleep(0.05)
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def hold_all(folders: Iterable[str | os.PathLike], flag: str = "--out") -> Iterator[None]:
    """The locks of every folder in ``folders``, taken in order, all released at the end."""
    with ExitStack() as stack:
        for folder in folders:
            stack.enter_context(hold(folder, flag))
        yield
