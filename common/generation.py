"""How much text one request may ask for: the same bound in every backend, computed here.

Both backends generate chunk by chunk (``SAMPLE_CHUNK`` tokens at a time: a compiled loop in JAX,
eager steps in torch), keeping on the device only the last ``block_size`` tokens of context and
the current chunk, and copy each chunk into one host array of ``(rows, prompt + new)`` tokens
(:func:`output_buffer`): the only memory that grows with the request, allocated once. A request
whose text cannot fit in the memory this machine has available is refused in one line before any
work (:func:`check_fits`), instead of failing on an allocation (JAX) or running without end (torch).
``microgpt sample`` makes the same check before it reads the checkpoint, counting the decoded
text too (``SAMPLE_BYTES_PER_TOKEN``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.errors import UserError

SAMPLE_CHUNK = 32  # tokens per chunk (JAX: per call of the compiled sampling loop)
# microgpt sample, per token: the int32 array, then decoding it (str.join's list of one 8-byte
# reference per character, and the string, 1 to 4 bytes per character)
SAMPLE_BYTES_PER_TOKEN = 4 + 8 + 4
HEADROOM = 0.8  # a request may use at most this share of the memory available


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, or a cgroup's limit if lower; None if unknown."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:  # cgroup v2: a container's own limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:,.1f} kB"


def check_fits(rows: int, prompt_tokens: int, max_new_tokens: int, bytes_per_token: int) -> None:
    """Refuse, in one line, a request whose ``rows x (prompt + new)`` tokens need more memory than
    this machine has available."""
    need = rows * (prompt_tokens + max_new_tokens) * bytes_per_token
    available = available_memory()
    if available is None or need <= HEADROOM * available:
        return
    most = max(0, int(HEADROOM * available) // (rows * bytes_per_token) - prompt_tokens)
    raise UserError(f"--max-new-tokens {max_new_tokens:,} x --num-samples {rows:,} needs about {_size(need)} "
                    f"of memory for the text, more than the {_size(available)} this machine has available; "
                    f"ask for at most {most:,} new tokens per sample here, or fewer samples")


def output_buffer(idx: np.ndarray, max_new_tokens: int) -> np.ndarray:
    """The host array a backend's ``generate`` fills: ``(B, T0 + max_new_tokens)`` of ``idx``'s
    dtype, the prompt ``idx`` already in its first ``T0`` columns; refused if it cannot fit."""
    idx = np.asarray(idx)
    B, T0 = idx.shape
    check_fits(B, T0, max_new_tokens, idx.dtype.itemsize)
    out = np.empty((B, T0 + max_new_tokens), dtype=idx.dtype)
    out[:, :T0] = idx
    return out
