"""The parity suite: do the PyTorch and the JAX backends compute the same model?

Both backends start from the same canonical weights (``common.params.init_weights``) and
are fed the same batches (``common.batches.BatchSampler``); the suite then compares, one
row per quantity, the torch backend (the *reference*) with the JAX backend (the
*candidate*):

========================  ==============================================================
``forward``               eval-mode logits, the loss, the gradient of every parameter
``adam``                  one AdamW step: parameters (decayed / not decayed), both moments
``run``                   a ``steps``-step training run on shared batches: the loss at every
                          step and the final parameters
``schedule``              the learning rate at every step of the preset's full run
``eval``                  ``estimate_loss()`` on the same batches
``greedy``                greedy generation: identical tokens where the top-2 logit gap > 1e-3
``sampling``              temperature + top-k sampling fed the same uniforms: identical tokens
``crossload``             weights (and optimizer state) written by one backend through
                          ``common.checkpoint``, read by the other: same logits, same next step
``submodules``            embeddings, every LayerNorm, attention, MLP, block, final norm + head
``init``                  each backend's *native* initialisation against nanoGPT's std
========================  ==============================================================

Errors, per tensor ``a`` (candidate) against ``b`` (reference), both taken in float64:

* absolute error ``max|a - b|``;
* relative error ``max|a - b| / max|b|`` (normwise: the error against the tensor's scale,
  so that entries near zero do not blow it up);
* a tensor passes when ``max|a - b| <= atol + rtol * max|b|``; a row passes when every
  tensor in it passes, and names the tensor (or step, or position) closest to failing.

Tolerances depend on the dtype; :data:`TOLERANCES` gives each with its reason.
``microgpt parity`` (see :func:`add_parser`) and the pytest suite both call :func:`run_parity`.

This module imports no framework at import time: ``backends.cli`` imports it at startup.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from common.config import PRESETS, ModelConfig, TrainConfig, build_configs
from common.errors import UserError
from common.params import param_layout, init_weights

PARITY_DTYPES = ("float64", "float32")
CHECKS = ("forward", "adam", "run", "schedule", "eval", "greedy", "sampling", "crossload", "submodules", "init")
GREEDY_GAP = 1e-3  # greedy tokens are compared where the top-2 logit gap exceeds this
TINY = 1e-300  # floor of the denominator of a relative error
INIT_SIGMAS = 5.0  # native init: the sample std may miss the target by 5 standard errors


# ---------------------------------------------------------------------------------------
# Tolerances


@dataclass(frozen=True)
class Tol:
    atol: float
    rtol: float
    reason: str

    def bound(self, scale: float) -> float:
        return self.atol + self.rtol * scale

    def text(self) -> str:
        if self.rtol == 0:
            return f"abs {self.atol:.0e}"
        if self.atol == 0:
            return f"rel {self.rtol:.0e}"
        return f"abs {self.atol:.0e} + rel {self.rtol:.0e}"


_F64_ROUNDOFF = ("float64 round-off (eps 2.2e-16) through a few hundred dependent operations, "
                 "summed in a different order by each framework")
TOLERANCES: dict[str, dict[str, Tol]] = {
    "float64": {
        "logits": Tol(1e-10, 0.0, _F64_ROUNDOFF + "; logits are O(1)"),
        "loss": Tol(1e-10, 0.0, _F64_ROUNDOFF + "; the loss is O(1)"),
        "grads": Tol(1e-12, 1e-8, "gradients range over orders of magnitude: 1e-8 of each tensor's largest "
                                  "entry, plus 1e-12 for tensors whose gradient is ~0"),
        "adam_params": Tol(1e-12, 0.0, "one step moves a weight by <= lr; its round-off is that of the "
                                       "O(1) weights (1e-16), far below 1e-12"),
        "adam_moments": Tol(1e-12, 1e-8, "the moments are (1-beta1)g and (1-beta2)g^2: the gradients' own "
                                         "tolerance"),
        "loss_curve": Tol(1e-9, 0.0, "round-off compounds over 50 steps of Adam, which divides by "
                                     "sqrt(v): small gradient differences become larger update differences"),
        "final_params": Tol(1e-9, 0.0, "as the loss curve: 50 compounding steps"),
        "lr": Tol(0.0, 1e-12, "both schedules are the same closed form in Python floats"),
        "lr_applied": Tol(0.0, 1e-8, "lr = update / (m_hat / (sqrt(v_hat) + eps)), each side from its own "
                                     "update: float64 round-off of a difference of O(1e-3) weights"),
        "estimate_loss": Tol(1e-10, 0.0, "a mean of losses, each within 1e-10"),
        "crossload": Tol(1e-10, 0.0, "the checkpoint stores float64 exactly: the logits' own tolerance"),
        "submodule": Tol(1e-10, 0.0, "one layer's round-off, inputs O(1) (LayerNorm also gets inputs "
                                     "with mean 1e4, which exposes a one-pass E[x^2]-E[x]^2 variance)"),
    },
    "float32": {
        "logits": Tol(1e-5, 0.0, "float32 round-off (eps 1.2e-7) over the network's depth and width; "
                                 "logits are O(1)"),
        "loss": Tol(1e-5, 0.0, "float32 round-off; the loss is O(1)"),
        "grads": Tol(1e-9, 1e-5, "1e-5 of each tensor's largest gradient: backward sums in different "
                                 "orders; 1e-9 for gradients that are ~0"),
        "adam_params": Tol(1e-5, 0.0, "AdamW's step is lr*m_hat/(sqrt(v_hat)+eps), about lr*g/(|g|+eps) at first: "
                                      "for the few gradients within ~100 eps of zero, their float32 round-off "
                                      "(~1e-9) moves the update by up to a few % of lr (3e-4 here)"),
        "adam_moments": Tol(1e-12, 2e-5, "the moments are (1-beta1)g and (1-beta2)g^2: twice the "
                                         "gradients' relative tolerance"),
        "loss_curve": Tol(1e-4, 0.0, "float32 round-off compounding over 50 Adam steps"),
        "final_params": Tol(1e-4, 0.0, "float32 round-off compounding over 50 Adam steps"),
        "lr": Tol(0.0, 1e-12, "both schedules are the same closed form in Python floats"),
        "lr_applied": Tol(0.0, 1e-3, "lr = update / (m_hat / (sqrt(v_hat) + eps)), each side from its own "
                                     "update: float32 round-off of a weight difference ~1e-4 of the weight"),
        "estimate_loss": Tol(1e-5, 0.0, "a mean of losses, each within 1e-5"),
        "crossload": Tol(1e-5, 0.0, "the checkpoint stores float32 exactly: the logits' own tolerance"),
        "submodule": Tol(1e-5, 0.0, "one layer's float32 round-off, inputs O(1) (LayerNorm also gets "
                                    "inputs with mean 3: centring costs mean * 1.2e-7 per element)"),
    },
}
LN_STRESS_MEAN = {"float64": 1e4, "float32": 3.0}
SAMPLING_MARGIN = {"float64": 1e-9, "float32": 1e-4}  # a uniform this close to a CDF step is a near-tie


# ---------------------------------------------------------------------------------------
# Rows and the report


@dataclass
class Row:
    """One compared quantity."""

    quantity: str
    max_abs: float
    max_rel: float
    tolerance: str
    passed: bool
    worst: str = ""  # the tensor / step / position closest to (or furthest past) its tolerance
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = f" (worst: {self.worst})" if self.worst else ""
        note = f"; {self.note}" if self.note else ""
        return (f"{self.quantity}: max abs {_fmt(self.max_abs)}, max rel {_fmt(self.max_rel)}, "
                f"tolerance {self.tolerance}{where}{note}")


@dataclass
class ParityReport:
    rows: list[Row]
    dtype: str
    preset: str
    seed: int
    reference: str
    candidate: str
    steps: int
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    seconds: float = 0.0

    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed()

    def row(self, quantity: str) -> Row:
        for r in self.rows:
            if r.quantity == quantity:
                return r
        raise KeyError(f"no row {quantity!r}; rows: {[r.quantity for r in self.rows]}")

    def failed_quantities(self) -> list[str]:
        return [r.quantity for r in self.failed()]

    def format_table(self) -> str:
        header = ("quantity", "max abs err", "max rel err", "tolerance", "result", "worst")
        body = [(r.quantity, _fmt(r.max_abs), _fmt(r.max_rel), r.tolerance, "pass" if r.passed else "FAIL",
                 "; ".join(x for x in (r.worst, r.note) if x)) for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
        lines = [
            f"parity: {self.reference} (reference) vs {self.candidate}, {self.dtype}, preset {self.preset}, "
            f"seed {self.seed}",
            "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
        failed = self.failed()
        lines.append(f"{len(self.rows) - len(failed)}/{len(self.rows)} quantities within tolerance "
                     f"({self.seconds:.1f} s)")
        for r in failed:
            lines.append("FAIL " + r.describe())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "candidate": self.candidate, "dtype": self.dtype,
            "preset": self.preset, "seed": self.seed, "steps": self.steps, "passed": self.passed,
            "seconds": round(self.seconds, 3), "model_config": self.model_config,
            "train_config": self.train_config,
            "tolerances": {k: asdict(v) for k, v in TOLERANCES[self.dtype].items()},
            "error_definition": "per tensor: abs = max|a-b|, rel = max|a-b| / max|b| (b = reference); "
                                "passes when abs <= atol + rtol * max|b|",
            "rows": [asdict(r) for r in self.rows],
        }


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.2e}"


def compare(quantity: str, reference: dict[str, Any], candidate: dict[str, Any], tol: Tol,
            note: str = "") -> Row:
    """Compare two dicts of arrays tensor by tensor (see the module docstring for the errors)."""
    details: dict[str, Any] = {}
    worst, worst_ratio, max_abs, max_rel, passed = "", -1.0, 0.0, 0.0, True
    missing = sorted(set(reference) ^ set(candidate))
    for name in reference:
        if name not in candidate:
            continue
        b = np.asarray(reference[name], dtype=np.float64)
        a = np.asarray(candidate[name], dtype=np.float64)
        if a.shape != b.shape:
            abs_err, scale = math.inf, float(np.max(np.abs(b))) if b.size else 0.0
            details[name] = {"abs": abs_err, "rel": math.inf, "note": f"shape {a.shape} vs {b.shape}"}
        else:
            with np.errstate(invalid="ignore"):
                diff = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities count as equal
            diff = np.where(np.isnan(diff), math.inf, diff)
            abs_err = float(np.max(diff)) if diff.size else 0.0
            scale = float(np.max(np.abs(b[np.isfinite(b)]))) if np.isfinite(b).any() else 0.0
            details[name] = {"abs": abs_err, "rel": abs_err / max(scale, TINY)}
        bound = tol.bound(scale)
        ratio = (0.0 if abs_err == 0 else math.inf) if bound == 0 else abs_err / bound
        ok = abs_err <= bound
        passed &= ok
        max_abs = max(max_abs, abs_err)
        max_rel = max(max_rel, details[name]["rel"])
        if ratio > worst_ratio:
            worst, worst_ratio = name, ratio
    if missing:
        passed = False
        note = (note + "; " if note else "") + f"missing on one side: {', '.join(missing)}"
    return Row(quantity, max_abs, max_rel, tol.text(), passed, worst if len(reference) > 1 and max_abs > 0 else "",
               note, details)


def _scalars(values: Iterable[float], label: str) -> dict[str, float]:
    return {f"{label} {i}": float(v) for i, v in enumerate(values)}


# ---------------------------------------------------------------------------------------
# What differs between the frameworks: kept behind two small hook objects


class _TorchHooks:
    name = "torch"

    @contextlib.contextmanager
    def context(self, dtype: str):
        """One intra-op thread for the duration: the suite's models are small, and torch's thread
        pool spin-waiting beside XLA's (or on a busy machine) made steps 30x slower. Restored after."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def native_weights(self, config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
        """The model as torch's own ``GPT.__init__`` initialises it (``_init_weights``)."""
        import torch

        from backends.torch import model as model_mod, train as train_mod

        torch.manual_seed(seed)
        return train_mod.export_weights(model_mod.GPT(config))

    def submodules(self, trainer) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        import torch

        model = trainer.model
        p = next(model.parameters())
        tr = model.transformer

        def wrap(fn):
            def call(x: np.ndarray) -> np.ndarray:
                was_training = model.training
                model.eval()
                try:
                    with torch.no_grad():
                        t = torch.as_tensor(np.asarray(x), device=p.device)
                        t = t.to(p.dtype) if t.is_floating_point() else t.long()
                        return fn(t).detach().cpu().numpy()
                finally:
                    model.train(was_training)
            return call

        subs = {"embeddings": wrap(lambda idx: tr.wte(idx) + tr.wpe(torch.arange(idx.shape[1], device=p.device)))}
        for i, block in enumerate(tr.h):
            subs[f"h.{i}.ln_1"] = wrap(block.ln_1)
            subs[f"h.{i}.ln_2"] = wrap(block.ln_2)
            subs[f"h.{i}.attn"] = wrap(block.attn)
            subs[f"h.{i}.mlp"] = wrap(block.mlp)
            subs[f"h.{i}"] = wrap(block)
        subs["ln_f"] = wrap(tr.ln_f)
        subs["ln_f+lm_head"] = wrap(lambda x: model.lm_head(tr.ln_f(x)))
        return subs


