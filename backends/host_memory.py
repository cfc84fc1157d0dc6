"""The C allocator a program runs with: one choice for every backend. Framework-free.

A training step on the CPU allocates and frees the same large buffers every step (torch's
activations; XLA's temporaries, which XLA:CPU allocates at every execution). glibc's malloc
serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns
it with ``munmap`` when freed, so each step page-faults and zeroes that memory again. Four
allocators, chosen with ``MICROGPT_MALLOC`` (the benchmark's ``--malloc``):

* ``tcmalloc``: gperftools' tcmalloc, preloaded (``LD_PRELOAD``) from Debian's
  ``libtcmalloc-minimal4``; the default wherever that library is installed: the fastest of the
  four for both frameworks, measured at ``tiny``, ``baby`` and ``shakespeare-char``
  (``benchmarks/README.md``, "The allocator, measured");
* ``reuse``: glibc told to serve large blocks from the heap too and never hand the heap's top
  back (``mallopt``), so a freed buffer is reused by the next step; no preload, no dependency;
  the default where tcmalloc is not installed;
* ``system``: glibc as it comes;
* ``jemalloc``: preloaded from Debian's ``libjemalloc2`` (PyTorch's CPU tuning guide
  recommends it beside tcmalloc).

The choice is the same for torch and JAX: a benchmark that tuned malloc for one framework only
would time the allocator, not the framework. It is process-wide and cannot be undone, so it is
made by the programs at their start (``microgpt``, the benchmark's workers), never on import. A
preloaded allocator needs a fresh process: the benchmark's workers are started with it, and
``microgpt`` starts itself again with it (``ensure_preloaded``). A process that was not started
that way (a test, a notebook) and did not ask for a preloaded allocator by name gets ``reuse``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import sysconfig
from pathlib import Path

from common.errors import UserError

ENV = "MICROGPT_MALLOC"
ALLOCATORS = ("reuse", "system", "jemalloc", "tcmalloc")
FALLBACK = "reuse"  # the default where tcmalloc is not installed, and in a process not started with it
# preloaded allocators: (the library's file name, the Debian package that installs it)
PRELOADED = {"jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
             "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4")}
# mallopt(3) parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

_applied: str | None = None


def default() -> str:
    """The allocator when ``MICROGPT_MALLOC`` is unset: tcmalloc where it is installed, else reuse."""
    return "tcmalloc" if library("tcmalloc") is not None else FALLBACK


def selected(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """The allocator ``MICROGPT_MALLOC`` asks for (the default when unset); an unknown name is refused."""
    choice = environ.get(ENV) or default()
    if choice not in ALLOCATORS:
        raise UserError(f"{ENV}={choice!r} is not an allocator; choose one of: {', '.join(ALLOCATORS)}")
    return choice


def library(name: str) -> str | None:
    """The path of a preloaded allocator's library, or None where it is not installed."""
    filename = PRELOADED[name][0]
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    folders = [Path(sys.prefix) / "lib", Path("/usr/lib") / multiarch, Path("/lib") / multiarch,
               Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]
    for folder in folders:
        if (folder / filename).is_file():
            return str(folder / filename)
    return ctypes.util.find_library(filename.split(".so")[0][3:]) if sys.platform.startswith("linux") else None


def check_available(name: str) -> str | None:
    """The library to preload for ``name`` (None for glibc's own); one line naming the package if missing."""
    if name not in PRELOADED:
        return None
    if not sys.platform.startswith("linux"):
        raise UserError(f"--malloc {name} preloads a Linux library; on {sys.platform} use reuse or system")
    path = library(name)
    if path is None:
        filename, package = PRELOADED[name]
        raise UserError(f"--malloc {name}: {filename} is not installed; install Debian's {package} "
                        f"(apt-get install {package}) or choose reuse or system")
    return path


def child_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child process that runs with allocator ``name`` (preloaded where it must be)."""
    env = {k: v for k, v in env.items() if k != ENV} | {ENV: name}
    path = check_available(name)
    others = [p for p in env.get("LD_PRELOAD", "").split() if not _is_allocator(p)]
    preload = ([path] if path else []) + others
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    return env


def _is_allocator(path: str) -> bool:
    return any(Path(path).name.startswith(filename.split(".so")[0]) for filename, _ in PRELOADED.values())


def loaded() -> str | None:
    """The preloaded allocator this process runs with (jemalloc, tcmalloc), or None: glibc's own."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for name, (filename, _) in PRELOADED.items():
        if "/" + filename.split(".so")[0] + ".so" in maps:
            return name
    return None


def ensure_preloaded(argv: list[str], module: str) -> None:
    """For a program started as ``python -m module argv``: where the allocator chosen must be
    preloaded and is not, start the program again with it (this process ends there)."""
    name = selected()
    if name in PRELOADED and loaded() != name:
        env = child_env(name, dict(os.environ))
        sys.stdout.flush(), sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def apply() -> str:
    """Make the chosen allocator's in-process setting (idempotent: the first call decides);
    returns the one-line description the reports show."""
    global _applied
    if _applied is not None:
        return _applied
    name, running = selected(), loaded()
    if name in PRELOADED and running != name and not os.environ.get(ENV):
        name = FALLBACK  # the default, in a process not started with it: glibc's setting is what it can have
    if name in PRELOADED:
        if running != name:
            raise UserError(f"{ENV}={name} needs {PRELOADED[name][0]} loaded when the process starts; "
                            f"run it as LD_PRELOAD={check_available(name)} ... or use the benchmark's --malloc {name}")
        _applied = f"{name}: {PRELOADED[name][0]} preloaded"
    elif running is not None:  # the user preloaded an allocator by hand: glibc's settings do nothing
        _applied = f"{running}: preloaded by LD_PRELOAD ({ENV}={name} has no effect)"
    elif name == "system":
        _applied = "system: glibc's defaults"
    else:
        _applied = _keep_freed_memory()
    return _applied


def _keep_freed_memory() -> str:
    if not sys.platform.startswith("linux"):
        return f"system: not glibc ({sys.platform}), so reuse changes nothing"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return "system: not glibc, so reuse changes nothing"
    version.restype = ctypes.c_char_p
    # M_MMAP_MAX 0: no block is served by mmap, so freed blocks go back to the heap for reuse.
    # M_TRIM_THRESHOLD -1: never give the heap's top back (mallopt(3): "-1 disables trimming").
    # Not enough for JAX at shakespeare-char: a thread's own arena is built of 64 MiB heaps and maps
    # a larger block with mmap whatever M_MMAP_MAX says, so XLA's worker threads still fault (11.7 s
    # a step, as with system). M_ARENA_MAX 1 (one heap for every thread) gave 7.6 s there, as
    # tcmalloc does, but its one lock made JAX's baby step 36.7 ms against 31.6: hence tcmalloc.
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, -1) != 1:
        return "system: mallopt refused reuse"
    return f"reuse: glibc {version().decode()} keeps freed memory (mallopt)"


def main() -> int:
    """``python -m backends.host_memory``: the allocator a program started now runs with (set
    ``MICROGPT_MALLOC`` to try another), one line."""
    from common.errors import run_command

    def show(argv: list[str]) -> int:
        ensure_preloaded(argv, "backends.host_memory")
        print(apply())
        return 0

    return run_command("python -m backends.host_memory", show, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
