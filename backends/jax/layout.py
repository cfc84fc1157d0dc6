"""The canonical parameter layout of ``common.params`` <-> Flax NNX's parameter tree.

Canonical names are nanoGPT's state-dict names and canonical shapes are PyTorch's, so the
torch backend needs no adapter. Flax names a parameter by its path in the module tree
(``transformer.h.0.attn.c_attn.weight`` is ``("transformer", "h", 0, "attn", "c_attn",
"kernel")``) and stores a Linear's kernel ``(in, out)``, transposed. Everything here works on
any tree shaped like the parameters: the parameters themselves, their gradients, and AdamW's
moments (optax's ``mu`` and ``nu``); and the dropout streams' random state. Arrays are always copied on the way in and out, so a
checkpoint never shares memory with a device buffer (or with a torch tensor).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from backends.jax.parallel import host_array
from common.config import ModelConfig
from common.params import ParamSpec, param_layout

# the last element of a Flax path, by the canonical kind of the parameter
_FLAX_LEAF = {"embedding": "embedding", "linear": "kernel", "bias": "bias", "norm": "scale"}


def flax_path(spec: ParamSpec) -> tuple:
    """``transformer.h.0.attn.c_attn.weight`` -> ``("transformer", "h", 0, "attn", "c_attn", "kernel")``."""
    *modules, _ = spec.name.split(".")
    return tuple(int(m) if m.isdigit() else m for m in modules) + (_FLAX_LEAF[spec.kind],)


def _key_path(keys) -> tuple:
    path = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in keys)
    return path[:-1] if path[-1:] == ("value",) else path  # a leaf inside an nnx.Variable


def by_path(tree) -> dict[tuple, jax.Array]:
    """The leaves of a parameter-shaped tree by their Flax path."""
    return {_key_path(kp): leaf for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def to_canonical(tree, config: ModelConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """A parameter-shaped tree as fresh numpy arrays in the canonical layout, ``prefix + name``."""
    leaves = by_path(tree)
    return {prefix + spec.name: _to_canonical(spec, leaves[flax_path(spec)]) for spec in param_layout(config)}


def _to_canonical(spec: ParamSpec, value) -> np.ndarray:
    array = host_array(value)  # a fresh host copy, never a view of a device buffer (gathered if sharded)
    # [torch≠jax] Flax's kernels are (in, out); the canonical (torch) layout is (out, in)
    return np.ascontiguousarray(array.T) if spec.kind == "linear" else array


def from_canonical(tree, values: dict[str, np.ndarray], config: ModelConfig, prefix: str = ""):
    """A copy of the parameter-shaped ``tree`` holding ``values[prefix + name]``, each leaf cast
    to the dtype and placed on the device of the leaf it replaces."""
    spec_of = {flax_path(spec): spec for spec in param_layout(config)}

    def fill(keys, old):
        spec = spec_of[_key_path(keys)]
        value = values[prefix + spec.name]
        array = np.array(value, copy=True)  # never share memory with the caller
        array = array.T if spec.kind == "linear" else array  # (out, in) -> Flax's (in, out)
        if array.shape != old.shape:
            raise ValueError(f"{spec.name}: shape {np.shape(value)}, expected {spec.shape}")
        return jax.device_put(array.astype(old.dtype), old.sharding)  # one device, or its place on a mesh

    return jax.tree_util.tree_map_with_path(fill, tree)


def decay_mask(config: ModelConfig):
    """optax's weight-decay mask: True for every tensor with ndim >= 2 (``ParamSpec.decay``)."""
    decay = {flax_path(spec): spec.decay for spec in param_layout(config)}

    def mask(params):  # the weight-decay groups of torch, as a tree of booleans
        return jax.tree_util.tree_map_with_path(lambda keys, _: decay[_key_path(keys)], params)

    return mask


# -- AdamW's state: torch's exp_avg / exp_avg_sq / step are optax's mu / nu / count ------------

def adam_to_canonical(opt_state, config: ModelConfig) -> dict[str, np.ndarray]:
    """The moments in an ``nnx.Optimizer``'s optax state as ``exp_avg/<name>``, ``exp_avg_sq/<name>``."""
    pure = nnx.as_pure(opt_state)
    return (to_canonical(optax.tree_utils.tree_get(pure, "mu"), config, "exp_avg/")
            | to_canonical(optax.tree_utils.tree_get(pure, "nu"), config, "exp_avg_sq/"))


def load_adam(optimizer: nnx.Optimizer, state: dict[str, np.ndarray], config: ModelConfig, device) -> None:
    """Write canonical AdamW state (moments and ``step``) into ``optimizer``, in place."""
    opt_state = optimizer.opt_state
    for key, prefix in (("mu", "exp_avg/"), ("nu", "exp_avg_sq/")):
        moments = optax.tree_utils.tree_get(opt_state, key)
        values = from_canonical(nnx.as_pure(moments), state, config, prefix)
        variables = jax.tree.leaves(moments, is_leaf=lambda v: isinstance(v, nnx.Variable))
        for var, value in zip(variables, jax.tree.leaves(values), strict=True):
            var[...] = value
    # AdamW's count (its bias correction), inject_hyperparams' count, and nnx.Optimizer's own step
    counts = [c for _, c in optax.tree_utils.tree_get_all_with_path(opt_state, "count")] + [optimizer.step]
    for count in counts:
        count[...] = jax.device_put(np.asarray(int(state["step"]), dtype=count.dtype), device)


# -- random state: every Dropout's key and count, as one uint32 array --------------------------

def _is_key(a: Any) -> bool:
    return jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def flatten_rng(leaves: list[jax.Array]) -> np.ndarray:
    """The leaves of an ``nnx.RngState`` tree (typed keys and counts) as one uint32 array."""
    return np.concatenate([np.asarray(jax.random.key_data(a) if _is_key(a) else a, dtype=np.uint32).ravel()
                           for a in leaves])


def unflatten_rng(state: np.ndarray, like: list[jax.Array], device) -> list[jax.Array]:
    """Inverse of :func:`flatten_rng`, shaped like the leaves ``like``; ValueError on a size mismatch."""
    state = np.asarray(state, dtype=np.uint32).ravel()
    templates = [jax.random.key_data(a) if _is_key(a) else a for a in like]
    needed = sum(t.size for t in templates)
    if needed != state.size:
        raise ValueError(f"the saved jax RNG state has {state.size} numbers, this model needs {needed}")
    new, offset = [], 0
    for a, template in zip(like, templates):
        chunk = state[offset:offset + template.size].reshape(template.shape)
        offset += template.size
        value = jax.device_put(chunk.astype(template.dtype), device)
        new.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(a)) if _is_key(a) else value)
    return new
