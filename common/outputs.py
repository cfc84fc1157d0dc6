"""Where commands write: one rule for every output location, checked before any work starts.

Every command that writes (``microgpt train --out``, ``microgpt convert --out``, the
benchmark's ``--json/--csv/--plot/--profile``) calls one of the ``check_*`` functions
while it is still validating its arguments, so that a bad location costs one line and
exit status 2, never a traceback after minutes of work, and never silently replaces
what was there:

* the location must be creatable: its nearest existing ancestor is a directory we can
  write in (tested by creating and removing a probe file, which is what counts on every
  file system, ``/proc`` and read-only mounts included);
* a file output must not be a directory, a folder output must not be a file;
* an existing output is never replaced without an explicit ``--overwrite``; a training
  run is continued with ``--resume``; a non-empty folder that is not ours is refused.

Files are written atomically (``common/writes.py``: a temporary file in the same folder,
fsync, ``os.replace``; a full disk or a read-only place is one line); a temporary file that a
kill left behind is removed the next time MicroGPT writes into that folder
(``remove_stale_temporaries``), by the process that holds the folder's lock (``common/lock.py``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from common.errors import UserError
from common.lock import LOCK_FILE
from common.writes import atomic_write_bytes

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_dir", "check_file", "check_run_dir",
           "check_checkpoint_dir", "remove_stale_temporaries", "save_figure", "write_json"]

CHECKPOINT_FILE = "checkpoint.safetensors"  # common.checkpoint.FILENAME (which imports this module)
RUN_SUBDIRS = {"last", "best"}  # a training --out folder's checkpoint folders


def _q(path: Path | str) -> str:
    return repr(str(path))


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(directory: Path, what: str, flag: str) -> None:
    """Can we create (and remove) a file in ``directory``? The only test every file system answers."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".microgpt-probe.", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{flag} {what}: cannot write in {_q(directory)} ({exc.strerror or type(exc).__name__}); "
                        f"choose a writable location") from None


def check_dir(path: str | os.PathLike, flag: str) -> Path:
    """A folder we will write into: an existing writable directory, or one we can create."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {_q(path)} is a file, not a folder; choose a folder path")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{flag} {_q(path)}: {_q(base)} is a file, so the folder cannot be created; "
                        f"choose another path")
    _probe(base, _q(path), flag)
    return path


def check_file(path: str | os.PathLike, flag: str, overwrite: bool = False) -> Path:
    """A file we will write: not a folder, its folder creatable, and not replaced without ``--overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {_q(path)} is a folder; give a file path")
    if path.exists() and not overwrite:
        raise UserError(f"{flag} {_q(path)} already exists; choose a new path or pass --overwrite to replace it")
    check_dir(path.parent, flag)
    return path


def check_files_in(folder: str | os.PathLike, names: Iterable[str], flag: str, overwrite: bool = False) -> Path:
    """A folder we will write the files ``names`` into: none of them replaced without ``--overwrite``."""
    folder = check_dir(folder, flag)
    existing = sorted(n for n in names if (folder / n).exists())
    if existing and not overwrite:
        raise UserError(f"{flag} {_q(folder)} already holds {', '.join(existing)}; choose another folder "
                        f"or pass --overwrite to replace them")
    for n in names:
        if (folder / n).is_dir():
            raise UserError(f"{flag} {_q(folder / n)} is a folder; it would be overwritten by a file")
    return folder


def _listing(entries: list[str]) -> str:
    shown = ", ".join(sorted(entries)[:5])
    return shown + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")


def _leftovers_only(folder: Path, subdirs: set[str] = frozenset()) -> bool:
    """Only temporary files of an interrupted first save and lock files (and ``subdirs`` holding
    only those)."""
    for entry in folder.iterdir():
        if entry.is_file() and (entry.name == LOCK_FILE or entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        if not (entry.is_dir() and entry.name in subdirs and _leftovers_only(entry)):
            return False
    return True


def check_run_dir(path: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                  flag: str = "--out") -> Path:
    """A training run's folder: new or empty; an earlier run only with ``--resume`` or ``--overwrite``."""
    path = check_dir(path, flag)
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite starts it over; pass only one")
    if not path.exists():
        return path
    entries = [e.name for e in path.iterdir()]
    is_run = any((path / sub / CHECKPOINT_FILE).is_file() for sub in RUN_SUBDIRS)
    if is_run:
        if not resume and not overwrite:
            raise UserError(f"{flag} {_q(path)} already holds a MicroGPT run; continue it with --resume, "
                            f"choose a new --out folder, or pass --overwrite to start over and replace it")
        for folder in [path] + [path / sub for sub in sorted(RUN_SUBDIRS) if (path / sub).is_dir()]:
            _probe(folder, _q(folder), flag)  # every folder the run writes into, not only the top one
        return path
    if entries and not _leftovers_only(path, RUN_SUBDIRS):
        raise UserError(f"{flag} {_q(path)} is a folder that is not a MicroGPT run and is not empty "
                        f"(it holds {_listing(entries)}); choose a new or empty folder")
    _probe(path, _q(path), flag)
    return path


def check_checkpoint_dir(path: str | os.PathLike, overwrite: bool = False, flag: str = "--out") -> Path:
    """A folder for one checkpoint: new or empty; an existing checkpoint only with ``--overwrite``."""
    path = check_dir(path, flag)
    if not path.exists():
        return path
    entries = [e.name for e in path.iterdir()]
    if (path / CHECKPOINT_FILE).is_file():
        if not overwrite:
            raise UserError(f"{flag} {_q(path)} already holds a checkpoint; choose a new folder "
                            f"or pass --overwrite to replace it")
    elif entries and not _leftovers_only(path):
        raise UserError(f"{flag} {_q(path)} is a folder that is not a MicroGPT checkpoint and is not empty "
                        f"(it holds {_listing(entries)}); choose a new or empty folder")
    _probe(path, _q(path), flag)
    return path


def remove_stale_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files that a kill during an atomic write of ``name`` left in ``folder``."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def atomic_write_text(path: str | os.PathLike, text: str, flag: str | None = None) -> None:
    atomic_write_bytes(Path(path), text.encode("utf-8"), flag)


def write_json(path: str | os.PathLike, obj, flag: str = "--json", default=None) -> None:
    """``obj`` as indented JSON, written atomically; a failed write is one line naming ``flag``
    (common/writes.py)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=default) + "\n", flag)


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig`` through an atomic write: a kill never leaves half a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(Path(path), buf.getvalue())