class _JaxHooks:
    name = "jax"

    @contextlib.contextmanager
    def context(self, dtype: str):
        """float64 needs x64 in JAX; switched on for this block only, so it does not leak."""
        import jax

        state = jax._src.config.enable_x64
        before = state.get_global()
        try:
            with jax.enable_x64(dtype == "float64"):
                yield
        finally:
            if state.get_global() != before:
                jax.config.update("jax_enable_x64", before)

    def native_weights(self, config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
        """The model as Flax builds it from its own initialisers and ``nnx.Rngs(seed)``."""
        from flax import nnx

        from backends.jax import model as model_mod, train as train_mod

        return train_mod.export_weights(model_mod.GPT(config, rngs=nnx.Rngs(seed)))

    def submodules(self, trainer) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        import jax.numpy as jnp

        model = trainer.model
        tr = getattr(model, "transformer", model)
        dtype = jnp.asarray(tr.wte.embedding[...]).dtype

        def wrap(fn):
            def call(x: np.ndarray) -> np.ndarray:
                x = np.asarray(x)
                a = jnp.asarray(x, dtype=dtype) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x, jnp.int32)
                model.eval()
                try:
                    return np.asarray(fn(a))
                finally:
                    model.train()
            return call

        def head(x):
            h = tr.ln_f(x)
            return model.lm_head(h) if hasattr(model, "lm_head") else tr.wte.attend(h)

        subs = {"embeddings": wrap(lambda idx: tr.wte(idx) + tr.wpe(jnp.arange(idx.shape[1])))}
        for i, block in enumerate(tr.h):
            subs[f"h.{i}.ln_1"] = wrap(block.ln_1)
            subs[f"h.{i}.ln_2"] = wrap(block.ln_2)
            subs[f"h.{i}.attn"] = wrap(block.attn)
            subs[f"h.{i}.mlp"] = wrap(block.mlp)
            subs[f"h.{i}"] = wrap(block)
        subs["ln_f"] = wrap(tr.ln_f)
        subs["ln_f+lm_head"] = wrap(head)
        return subs


