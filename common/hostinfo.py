"""Facts about this host that the benchmark hooks of every backend read: the CPU's name and
the process's peak resident memory. Framework-free (stdlib only)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_rss_peak() -> dict[str, Any]:
    """Peak resident set size: VmHWM (resettable, see reset_host_rss_peak) or ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "source": "/proc/self/status VmHWM"}
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return {"bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "source": "getrusage ru_maxrss (since process start)"}


def host_rss() -> int | None:
    """The process's resident set size now, in bytes (VmRSS; None where /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_host_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
