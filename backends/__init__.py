"""The backends: one package per framework, each imported only when it is chosen.

Every backend's ``train`` module satisfies the contract written as code in
``backends/interface.py``: the :class:`~backends.interface.Backend` protocol (device and dtype
selection, process-wide settings, building a model, weights in and out) and a ``Trainer``
satisfying :class:`~backends.interface.Trainer` (a model, its optimizer and its device).
Nothing outside this package imports torch, jax, flax or optax.
"""

from __future__ import annotations

import importlib
from typing import cast

from backends.interface import Backend
from common.errors import UserError

BACKENDS = ("torch", "jax")
_REQUIREMENTS = {"torch": ("torch",), "jax": ("jax", "flax", "optax")}


def load_backend(name: str) -> Backend:
    """Import ``backends.<name>.train`` (and with it the framework) on first use."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    for package in _REQUIREMENTS[name]:
        try:
            importlib.import_module(package)
        except ImportError:
            raise UserError(
                f"the {name} backend needs {package}, which is not installed; "
                f"run: pip install 'microgpt[{name}]'"
            ) from None
    return cast(Backend, importlib.import_module(f"backends.{name}.train"))
