"""Mixed precision checked against the truth: each backend at a low dtype against a float64 torch
computation from the same weights and batches (``microgpt parity --dtype bfloat16``, or
``--dtype float32 --against float64``).

Two frameworks in bfloat16 round at different points, so comparing them with each other says
little. Here each is compared with float64 instead, on the quantities of the pairwise suite —
eval-mode logits, the loss, every gradient, one AdamW update, the loss curve of a training run —
and on each block's attention weights (the softmax's output, captured by
``hooks.attention_weights``) and their row sums: rounded to bfloat16, a softmax's rows miss 1 by
its round-off, whatever the scores' own error. A backend passes when

* its error is within the dtype's budget (``tolerances.REFERENCE_BUDGETS``), and
* its error and the other backend's are of the same size: within ``ERROR_RATIO`` (3×) of each
  other, each error first raised to the dtype's floor (``RATIO_FLOOR``), so that two errors at
  the level of round-off never fail on their ratio.

The error of a tensor ``a`` against the float64 truth ``r`` is normwise, ``‖a − r‖ / ‖r‖``
(Frobenius norms), so that one rounded entry out of thousands does not dominate it; tensors whose
true value is ~0 (the attention key bias has a zero gradient) are measured against 1e-3 of the
largest tensor's norm in the same quantity instead. A row's error is its worst tensor's (named);
for the gradients the ratio is taken tensor by tensor (``c_attn``'s query, key and value apart)
and the worst tensor's ratio is the row's.
"""

from __future__ import annotations

import math
import time

import numpy as np

from backends import BACKENDS, load_backend, process
from backends.device_check import resolve_in_process
from backends.parity import parity_overrides
from backends.parity.hooks import HOOKS
from backends.parity.report import ParityReport, Row
from backends.parity.session import synthetic_corpus
from backends.parity.tolerances import (ERROR_RATIO, RATIO_FLOOR, REFERENCE_BUDGETS, REFERENCE_DTYPES,
                                       TENSOR_RATIO_FLOOR)
from common.batches import BatchSampler
from common.config import PRESETS, build_configs, to_dict
from common.errors import UserError
from common.params import init_weights, param_layout

TRUTH = "torch"  # the float64 reference is computed by this backend
ZERO_FLOOR = 1e-3  # a tensor whose true norm is below this fraction of the quantity's largest