HOOKS = {"torch": _TorchHooks, "jax": _JaxHooks}


# ---------------------------------------------------------------------------------------
# Data: a synthetic corpus with structure (a sparse Markov chain), so the run learns something


def synthetic_corpus(vocab_size: int, n: int = 20_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids from a random Markov chain: each token has 3 likely successors (90%) or any (10%)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    successors = rng.integers(0, vocab_size, size=(vocab_size, 3))
    pick = rng.integers(0, 3, size=n)
    jump = rng.random(n) < 0.1
    anywhere = rng.integers(0, vocab_size, size=n)
    tokens = np.empty(n, dtype=np.int32)
    t = 0
    for i in range(n):
        t = anywhere[i] if jump[i] else successors[t, pick[i]]
        tokens[i] = t
    split = int(0.9 * n)
    return {"train": tokens[:split], "val": tokens[split:]}


# ---------------------------------------------------------------------------------------
# The suite


class _Session:
    def __init__(self, reference: str, candidate: str, model_config: ModelConfig, train_config: TrainConfig,
                 dtype: str, seed: int, steps: int, batch_size: int | None, seq_len: int | None):
        from backends import load_backend

        self.names = (reference, candidate)
        self.mods = (load_backend(reference), load_backend(candidate))
        self.hooks = (HOOKS[reference](), HOOKS[candidate]())
        self.mc, self.tc = model_config, train_config
        self.dtype, self.seed, self.steps = dtype, seed, steps
        self.tol = TOLERANCES[dtype]
        self.np_dtype = np.float64 if dtype == "float64" else np.float32
        self.data = synthetic_corpus(model_config.vocab_size, seed=seed)
        self.B = batch_size or train_config.batch_size
        self.T = seq_len or model_config.block_size
        self.w0 = init_weights(model_config, seed, dtype=self.np_dtype)
        self.rows: list[Row] = []
        self._pair = None  # (reference trainer, candidate trainer)
        self._stepped = False  # has the pair moved away from the canonical init?
        self._run = None  # the pair, once it has done the training run
        self.run_weights = None

    # -- helpers -----------------------------------------------------------------------------
    def label(self, side: int) -> str:
        return self.names[side]

    def trainers(self, weights=None):
        return tuple(mod.Trainer(self.mc, self.tc, weights=self.w0 if weights is None else weights)
                     for mod in self.mods)

    def sampler(self, offset: int):
        from common.batches import BatchSampler

        return BatchSampler(self.data, self.tc.batch_size, self.mc.block_size, self.seed + offset)

    def batch(self, offset: int = 100):
        x, y = self.sampler(offset).get_batch("train")
        return np.ascontiguousarray(x[:self.B, :self.T]), np.ascontiguousarray(y[:self.B, :self.T])

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def pair(self):
        """The two trainers: created once (JAX compiles per trainer), reset for the run."""
        if self._pair is None:
            self._pair = self.trainers()
            self._stepped = False
        return self._pair

    def fresh_pair(self):
        """Trainers at the canonical init with an empty optimizer: new ones, or the existing ones
        reset through the interface (load_weights + load_optimizer_state of zero moments at step 0)."""
        pair = self.pair()
        if self._stepped:
            zero = {"step": np.asarray(0, dtype=np.int64)}
            for spec in param_layout(self.mc):
                for key in ("exp_avg", "exp_avg_sq"):
                    zero[f"{key}/{spec.name}"] = np.zeros(spec.shape, dtype=self.np_dtype)
            for tr in pair:
                tr.load_weights(self.w0)
                tr.load_optimizer_state(zero)
            self._stepped = False
        return pair

    def trained(self):
        """Both trainers after the shared training run (run once, on first use)."""
        if self._run is None:
            pair = self.fresh_pair()
            self._stepped = True
            sampler = self.sampler(0)
            undecayed = [s.name for s in param_layout(self.mc) if not s.decay]
            losses, lrs = ([], []), ([], [])
            before = [{n: tr.weights()[n] for n in undecayed} for tr in pair]
            for _ in range(self.steps):
                x, y = sampler.get_batch("train")
                for side, tr in enumerate(pair):
                    losses[side].append(float(tr.step(x, y)))
                    after = tr.weights()
                    lrs[side].append(_applied_lr(before[side], after, tr.optimizer_state(), undecayed, self.tc))
                    before[side] = {n: after[n] for n in undecayed}
            self._run = pair
            self.run_losses, self.run_lrs = losses, lrs
            self.run_weights = tuple(tr.weights() for tr in pair)
            self.run_state = tuple(tr.optimizer_state() for tr in pair)
        return self._run

    # -- the checks --------------------------------------------------------------------------
    def check_forward(self):
        ref, cand = self.fresh_pair()
        x, y = self.batch()
        self.add(compare("logits", {"logits": ref.logits(x)}, {"logits": cand.logits(x)}, self.tol["logits"]))
        (loss_r, grads_r), (loss_c, grads_c) = ref.loss_and_grads(x, y), cand.loss_and_grads(x, y)
        self.add(compare("loss", {"loss": loss_r}, {"loss": loss_c}, self.tol["loss"]))
        self.add(compare("grads", grads_r, grads_c, self.tol["grads"],
                         note=f"{len(grads_r)} tensors"))

    def check_adam(self):
        ref, cand = self.fresh_pair()
        self._stepped = True
        x, y = self.batch()
        ref.step(x, y)
        cand.step(x, y)
        w_r, w_c = ref.weights(), cand.weights()
        decayed = {s.name for s in param_layout(self.mc) if s.decay}
        for label, names in (("decayed", decayed), ("not decayed", set(w_r) - decayed)):
            self.add(compare(f"adam step: params ({label})", {n: w_r[n] for n in w_r if n in names},
                             {n: w_c[n] for n in w_c if n in names}, self.tol["adam_params"],
                             note=f"{len(names)} tensors"))
        s_r, s_c = ref.optimizer_state(), cand.optimizer_state()
        for key in ("exp_avg", "exp_avg_sq"):
            self.add(compare(f"adam step: {key}", {k: v for k, v in s_r.items() if k.startswith(key + "/")},
                             {k: v for k, v in s_c.items() if k.startswith(key + "/")}, self.tol["adam_moments"]))
        self.add(compare("adam step: step count", {"step": s_r["step"]}, {"step": s_c["step"]}, Tol(0, 0, "exact")))

    def check_run(self):
        self.trained()
        curve_r, curve_c = self.run_losses
        self.add(compare(f"{self.steps}-step loss curve", _scalars(curve_r, "step"), _scalars(curve_c, "step"),
                         self.tol["loss_curve"]))
        self.add(compare(f"{self.steps}-step final params", self.run_weights[0], self.run_weights[1],
                         self.tol["final_params"]))
        self.add(compare(f"lr applied in the {self.steps}-step run", _scalars(self.run_lrs[0], "step"),
                         _scalars(self.run_lrs[1], "step"), self.tol["lr_applied"],
                         note="inferred from each AdamW update"))

    def check_schedule(self):
        ref_mod, cand_mod = self.mods
        n = max(self.tc.max_iters, self.tc.lr_decay_iters) + 10
        self.add(compare("lr schedule (get_lr)", _scalars((ref_mod.get_lr(i, self.tc) for i in range(n)), "step"),
                         _scalars((cand_mod.get_lr(i, self.tc) for i in range(n)), "step"), self.tol["lr"],
                         note=f"{n} steps"))

    def _load_trained(self):
        ref, cand = self.trained()
        for tr in (ref, cand):
            tr.load_weights(self.run_weights[0])
        return ref, cand

    def check_eval(self):
        ref, cand = self._load_trained()
        eval_iters = self.tc.eval_iters
        est_r = ref.estimate_loss(self.sampler(200).get_batch, eval_iters)
        est_c = cand.estimate_loss(self.sampler(200).get_batch, eval_iters)
        self.add(compare("estimate_loss", est_r, est_c, self.tol["estimate_loss"], note=f"{eval_iters} batches/split"))

    def _prompts(self):
        x, _ = self.sampler(300).get_batch("val")
        return x[:2, :4]

    def _reference_logits(self, ref, seq: np.ndarray, start: int) -> np.ndarray:
        """The reference's next-token logits at every generated position: (n_new, B, V)."""
        out = []
        for t in range(start, seq.shape[1]):
            ctx = seq[:, :t][:, -self.mc.block_size:]
            out.append(np.asarray(ref.logits(ctx), dtype=np.float64)[:, -1, :])
        return np.stack(out)

    def _compare_tokens(self, quantity: str, seq_r, seq_c, start, ambiguous: np.ndarray) -> Row:
        """Walk each row until the sequences part: a split at a confident position is a mismatch;
        a split at a near-tie ends the comparison of that row (the contexts differ from then on)."""
        mismatches, compared, ties, first = 0, 0, 0, ""
        for b in range(seq_r.shape[0]):
            for i in range(seq_r.shape[1] - start):
                if seq_r[b, start + i] == seq_c[b, start + i]:
                    compared += 1
                    continue
                if ambiguous[i, b]:
                    ties += 1
                else:
                    mismatches += 1
                    compared += 1
                    first = first or f"row {b} token {i}: {seq_r[b, start + i]} vs {seq_c[b, start + i]}"
                break
        total = seq_r.shape[0] * (seq_r.shape[1] - start)
        note = f"{compared}/{total} tokens compared" + (f", {ties} row(s) stopped at a near-tie" if ties else "")
        return Row(quantity, float(mismatches), mismatches / max(compared, 1), "0 mismatches", mismatches == 0,
                   first, note, {"reference": seq_r.tolist(), "candidate": seq_c.tolist()})

    def check_greedy(self):
        ref, cand = self._load_trained()
        prompts = self._prompts()
        n = self.mc.block_size + 8  # past block_size: the context gets cropped
        seq_r = np.asarray(ref.generate(prompts, n, temperature=0))
        seq_c = np.asarray(cand.generate(prompts, n, temperature=0))
        logits = self._reference_logits(ref, seq_r, prompts.shape[1])
        top2 = np.sort(logits, axis=-1)[..., -2:]
        ambiguous = (top2[..., 1] - top2[..., 0]) <= GREEDY_GAP
        self.add(self._compare_tokens("greedy tokens", seq_r, seq_c, prompts.shape[1], ambiguous))

    def check_sampling(self):
        ref, cand = self._load_trained()
        prompts = self._prompts()
        n, temperature, top_k = self.mc.block_size + 8, 0.8, 10
        uniforms = np.random.Generator(np.random.PCG64(self.seed + 400)).random((n, prompts.shape[0]))
        seq_r = np.asarray(ref.generate(prompts, n, temperature=temperature, top_k=top_k, uniforms=uniforms))
        seq_c = np.asarray(cand.generate(prompts, n, temperature=temperature, top_k=top_k, uniforms=uniforms))
        # near-ties: a uniform within the margin of a CDF step, or a tie at the top-k cut
        logits = self._reference_logits(ref, seq_r, prompts.shape[1]) / temperature
        k = min(top_k, logits.shape[-1])
        ordered = np.sort(logits, axis=-1)[..., ::-1]
        kth = ordered[..., k - 1:k]
        masked = np.where(logits < kth, -np.inf, logits)
        probs = np.exp(masked - masked.max(-1, keepdims=True))
        cdf = np.cumsum(probs / probs.sum(-1, keepdims=True), axis=-1)
        margin = SAMPLING_MARGIN[self.dtype]
        ambiguous = (np.abs(cdf - uniforms[..., None]) <= margin).any(-1)
        if k < logits.shape[-1]:
            ambiguous |= (ordered[..., k - 1] - ordered[..., k]) <= margin
        self.add(self._compare_tokens(f"sampled tokens (T={temperature}, top-k={top_k})", seq_r, seq_c,
                                      prompts.shape[1], ambiguous))

    def check_crossload(self):
        from common.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
        from common.tokenizer import CharTokenizer

        trainers = self.trained()
        tokenizer = CharTokenizer([chr(0x4E00 + i) for i in range(self.mc.vocab_size)])
        x, y = self.batch(500)
        with tempfile.TemporaryDirectory(prefix="microgpt-parity-") as tmp:
            for writer in (0, 1):
                reader = 1 - writer
                w, r = trainers[writer], trainers[reader]
                w.load_weights(self.run_weights[writer])
                w.load_optimizer_state(self.run_state[writer])
                path = Path(tmp) / self.label(writer)
                save_checkpoint(path, Checkpoint(self.mc, self.tc, tokenizer, self.run_weights[writer],
                                                 optimizer=self.run_state[writer], step=self.steps,
                                                 backend=self.label(writer)))
                ckpt = load_checkpoint(path)
                r.load_weights(ckpt.weights)
                arrow = f"{self.label(writer)}→{self.label(reader)}"
                self.add(compare(f"cross-load {arrow}: logits", {"logits": w.logits(x)}, {"logits": r.logits(x)},
                                 self.tol["crossload"]))
                # resume: the reader continues with the writer's optimizer state, one step on both
                r.load_optimizer_state(ckpt.optimizer)
                w.step(x, y)
                r.step(x, y)
                self.add(compare(f"cross-load {arrow}: resumed step", w.weights(), r.weights(),
                                 self.tol["adam_params"]))

    def check_submodules(self):
        ref, cand = self.pair()
        self._stepped = True  # the weights change below
        rng = np.random.Generator(np.random.PCG64(self.seed + 600))
        weights = {}
        for spec in param_layout(self.mc):  # non-trivial norms and biases, so that they count
            w = self.w0[spec.name]
            if spec.kind == "norm":
                w = 1.0 + 0.1 * rng.standard_normal(spec.shape)
            elif spec.kind == "bias":
                w = 0.1 * rng.standard_normal(spec.shape)
            weights[spec.name] = np.asarray(w, dtype=self.np_dtype)
        for tr in (ref, cand):
            tr.load_weights(weights)
        subs_r, subs_c = self.hooks[0].submodules(ref), self.hooks[1].submodules(cand)
        C = self.mc.n_embd
        idx, _ = self.batch(700)
        x = rng.standard_normal((idx.shape[0], idx.shape[1], C)).astype(self.np_dtype)
        stress = (LN_STRESS_MEAN[self.dtype] + rng.standard_normal(x.shape)).astype(self.np_dtype)
        tol = self.tol["submodule"]

        def one(name, inp):
            return {name: subs_r[name](inp)}, {name: subs_c[name](inp)}

        self.add(compare("sub: embeddings", *one("embeddings", idx), tol))
        norms_r, norms_c = {}, {}
        for name in [n for n in subs_r if n.endswith(("ln_1", "ln_2")) or n == "ln_f"]:
            for label, inp in (("", x), (f" (mean {LN_STRESS_MEAN[self.dtype]:g})", stress)):
                norms_r[name + label], norms_c[name + label] = subs_r[name](inp), subs_c[name](inp)
        self.add(compare("sub: layernorms", norms_r, norms_c, tol, note=f"{len(norms_r)} cases"))
        for i in range(self.mc.n_layer):
            for part in ("attn", "mlp"):
                self.add(compare(f"sub: h.{i}.{part}", *one(f"h.{i}.{part}", x), tol))
            self.add(compare(f"sub: h.{i} (block)", *one(f"h.{i}", x), tol))
        self.add(compare("sub: ln_f + lm_head", *one("ln_f+lm_head", x), tol))

    def check_init(self):
        for side in (0, 1):
            self.add(init_std_row(f"native init std ({self.label(side)})",
                                  self.hooks[side].native_weights(self.mc, self.seed), self.mc))


def _applied_lr(before: dict, after: dict, state: dict, names: list[str], tc: TrainConfig) -> float:
    """The learning rate an AdamW step used, read back from the update of a parameter without weight
    decay: delta = lr * m_hat / (sqrt(v_hat) + eps), with m_hat, v_hat the bias-corrected moments
    after the step. Taken at the element whose update is largest next to its value (best precision)."""
    t = int(state["step"])
    best, best_score = math.nan, -1.0
    for name in names:
        p0 = np.asarray(before[name], dtype=np.float64)
        p1 = np.asarray(after[name], dtype=np.float64)
        m_hat = np.asarray(state[f"exp_avg/{name}"], dtype=np.float64) / (1 - tc.beta1 ** t)
        v_hat = np.asarray(state[f"exp_avg_sq/{name}"], dtype=np.float64) / (1 - tc.beta2 ** t)
        r = m_hat / (np.sqrt(v_hat) + 1e-8)
        score = np.abs(r) / np.maximum(np.maximum(np.abs(p0), np.abs(p1)), 1e-30)
        i = int(np.argmax(score))
        if score.flat[i] > best_score and r.flat[i] != 0:
            best, best_score = float((p0.flat[i] - p1.flat[i]) / r.flat[i]), float(score.flat[i])
    return best


def init_std_row(quantity: str, weights: dict[str, np.ndarray], config: ModelConfig) -> Row:
    """A backend's own initialisation against ``common.params``: every random tensor's sample std
    within INIT_SIGMAS standard errors (std/sqrt(2n)) of its init_std, and mean within INIT_SIGMAS
    std/sqrt(n) of 0; biases exactly 0 and LayerNorm weights exactly 1."""
    details, worst, worst_z, max_abs, max_rel, passed = {}, "", -1.0, 0.0, 0.0, True
    for spec in param_layout(config):
        w = np.asarray(weights[spec.name], dtype=np.float64)
        if w.shape != spec.shape:
            details[spec.name] = {"note": f"shape {w.shape}, expected {spec.shape}"}
            passed, worst, worst_z = False, spec.name, math.inf
            continue
        if spec.init_std == 0:
            target = 1.0 if spec.kind == "norm" else 0.0
            abs_err = float(np.max(np.abs(w - target)))
            rel, z = abs_err / max(target, 1.0), (math.inf if abs_err else 0.0)
        else:
            n = w.size
            std, mean = float(w.std()), float(w.mean())
            abs_err, rel = abs(std - spec.init_std), abs(std / spec.init_std - 1.0)
            z = max(rel / math.sqrt(1.0 / (2 * n)), abs(mean) / (spec.init_std / math.sqrt(n)))
            details[spec.name] = {"std": std, "expected_std": spec.init_std, "mean": mean}
        details.setdefault(spec.name, {}).update({"abs": abs_err, "rel": rel, "z": z})
        ok = z <= INIT_SIGMAS
        passed &= ok
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel)
        if z > worst_z:
            worst, worst_z = spec.name, z
    return Row(quantity, max_abs, max_rel, f"std within {INIT_SIGMAS:g} std. errors", passed, worst,
               f"worst at {worst_z:.1f} std. errors", details)


