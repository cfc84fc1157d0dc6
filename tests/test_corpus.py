"""Corpus resolution order, a real download from a local HTTP server, checksum and offline errors."""

import hashlib
import http.server
import threading

import numpy as np
import pytest

from common import corpus
from common.corpus import SHAKESPEARE_FILENAME, SHAKESPEARE_SHA256, load_corpus, resolve_corpus
from common.errors import UserError
from common.tokenizer import CharTokenizer


@pytest.fixture
def serve(tmp_path):
    """Serve one payload at http://127.0.0.1:PORT/input.txt; yields a function payload -> url."""
    servers = []

    def start(payload: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/input.txt"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_real_corpus_facts(shakespeare_path):
    data = shakespeare_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHAKESPEARE_SHA256
    tok = CharTokenizer.from_text(data.decode())
    c = load_corpus(shakespeare_path, tok)
    assert (len(c.train), len(c.val), tok.vocab_size) == (1_003_854, 111_540, 65)
    assert c.train.dtype == np.int32


def test_resolution_order(tmp_path, monkeypatch, shakespeare_path):
    explicit = tmp_path / "mine.txt"
    explicit.write_text("my own text", encoding="utf-8")
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / SHAKESPEARE_FILENAME).write_bytes(b"env copy")
    cached = corpus.cache_dir() / SHAKESPEARE_FILENAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached copy")
    monkeypatch.setenv(corpus.DATA_DIR_ENV, str(env_dir))
    monkeypatch.setenv(corpus.URL_ENV, "http://127.0.0.1:9/unreachable")
    assert resolve_corpus(str(explicit)) == explicit  # 1. explicit path
    assert resolve_corpus(None) == env_dir / SHAKESPEARE_FILENAME  # 2. environment
    monkeypatch.setenv(corpus.DATA_DIR_ENV, str(tmp_path / "empty"))
    assert resolve_corpus("shakespeare") == cached  # 3. cache
    cached.unlink()
    with pytest.raises(UserError):  # 4. download (unreachable here)
        resolve_corpus(None, progress=False)


def test_download_verifies_and_writes_atomically(serve, monkeypatch, tmp_path, shakespeare_path):
    monkeypatch.delenv(corpus.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(corpus.URL_ENV, serve(shakespeare_path.read_bytes()))
    path = resolve_corpus(None, progress=False)
    assert path == corpus.cache_dir() / SHAKESPEARE_FILENAME
    assert path.read_bytes() == shakespeare_path.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == [SHAKESPEARE_FILENAME]  # no temporary left


def test_checksum_mismatch_writes_nothing(serve, monkeypatch):
    monkeypatch.delenv(corpus.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(corpus.URL_ENV, serve(b"not shakespeare at all"))
    with pytest.raises(UserError, match="SHA-256"):
        resolve_corpus(None, progress=False)
    assert not corpus.cache_dir().exists() or not any(corpus.cache_dir().iterdir())


def test_offline_error_names_three_ways(monkeypatch):
    monkeypatch.delenv(corpus.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(corpus.URL_ENV, "http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(UserError) as err:
        resolve_corpus(None, progress=False)
    msg = str(err.value)
    assert "--data PATH" in msg and "$MICROGPT_DATA_DIR" in msg and str(corpus.cache_dir()) in msg
    assert "\n" not in msg


@pytest.mark.parametrize("content, fragment", [
    (b"", "empty"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
])
def test_bad_corpus_files(tmp_path, content, fragment):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        corpus.read_text(resolve_corpus(str(path)))


def test_missing_and_short_corpus(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_corpus(str(tmp_path / "nope.txt"))
    short = tmp_path / "short.txt"
    short.write_text("abcdefghijklmnopqrstuvwxyz" * 2, encoding="utf-8")
    tok = CharTokenizer.from_text(short.read_text())
    with pytest.raises(UserError, match="block_size"):
        load_corpus(short, tok).check_block_size(16)


def test_a_download_into_a_read_only_cache_is_used_for_the_run(serve, monkeypatch, capsys, shakespeare_path):
    """Issue 19: the download is good, the cache cannot keep it: one line, and the run goes on from memory."""
    import errno
    import os
    import tempfile

    monkeypatch.delenv(corpus.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(corpus.URL_ENV, serve(shakespeare_path.read_bytes()))
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # root writes anywhere: pretend the cache is a read-only mount
        if dir is not None and str(dir).startswith(str(corpus.cache_dir())):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    path = resolve_corpus(None, progress=False)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "could not be cached" in err and "read-only file system" in err
    assert not path.exists() and corpus.read_text(path) == shakespeare_path.read_text(encoding="utf-8")
    assert corpus.not_cached(path)