def split_qkv(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``c_attn`` holds three matrices (query, key, value rows, canonical ``(3C, C)`` layout): compared
    apart, since the query and key gradients are small beside the value's and would hide in it."""
    out = {}
    for name, value in tensors.items():
        if ".c_attn." in name and np.ndim(value) >= 1:
            for part, block in zip("qkv", np.split(np.asarray(value), 3, axis=0)):
                out[f"{name}[{part}]"] = block
        else:
            out[name] = value
    return out


def normwise_errors(truth: dict[str, np.ndarray], value: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per tensor: ``rel = ‖a − r‖ / max(‖r‖, ZERO_FLOOR · max ‖r‖)`` and ``abs = max |a − r|``."""
    norms = {k: float(np.linalg.norm(np.asarray(r, dtype=np.float64))) for k, r in truth.items()}
    floor = ZERO_FLOOR * max(norms.values(), default=0.0)
    out = {}
    for name, r in truth.items():
        r = np.asarray(r, dtype=np.float64)
        a = np.asarray(value[name], dtype=np.float64)
        if a.shape != r.shape or not np.isfinite(a).all():
            out[name] = {"rel": math.inf, "abs": math.inf}
            continue
        diff = a - r
        out[name] = {"rel": float(np.linalg.norm(diff)) / max(norms[name], floor, 1e-300),
                     "abs": float(np.max(np.abs(diff))) if diff.size else 0.0}
    return out


def error_rows(quantity: str, truth: dict, sides: dict[str, dict], dtype: str, budget_key: str,
               per_tensor: bool = False) -> list[Row]:
    """One row per backend (its error against float64, within the budget) and one for their ratio:
    of the row errors, or with ``per_tensor`` the worst ratio of any one tensor's errors."""
    budget = REFERENCE_BUDGETS[dtype][budget_key]
    # the gradients' tensors: a floor at the dtype's round-off; the attention weights are float32
    # in both backends whatever the dtype, so their errors are compared down to the row's floor
    floor = (TENSOR_RATIO_FLOOR if budget_key == "grads" else RATIO_FLOOR)[dtype]
    rows, errors, pers = [], {}, {}
    for name, value in sides.items():
        per = pers[name] = normwise_errors(truth, value)
        worst = max(per, key=lambda k: per[k]["rel"])
        err = per[worst]["rel"]
        errors[name] = err
        rows.append(Row(f"{quantity}: {name} vs float64", max(p["abs"] for p in per.values()), err,
                        f"rel {budget.rel:.0e}", err <= budget.rel, worst if len(per) > 1 else "", "", per))
    if len(sides) == 2:
        (na, ea), (nb, eb) = errors.items()
        pa, pb = pers.values()

        def ratio(x, y):
            return max(y, floor) / max(x, floor)

        worst, value = "", ratio(ea, eb)
        if per_tensor:  # the tensor whose two errors are furthest apart
            worst = max(pa, key=lambda k: abs(math.log(ratio(pa[k]["rel"], pb[k]["rel"]) or 1e-300)))
            value = ratio(pa[worst]["rel"], pb[worst]["rel"])
            ea, eb = pa[worst]["rel"], pb[worst]["rel"]
        ok = math.isfinite(value) and 1 / ERROR_RATIO <= value <= ERROR_RATIO
        rows.append(Row(f"{quantity}: {nb}/{na} error ratio", value, value,
                        f"within {ERROR_RATIO:g}x (floor {floor:.0e})", ok, worst,
                        f"{na} {ea:.2e}, {nb} {eb:.2e}", {na: errors[na], nb: errors[nb]}))
    return rows


class Measured:
    """Everything the checks compare, computed by one trainer from the shared weights and batches."""

    def __init__(self, trainer, hooks, w0: dict, x: np.ndarray, y: np.ndarray, run_batches: list, zero_state: dict):
        def fresh():
            trainer.load_weights(w0)
            trainer.load_optimizer_state(zero_state)

        fresh()
        self.logits = {"logits": np.asarray(trainer.logits(x), dtype=np.float64)}
        self.attention = hooks.attention_weights(trainer, x)  # each block's softmax output
        # its rows sum to 1 within the softmax's own round-off, whatever the scores' error
        self.row_sums = {name: w.sum(axis=-1) for name, w in self.attention.items()}
        loss, grads = trainer.loss_and_grads(x, y)
        self.loss = {"loss": float(loss)}
        self.grads = grads
        trainer.step(x, y)
        after = trainer.weights()
        self.update = {k: np.asarray(after[k], np.float64) - np.asarray(w0[k], np.float64) for k in after}
        fresh()
        self.curve = {f"step {i}": float(trainer.step(bx, by)) for i, (bx, by) in enumerate(run_batches)}


def _zero_state(mc, dtype) -> dict:
    state = {"step": np.asarray(0, dtype=np.int64)}
    for spec in param_layout(mc):
        for key in ("exp_avg", "exp_avg_sq"):
            state[f"{key}/{spec.name}"] = np.zeros(spec.shape, dtype=dtype)
    return state


def run_reference(dtype: str = "bfloat16", preset: str = "tiny", seed: int = 0, *, steps: int = 50,
                  backends: tuple[str, ...] = ("torch", "jax"), device: str = "auto", attention: str = "fused",
                  model_overrides: dict | None = None, train_overrides: dict | None = None,
                  reuse: dict | None = None) -> ParityReport:
    """Each backend at ``dtype`` against torch in float64, from the same weights and batches.

    ``reuse`` (a dict the caller keeps) holds the measurements of the sides named in
    ``reuse["keep"]`` (e.g. ``{"keep": {"float64", "torch"}}``) from one call to the next with the
    same arguments: tests that inject a bug into one backend recompute only that one."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if dtype not in REFERENCE_DTYPES:
        raise UserError(f"--against float64 checks {' or '.join(REFERENCE_DTYPES)}, not {dtype!r}")
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    for name in backends:
        if name not in BACKENDS:
            raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    mc, tc = build_configs(preset, parity_overrides(dtype, seed, model_overrides, train_overrides, device, attention))
    overrides = parity_overrides("float64", seed, model_overrides, train_overrides, device, attention)
    _, tc64 = build_configs(preset, overrides)
    resolve_in_process((TRUTH, *backends), device)  # one device type for all, or one line, before any work
    start = time.perf_counter()
    data = synthetic_corpus(mc.vocab_size, seed=seed)
    x, y = BatchSampler(data, tc.batch_size, mc.block_size, seed + 100).get_batch("train")
    sampler = BatchSampler(data, tc.batch_size, mc.block_size, seed)
    run_batches = [sampler.get_batch("train") for _ in range(steps)]
    w32 = init_weights(mc, seed, dtype=np.float32)
    w64 = {k: v.astype(np.float64) for k, v in w32.items()}  # the same numbers
    measured = {}
    reuse = {} if reuse is None else reuse
    key = (dtype, preset, seed, steps, attention, device, repr(sorted(overrides.items())))

    def measure(name, mod_name, config, weights, state_dtype):
        mod = load_backend(mod_name)
        if name in reuse.get("keep", ()) and (name, key) in reuse:
            return reuse[name, key]
        with process.settings(mod, config):
            result = Measured(mod.Trainer(mc, config, weights), HOOKS[mod_name](), weights, x, y, run_batches,
                              _zero_state(mc, state_dtype))
        if name in reuse.get("keep", ()):
            reuse[name, key] = result
        return result

    truth = measure("float64", TRUTH, tc64, w64, np.float64)
    for name in backends:
        measured[name] = measure(name, name, tc, w32, np.float32)
    rows: list[Row] = []
    for quantity, attr in (("logits", "logits"), ("attention weights", "attention"),
                           ("attention row sums", "row_sums"), ("loss", "loss"), ("grads", "grads"),
                           ("adam update", "update"), (f"{steps}-step loss curve", "curve")):
        budget_key = {"curve": "loss_curve", "row_sums": "attention_row_sums"}.get(attr, attr)
        # gradients: tensor by tensor (query, key and value apart), since a bug in one layer's
        # precision shows in its own parameters' gradients; the AdamW update is sign-dominated
        # (lr * g / |g| at the first step), so only its overall size is compared
        view = split_qkv if attr == "grads" else dict
        rows += error_rows(quantity, view(getattr(truth, attr)), {n: view(getattr(m, attr)) for n, m in measured.items()},
                           dtype, budget_key, per_tensor=attr in ("grads", "attention", "row_sums"))
    return ParityReport(rows, dtype, preset, seed, f"{TRUTH} float64", ", ".join(backends), steps, to_dict(mc),
                        to_dict(tc), time.perf_counter() - start)