def make_configs(preset: str, dtype: str, seed: int, model_overrides: dict | None = None,
                 train_overrides: dict | None = None, device: str = "auto",
                 attention: str = "fused") -> tuple[ModelConfig, TrainConfig]:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if dtype not in PARITY_DTYPES:
        hint = (" (bfloat16 is out of scope: the frameworks round in different places, see the README)"
                if dtype == "bfloat16" else "")
        raise UserError(f"unknown parity dtype {dtype!r}{hint}; choose one of: {', '.join(PARITY_DTYPES)}")
    overrides = dict(model_overrides or {})
    overrides.update(train_overrides or {})
    overrides.update(dtype=dtype, seed=seed, tf32=False, compile=False, device=device, attention=attention)
    return build_configs(preset, overrides)


def run_parity(dtype: str = "float64", preset: str = "tiny", seed: int = 0, *, steps: int = 50,
               checks: Iterable[str] | None = None, reference: str = "torch", candidate: str = "jax",
               model_overrides: dict | None = None, train_overrides: dict | None = None,
               batch_size: int | None = None, seq_len: int | None = None, device: str = "auto",
               attention: str = "fused") -> ParityReport:
    """Run the suite (or the ``checks`` named, in :data:`CHECKS`) and return its report."""
    checks = list(CHECKS if checks is None else checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise UserError(f"unknown check(s) {', '.join(unknown)}; choose from: {', '.join(CHECKS)}")
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    for name in (reference, candidate):
        if name not in HOOKS:
            raise UserError(f"unknown backend {name!r}; choose one of: {', '.join(HOOKS)}")
    mc, tc = make_configs(preset, dtype, seed, model_overrides, train_overrides, device, attention)
    if seq_len is not None and not 1 <= seq_len <= mc.block_size:
        raise UserError(f"sequence length {seq_len} must be in 1..block_size={mc.block_size}")
    if batch_size is not None and not 1 <= batch_size <= tc.batch_size:
        raise UserError(f"batch size {batch_size} must be in 1..{tc.batch_size}")
    start = time.perf_counter()
    session = _Session(reference, candidate, mc, tc, dtype, seed, steps, batch_size, seq_len)
    with contextlib.ExitStack() as stack:
        for hooks in {h.name: h for h in session.hooks}.values():
            stack.enter_context(hooks.context(dtype))
        for check in CHECKS:  # always in the canonical order
            if check in checks:
                getattr(session, f"check_{check}")()
    from common.config import to_dict

    return ParityReport(session.rows, dtype, preset, seed, reference, candidate, steps, to_dict(mc), to_dict(tc),
                        time.perf_counter() - start)


# ---------------------------------------------------------------------------------------
# The command line: microgpt parity


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "parity", help="check that the torch and jax backends compute the same model",
        description="Compare the PyTorch and the JAX backend from identical weights and batches: logits, loss, "
                    "gradients, an AdamW step, a training run, the lr schedule, estimate_loss, generation, "
                    "checkpoint cross-loading, every submodule and the native initialisation. Prints a table and "
                    "exits 1 if any quantity is out of tolerance.")
    p.add_argument("--dtype", default="float64", help=f"{' or '.join(PARITY_DTYPES)} (default float64)")
    p.add_argument("--preset", default="tiny", help=f"model and training config: {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--seed", type=int, default=0, help="weights, batches and random numbers (default 0)")
    p.add_argument("--steps", type=int, default=50, help="length of the shared training run (default 50)")
    p.add_argument("--checks", default=None, help=f"comma-separated subset of: {', '.join(CHECKS)} (default all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda/gpu (default auto)")
    p.add_argument("--attention", default="fused", help="fused or manual attention (default fused)")
    p.add_argument("--reference", default="torch", help="backend to compare against (default torch)")
    p.add_argument("--candidate", default="jax", help="backend under test (default jax)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the full report, per tensor, as JSON")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    checks = None if args.checks is None else [c.strip() for c in args.checks.split(",") if c.strip()]
    report = run_parity(args.dtype, args.preset, args.seed, steps=args.steps, checks=checks,
                        reference=args.reference, candidate=args.candidate, device=args.device,
                        attention=args.attention)
    print(report.format_table())
    if args.json:
        path = Path(args.json)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report.to_dict(), indent=1, default=_json_default) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {str(path)!r} ({exc.strerror}); choose another --json path") from None
    return 0 if report.passed else 1


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
