"""Shared fixtures. Tests find tiny Shakespeare through $MICROGPT_DATA_DIR (CI points it at
the shared copy), else in ../shared/data beside the checkout; without it they fail."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from common.corpus import DATA_DIR_ENV, SHAKESPEARE_FILENAME

# torch and JAX share one GPU in a test process: JAX must not take 75% of its memory up front
# (read when JAX first starts its GPU client)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

REPO = Path(__file__).resolve().parents[1]


def _shakespeare_path() -> Path | None:
    env = os.environ.get(DATA_DIR_ENV)
    for folder in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (folder / SHAKESPEARE_FILENAME).is_file():
            return folder / SHAKESPEARE_FILENAME
    return None


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    path = _shakespeare_path()
    if path is None:  # a core test: fail loudly rather than skip
        pytest.fail(f"tiny Shakespeare not found: set ${DATA_DIR_ENV} to a folder holding {SHAKESPEARE_FILENAME}")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, shakespeare_path) -> Path:
    """The first 100 kB of tiny Shakespeare: the same vocabulary, a quick exact val loss at the end."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_bytes(shakespeare_path.read_bytes()[:100_000])
    return path


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A few KB of text: fast to train on, with a small vocabulary."""
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "love", "death", "night", "day", "lord", "sweet", "fair"]
    lines = [" ".join(rng.choice(words, size=8)) + "." for _ in range(400)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never read or write the real user cache from a test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# -- small models and batches, shared by the backend tests ---------------------------------------

BACKENDS = ("torch", "jax")


@pytest.fixture(scope="session")
def model_config():
    """Two layers: the smallest model with a block feeding a block."""
    from common.config import ModelConfig

    return ModelConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="session")
def one_layer_config():
    """One layer, for tests that train: XLA's compile time grows with depth and dominates on a CPU."""
    from common.config import ModelConfig

    return ModelConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="session")
def train_config():
    from common.config import TrainConfig

    return TrainConfig(batch_size=4, max_iters=200, eval_interval=50, eval_iters=2, learning_rate=3e-3,
                       min_lr=3e-4, warmup_iters=5, lr_decay_iters=200, device="cpu", dtype="float32")


def make_batch(B: int = 4, T: int = 16, V: int = 65, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T), dtype=np.int32), rng.integers(0, V, (B, T), dtype=np.int32)


@pytest.fixture(scope="session")
def batch():
    """``batch(B=4, T=16, V=65, seed=0) -> (x, y)``: random token ids, int32."""
    return make_batch


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend's train module in turn (``backends.load_backend``)."""
    from backends import load_backend

    if request.param == "torch":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("jax")
    return load_backend(request.param)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The test models are tiny: torch's thread pool spin-waiting beside XLA's only slows them down."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- GPU tests: @pytest.mark.gpu("torch") needs torch on a CUDA GPU; @pytest.mark.gpu, both backends ----

def _nvidia_driver() -> bool:
    import shutil

    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


@functools.lru_cache(maxsize=None)
def gpu_missing(backend: str) -> str | None:
    """Why ``backend`` cannot run on a CUDA GPU here, or None. No framework is asked on a machine
    without NVIDIA's driver (JAX would start its backends, which a CPU test may still want unstarted)."""
    if not _nvidia_driver():
        return "needs a CUDA GPU: this machine has no NVIDIA driver"
    if backend == "torch":
        torch = pytest.importorskip("torch")
        return None if torch.cuda.is_available() else "needs a CUDA GPU: torch sees none (a CPU-only torch build?)"
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError:
        return "needs a CUDA GPU in JAX: jax sees none (a CPU-only jaxlib? pip install -e '.[gpu]')"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Skips a test marked ``gpu`` with the reason, where a backend it names has no CUDA GPU: before
    any of its fixtures is set up (a module's fixture would otherwise run on the CPU first)."""
    marker = item.get_closest_marker("gpu")
    if marker is not None:
        for backend in marker.args or BACKENDS:
            reason = gpu_missing(backend)
            if reason:
                pytest.skip(reason)
