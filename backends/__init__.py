"""The backends: one package per framework, each imported only when it is chosen.

Every backend's ``train`` module satisfies the contract written as code in
``backends/interface.py``: the :class:`~backends.interface.Backend` protocol (device and dtype
selection, process-wide settings, building a model, weights in and out) and a ``Trainer``
satisfying :class:`~backends.interface.Trainer` (a model, its optimizer and its device).
Nothing outside this package imports torch, jax, flax or optax.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import cast

from backends.interface import Backend
from common.errors import UserError

BACKENDS = ("torch", "jax")
_REQUIREMENTS = {"torch": ("torch",), "jax": ("jax", "flax", "optax")}


def _missing(name: str, package: str) -> UserError:
    return UserError(f"the {name} backend needs {package}, which is not installed; run: pip install 'microgpt[{name}]'")


def check_installed(name: str) -> None:
    """Refuse a backend whose framework is not installed, without importing it (for a parent process
    that starts workers, e.g. the benchmark: before any work, not after the first backend's runs)."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    for package in _REQUIREMENTS[name]:
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise _missing(name, package)


def load_backend(name: str) -> Backend:
    """Import ``backends.<name>.train`` (and with it the framework) on first use."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    for package in _REQUIREMENTS[name]:
        try:
            importlib.import_module(package)
        except ImportError:
            raise _missing(name, package) from None
    return cast(Backend, importlib.import_module(f"backends.{name}.train"))
