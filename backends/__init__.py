"""The backends: one package per framework, each imported only when it is chosen.

Every backend's ``train`` module offers the same interface (see ``backends/interface.md``
in the README): ``select_device``, ``get_lr``, ``create_model``, ``export_weights``,
``load_weights``, ``configure_optimizer``, ``estimate_loss``, ``generate`` and a ``Trainer``
class that holds a model, its optimizer and its device. Nothing outside this package
imports torch, jax or flax.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from common.errors import UserError

BACKENDS = ("torch", "jax")
_REQUIREMENTS = {"torch": ("torch",), "jax": ("jax", "flax", "optax")}


def load_backend(name: str) -> ModuleType:
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
    return importlib.import_module(f"backends.{name}.train")
