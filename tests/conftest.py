"""Shared fixtures. Tests find tiny Shakespeare through $MICROGPT_DATA_DIR (CI points it at
the shared copy), else in ../shared/data beside the checkout; without it they fail."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from common.corpus import DATA_DIR_ENV, SHAKESPEARE_FILENAME


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
