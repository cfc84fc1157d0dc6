"""Finding, downloading and reading the text a model is trained on.

Any UTF-8 text file is a corpus. The default, ``shakespeare``, is tiny Shakespeare,
looked for in this order:

1. an explicit path (``--data PATH``);
2. ``$MICROGPT_DATA_DIR/tinyshakespeare.txt``;
3. the user cache, ``$XDG_CACHE_HOME/microgpt/tinyshakespeare.txt`` (``~/.cache`` by default);
4. a download, checked against its SHA-256 and written atomically into the cache; where the
   cache cannot be written (read-only, full), the download is used for this run from memory,
   and one line says so.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.writes import WriteError, atomic_write_bytes

SHAKESPEARE_FILENAME = "tinyshakespeare.txt"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DATA_DIR_ENV = "MICROGPT_DATA_DIR"
URL_ENV = "MICROGPT_SHAKESPEARE_URL"  # lets tests point the download at a local server
TRAIN_FRACTION = 0.9


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microgpt"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_shakespeare(url: str | None = None, dest: Path | None = None, progress: bool = True) -> Path:
    """Download tiny Shakespeare, verify its checksum, and write it atomically into the cache."""
    url = url or os.environ.get(URL_ENV) or SHAKESPEARE_URL
    dest = dest or cache_dir() / SHAKESPEARE_FILENAME
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            bar = _progress_bar(total, f"downloading {SHAKESPEARE_FILENAME}", progress)
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"tiny Shakespeare is not on this machine and could not be downloaded ({reason}); "
            f"pass --data PATH, set ${DATA_DIR_ENV} to a folder holding {SHAKESPEARE_FILENAME}, "
            f"or put it in {cache_dir()}"
        ) from None
    data = b"".join(chunks)
    digest = sha256_of(data)
    if digest != SHAKESPEARE_SHA256:
        raise UserError(
            f"the downloaded corpus has SHA-256 {digest[:16]}..., expected {SHAKESPEARE_SHA256[:16]}...; "
            f"nothing was written to the cache. Download it by hand and pass --data PATH"
        )
    try:
        atomic_write_bytes(dest, data)
    except WriteError as exc:  # the download is good: use it for this run, say it was not kept
        _UNCACHED[dest] = data
        print(f"microgpt: tiny Shakespeare was downloaded but could not be cached ({exc.problem}); "
              f"using it for this run only", file=sys.stderr)
    return dest


# downloads that could not be written into the cache, by the path they would have had: read_text
# finds them here, so that the run goes on from memory
_UNCACHED: dict[Path, bytes] = {}


def not_cached(path: Path) -> bool:
    """``path`` is a download held in memory only (the cache could not be written)."""
    return Path(path) in _UNCACHED and not Path(path).is_file()


def _progress_bar(total: int | None, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        enabled = False
    if not enabled:
        class _Null:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...
        return _Null()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)


def resolve_corpus(data: str | None = None, download: bool = True, progress: bool = True) -> Path:
    """Return the path of the corpus named by ``data`` (a path, or None/"shakespeare")."""
    if data not in (None, "shakespeare"):
        path = Path(data).expanduser()
        if not path.exists():
            raise UserError(f"corpus file {str(path)!r} does not exist; check the --data path")
        if not path.is_file():
            raise UserError(f"corpus {str(path)!r} is not a file; pass --data with a text file")
        if not os.access(path, os.R_OK):
            raise UserError(f"corpus file {str(path)!r} is not readable; fix its permissions")
        return path
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        candidate = Path(env_dir).expanduser() / SHAKESPEARE_FILENAME
        if candidate.is_file():
            return candidate
    cached = cache_dir() / SHAKESPEARE_FILENAME
    if cached.is_file():
        return cached
    if not download:
        raise UserError(
            f"tiny Shakespeare was not found; pass --data PATH, set ${DATA_DIR_ENV} to a folder "
            f"holding {SHAKESPEARE_FILENAME}, or put it in {cache_dir()}"
        )
    return download_shakespeare(progress=progress)


def read_text(path: Path) -> str:
    try:
        raw = _UNCACHED[Path(path)] if not_cached(path) else Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read corpus {str(path)!r} ({exc.strerror}); check the path and its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"corpus {str(path)!r} is not UTF-8 (bad byte at offset {exc.start}); convert it, e.g. with iconv -t utf-8"
        ) from None
    if not text:
        raise UserError(f"corpus {str(path)!r} is empty; pass a text file with some content")
    return text


@dataclass
class Corpus:
    """A text encoded as token ids, split 90/10 into train and val."""

    path: Path
    text: str
    train: np.ndarray  # int32 token ids
    val: np.ndarray

    def check_block_size(self, block_size: int) -> None:
        for split in ("train", "val"):
            n = len(getattr(self, split))
            if n < block_size + 1:
                raise UserError(
                    f"the {split} split of {str(self.path)!r} has {n} tokens, fewer than block_size + 1 = "
                    f"{block_size + 1}; use a longer text or a smaller --block_size"
                )


def load_corpus(path: Path, tokenizer) -> Corpus:
    text = read_text(path)
    ids = tokenizer.encode(text)
    n = int(len(ids) * TRAIN_FRACTION)
    return Corpus(path=Path(path), text=text, train=ids[:n], val=ids[n:])
