"""The state the checks share: two trainers (reference and candidate) built once, the same
weights and batches for both, and the shared training run, computed once on first use.

Every check asks the session for the state it starts from (:meth:`Session.fresh`, the
canonical init; :meth:`Session.run`, the result of the training run; :meth:`Session.loaded`,
given weights) and never relies on what an earlier check left behind, so any subset of the
checks, in any order, gives the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backends import load_backend
from backends.parity.hooks import HOOKS
from backends.parity.tolerances import TOLERANCES
from common.batches import BatchSampler
from common.config import ModelConfig, TrainConfig
from common.params import init_weights, param_layout


def synthetic_corpus(vocab_size: int, n: int = 20_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Token ids from a random Markov chain: each token has 3 likely successors (90%) or any (10%),
    so the training run has something to learn, and no download is needed."""
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


@dataclass
class RunResult:
    """Both sides of the shared training run: (reference, candidate) pairs."""

    losses: tuple[list[float], list[float]]
    lrs: tuple[list[float], list[float]]  # the learning rate each AdamW update applied
    weights: tuple[dict, dict]
    state: tuple[dict, dict]  # optimizer state after the run


class Session:
    def __init__(self, reference: str, candidate: str, model_config: ModelConfig, train_config: TrainConfig,
                 dtype: str, seed: int, steps: int, batch_size: int | None = None, seq_len: int | None = None):
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
        self._pair = None
        self._run: RunResult | None = None

    # -- data ---------------------------------------------------------------------------------
    def label(self, side: int) -> str:
        return self.names[side]

    def sampler(self, offset: int) -> BatchSampler:
        return BatchSampler(self.data, self.tc.batch_size, self.mc.block_size, self.seed + offset)

    def batch(self, offset: int = 100) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.sampler(offset).get_batch("train")
        return np.ascontiguousarray(x[:self.B, :self.T]), np.ascontiguousarray(y[:self.B, :self.T])

    # -- the trainers, in the state a check starts from ---------------------------------------------
    def pair(self):
        """The two trainers, built once (a JAX trainer compiles its step on first use)."""
        if self._pair is None:
            self._pair = tuple(mod.Trainer(self.mc, self.tc, weights=self.w0) for mod in self.mods)
        return self._pair

    def fresh(self):
        """Both trainers at the canonical init with an empty optimizer (zero moments, step 0)."""
        zero = {"step": np.asarray(0, dtype=np.int64)}
        for spec in param_layout(self.mc):
            for key in ("exp_avg", "exp_avg_sq"):
                zero[f"{key}/{spec.name}"] = np.zeros(spec.shape, dtype=self.np_dtype)
        for trainer in self.pair():
            trainer.load_weights(self.w0)
            trainer.load_optimizer_state(zero)
        return self.pair()

    def loaded(self, weights: dict[str, np.ndarray]):
        """Both trainers holding ``weights`` (the optimizer state is not used by such checks)."""
        for trainer in self.pair():
            trainer.load_weights(weights)
        return self.pair()

    def run(self) -> RunResult:
        """The shared training run: ``steps`` AdamW steps from the canonical init on the same
        batches, on both sides (computed once, on first use)."""
        if self._run is None:
            pair = self.fresh()
            sampler = self.sampler(0)
            undecayed = [s.name for s in param_layout(self.mc) if not s.decay]
            losses, lrs = ([], []), ([], [])
            before = [{n: tr.weights()[n] for n in undecayed} for tr in pair]
            for _ in range(self.steps):
                x, y = sampler.get_batch("train")
                for side, tr in enumerate(pair):
                    losses[side].append(float(tr.step(x, y)))
                    after = tr.weights()
                    lrs[side].append(applied_lr(before[side], after, tr.optimizer_state(), undecayed, self.tc))
                    before[side] = {n: after[n] for n in undecayed}
            self._run = RunResult(losses, lrs, tuple(tr.weights() for tr in pair),
                                  tuple(tr.optimizer_state() for tr in pair))
        return self._run


def applied_lr(before: dict, after: dict, state: dict, names: list[str], tc: TrainConfig) -> float:
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
