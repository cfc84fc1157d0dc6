"""Every file MicroGPT writes goes through here: atomic writes, and the one translation of a
machine's refusal to write (a full disk, a read-only mount, a missing permission) into one line.

``atomic_write_bytes`` writes a temporary file in the same folder, fsyncs it and renames it over
the target, so that a kill or a full disk never leaves half a file: the previous version stays.
Any ``OSError`` on the way becomes a :class:`WriteError` (a :class:`UserError`: one line, exit
status 2) naming the folder, and for a full disk the bytes needed and the bytes free
(:func:`os_error_message`, which ``common.errors.run_command`` also uses for a write that
happened elsewhere, e.g. in a framework's profiler).
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from common.errors import UserError

# what a machine says when it will not take a write whoever asked (run_command's net for writes
# that did not come through here): the user's to fix, not a bug
MACHINE_REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
_FIXES = {  # what to do first, before "choose another location"
    errno.ENOSPC: "free some space or ",
    errno.EDQUOT: "free some space under your quota or ",
    errno.EACCES: "fix its permissions or ",
    errno.EPERM: "fix its permissions or ",
}


class WriteError(UserError):
    """The machine refused a write (disk full, read-only, permissions): one line, exit status 2."""


def _q(path: Path | str) -> str:
    return repr(str(path))


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still put into ``folder``'s file system (None if unknown)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def os_error_message(exc: OSError, path: Path | str | None = None, nbytes: int | None = None,
                     flag: str | None = None) -> str:
    """``exc`` as one line: what could not be written where, why, and the fix (naming ``flag``,
    the option that chose the location, if given)."""
    path = Path(path if path is not None else (exc.filename or "."))
    folder = path if path.is_dir() else path.parent
    why = (exc.strerror or str(exc) or type(exc).__name__).lower()
    fix = _FIXES.get(exc.errno, "") + (f"choose another {flag} path" if flag else "choose another location")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(folder)
        need = f"needs {_size(nbytes)}" if nbytes is not None else "needs more space"
        have = f", {_size(free)} free" if free is not None else ""
        return f"cannot write {_q(path)}: {why} in {_q(folder)} ({need}{have}); {fix}"
    return f"cannot write {_q(path)} ({why}) in {_q(folder)}; {fix}"


@contextmanager
def writing(path: Path | str, nbytes: int | None = None, flag: str | None = None) -> Iterator[None]:
    """Every ``OSError`` inside becomes a one-line :class:`WriteError` about writing ``path``."""
    try:
        yield
    except OSError as exc:
        raise WriteError(os_error_message(exc, path, nbytes, flag)) from None


def make_dirs(folder: Path | str) -> Path:
    """``mkdir -p``, its failure one line."""
    folder = Path(folder)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every file system can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: Path | str, data: bytes, flag: str | None = None) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``; the
    temporary file is removed on any failure (a signal included) and the old ``path`` kept."""
    path = Path(path)
    with writing(path, len(data), flag):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            try:
                os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    fsync_dir(path.parent)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def append_bytes(path: Path | str, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) and make it durable: for an append-only log
    whose every complete line is a record, where a kill leaves at most one partial last line."""
    path = Path(path)
    with writing(path, len(data)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
