"""The backend contract, as code.

A backend is a package ``backends/<name>/`` whose ``train`` module satisfies :class:`Backend`
and whose ``Trainer`` satisfies :class:`Trainer`. Everything outside a backend (the training
loop, the CLI, the parity suite, the benchmark worker) reaches torch or JAX only through
these two protocols, and ``tests/test_mirror.py`` checks that both backends satisfy them with
exactly these signatures. Framework-free pieces both backends share live in ``common/``
(the lr schedule ``common.schedule.get_lr``, the dtype names in ``common.config``).

Across the contract, weights and optimizer state are numpy arrays in the canonical layout of
``common.params`` (nanoGPT's state-dict names, PyTorch's shapes), batches are numpy ``int32``
arrays of shape ``(B, T)``, and device-side values (a loss returned by ``step``) are opaque:
``float(loss)`` reads one, ``Trainer.wait`` waits for one.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Protocol, runtime_checkable

import numpy as np

from common.config import ModelConfig, TrainConfig

Weights = dict[str, np.ndarray]  # canonical name -> array (also AdamW state: "exp_avg/<name>", ...)
GetBatch = Callable[[str], tuple[np.ndarray, np.ndarray]]  # split -> (x, y), each (B, T) int32


@runtime_checkable
class Trainer(Protocol):
    """One model, its optimizer and its device: what the CLI, the benchmark and the parity suite drive."""

    model_config: ModelConfig
    train_config: TrainConfig
    device: Any  # the framework's device object
    dtype: str  # the compute dtype the config's "auto" resolved to: float32, bfloat16 or float64
    iter_num: int  # optimizer steps taken; drives the learning-rate schedule

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig,
                 weights: Weights | None = None) -> None: ...

    # -- moving data
    def to_device(self, array: np.ndarray) -> Any:
        """A batch (or any array) placed on the trainer's device."""

    def wait(self, loss: Any = None) -> None:
        """Block until all queued work (the step that produced ``loss``, its update) is done."""

    def compile(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Compile the step ahead of time where the framework can; seconds per phase ({} if lazy)."""

    @property
    def compiled_step(self) -> Any:
        """The executable ``compile`` built, or None."""

    # -- training and evaluation
    def step(self, x: Any, y: Any) -> Any:
        """One AdamW step at lr ``get_lr(iter_num)``; returns the loss, still on the device."""

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """The loss and the gradient of every parameter, without a step."""

    def logits(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """(B, T, vocab_size) logits in float32 or float64, in eval mode unless ``train``."""

    def estimate_loss(self, get_batch: GetBatch, eval_iters: int) -> dict[str, float]:
        """Mean loss over ``eval_iters`` batches per split, in eval mode, without gradients."""

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 uniforms: np.ndarray | None = None) -> np.ndarray:
        """(B, T0) prompts continued by ``max_new_tokens`` tokens: (B, T0 + max_new_tokens)."""

    # -- state in the canonical layout
    def weights(self) -> Weights: ...

    def load_weights(self, weights: Weights) -> None: ...

    def optimizer_state(self) -> Weights:
        """AdamW's moments as ``exp_avg/<name>``, ``exp_avg_sq/<name>``, and ``step``."""

    def load_optimizer_state(self, state: Weights) -> None: ...

    def rng_state(self) -> np.ndarray:
        """The backend's own random state (dropout), as one array a checkpoint can store."""

    def set_rng_state(self, state: np.ndarray) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A backend's ``train`` module (``backends.load_backend(name)`` returns it)."""

    BACKEND: str  # "torch", "jax"
    DTYPES: dict[str, Any]  # common.config.COMPUTE_DTYPES -> the framework's dtype objects
    Trainer: type[Trainer]

    def process_settings(self, train_config: TrainConfig) -> ContextManager[None]:
        """The process-wide settings a run needs (matmul precision; torch: the global seed of
        dropout; JAX: 64-bit mode for float64), made by the entry points and undone after
        (see ``backends.process``). A Trainer never changes process-wide state itself."""

    def select_device(self, requested: str = "auto") -> Any:
        """The framework's device for ``auto``, ``cpu``, ``cuda``/``gpu`` or ``mps``; a device asked
        for by name must exist (a one-line ``UserError`` otherwise)."""

    def describe_device(self, device: Any) -> dict[str, str | None]:
        """``{"type": "cuda" | "mps" | "cpu", "name": ..., "cuda": the CUDA version or None}``: what
        commands running both backends compare before any work (``backends/device_check.py``)."""

    def resolve_dtype(self, requested: str, device: Any) -> str:
        """``auto`` is bfloat16 compute on a GPU that has it, float32 elsewhere."""

    def speed_settings(self, device: Any) -> dict[str, str]:
        """``device``, the compute threads and a float32 matmul's precision, in the words every
        backend uses (``backends.process.speed_settings`` adds the framework-free settings)."""

    def create_model(self, config: ModelConfig, weights: Weights | None = None, *, device: Any = "cpu",
                     param_dtype: str = "float32", attention: str = "fused", seed: int = 0) -> Any:
        """A GPT on ``device`` holding ``weights``, or nanoGPT's init drawn from ``seed``."""

    def export_weights(self, model: Any) -> Weights: ...

    def load_weights(self, model: Any, weights: Weights) -> None: ...


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (empty when it satisfies the protocol)."""
    names = [n for n in dir(protocol) if not n.startswith("_") or n == "__init__"]
    names += list(getattr(protocol, "__annotations__", {}))
    return sorted({n for n in names if not hasattr(obj, n)})

