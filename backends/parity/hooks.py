"""What the parity suite needs from a framework beyond the ``Trainer`` contract: the model as
the framework initialises it natively, and each submodule as a numpy function.

Imported only once a session starts (``backends.cli`` must parse ``microgpt parity`` without
loading a framework).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np

from common.config import ModelConfig

Submodules = dict[str, Callable[[np.ndarray], np.ndarray]]


class TorchHooks:
    name = "torch"

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
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

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return train_mod.export_weights(model_mod.GPT(config))

    def submodules(self, trainer) -> Submodules:
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

    def attention_weights(self, trainer, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each block's attention weights — the softmax's output, (B, nh, T, T), as it enters
        attention dropout — from the Trainer's eval-mode forward (autocast included) on the manual
        attention path, the one with a softmax of its own."""
        blocks = trainer.model.transformer.h
        captured, handles, modes = {}, [], [block.attn.attention for block in blocks]

        def keep(i):
            def hook(module, args):
                captured[f"h.{i}"] = args[0].detach().double().cpu().numpy()
            return hook

        try:
            for i, block in enumerate(blocks):
                block.attn.attention = "manual"
                handles.append(block.attn.attn_dropout.register_forward_pre_hook(keep(i)))
            trainer.logits(x)
        finally:
            for handle in handles:
                handle.remove()
            for block, mode in zip(blocks, modes):
                block.attn.attention = mode
        return captured


class JaxHooks:
    name = "jax"

    def context(self) -> contextlib.AbstractContextManager[None]:
        """Nothing beyond the process settings (64-bit mode is one of them)."""
        return contextlib.nullcontext()

    def native_weights(self, config: ModelConfig, seed: int) -> dict[str, np.ndarray]:
        """The model as Flax builds it from its own initialisers and ``nnx.Rngs(seed)``."""
        from flax import nnx

        from backends.jax import model as model_mod, train as train_mod

        return train_mod.export_weights(model_mod.GPT(config, rngs=nnx.Rngs(seed)))

    def submodules(self, trainer) -> Submodules:
        import jax.numpy as jnp

        model = trainer.model
        tr = model.transformer
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

        subs = {"embeddings": wrap(lambda idx: tr.wte(idx) + tr.wpe(jnp.arange(idx.shape[1])))}
        for i, block in enumerate(tr.h):
            subs[f"h.{i}.ln_1"] = wrap(block.ln_1)
            subs[f"h.{i}.ln_2"] = wrap(block.ln_2)
            subs[f"h.{i}.attn"] = wrap(block.attn)
            subs[f"h.{i}.mlp"] = wrap(block.mlp)
            subs[f"h.{i}"] = wrap(block)
        subs["ln_f"] = wrap(tr.ln_f)
        subs["ln_f+lm_head"] = wrap(lambda x: tr.wte.attend(tr.ln_f(x)))
        return subs

    def attention_weights(self, trainer, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each block's attention weights — the softmax's output, (B, nh, T, T), as it enters
        attention dropout — from a jitted eval-mode forward on the manual attention path.
        [torch≠jax] NNX modules have no hooks: a module that sows its input stands in front of
        each attention dropout for the call, and ``nnx.capture`` collects what it kept."""
        import jax
        from flax import nnx

        class Capture(nnx.Module):
            def __init__(self, dropout):
                self.dropout = dropout

            def __call__(self, att):
                self.sow(nnx.Intermediate, "weights", att)
                return self.dropout(att)

        model = trainer.model
        blocks = model.transformer.h
        saved = [(block.attn.attn_dropout, block.attn.attention) for block in blocks]
        try:
            for block, (dropout, _) in zip(blocks, saved):
                block.attn.attn_dropout, block.attn.attention = Capture(dropout), "manual"
            model.eval()
            forward = nnx.jit(nnx.capture(lambda m, idx: m(idx)[0], nnx.Intermediate))
            _, kept = forward(model, trainer.to_device(x))
            # paths: ("transformer", "h", i, "attn", "attn_dropout", "weights")
            return {f"h.{path[2]}": np.asarray(jax.tree.leaves(value)[0], dtype=np.float64)
                    for path, value in nnx.to_flat_state(kept)}
        finally:
            for block, (dropout, mode) in zip(blocks, saved):
                block.attn.attn_dropout, block.attn.attention = dropout, mode
            model.train()


HOOKS = {"torch": TorchHooks, "jax": JaxHooks}
