"""``microgpt convert --from-nanogpt``: a checkpoint of nanoGPT's ``train.py`` into MicroGPT's format.

nanoGPT saves ``{"model": state_dict, "model_args": {...}, "iter_num", "best_val_loss", ...}``;
under ``torch.compile`` every key carries an ``_orig_mod.`` prefix. Its state-dict names are
our canonical names (``common.params``), except that it also stores the tied
``lm_head.weight`` and, without flash attention, the causal mask as ``attn.bias``.
The vocabulary comes from nanoGPT's ``meta.pkl`` (read with an unpickler that builds
plain dicts, lists and strings and refuses every class) or from the training text.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from backends import load_backend
from common.checkpoint import Checkpoint, save_checkpoint
from common.config import ModelConfig, TrainConfig
from common.corpus import read_text
from common.errors import UserError
from common.params import check_weights
from common.tokenizer import CharTokenizer

PREFIX = "_orig_mod."
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers; refuses to import any class or function."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_meta(path: str | Path) -> CharTokenizer:
    try:
        meta = _PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except FileNotFoundError:
        raise UserError(f"no meta.pkl at {str(path)!r}; check the --meta path") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise UserError(f"{str(path)!r} is not a plain nanoGPT meta.pkl ({exc}); pass --vocab-from TEXT instead") from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or not all(isinstance(c, str) for c in itos.values()):
        raise UserError(f"{str(path)!r} has no character vocabulary ('itos'); pass --vocab-from TEXT instead")
    return CharTokenizer([itos[i] for i in range(len(itos))])


def canonical_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip torch.compile's prefix, drop the causal-mask buffers and the tied LM head."""
    out = {}
    for name, value in state.items():
        name = name[len(PREFIX):] if name.startswith(PREFIX) else name
        if name.endswith(".attn.bias") and value.ndim == 4:  # the mask buffer, not a parameter
            continue
        out[name] = value
    head = out.pop("lm_head.weight", None)
    if head is not None and "transformer.wte.weight" in out and not np.array_equal(head, out["transformer.wte.weight"]):
        raise UserError("this nanoGPT checkpoint's lm_head is not tied to its token embedding; MicroGPT ties them")
    return out


def convert(ckpt_path: str | Path, out_dir: str | Path, meta: str | None = None,
            vocab_from: str | None = None) -> Path:
    torch_convert = _torch_reader()
    model_args, state, others = torch_convert.read_nanogpt_checkpoint(ckpt_path)
    missing = [k for k in MODEL_ARGS if k not in model_args]
    if missing:
        raise UserError(f"{str(ckpt_path)!r}: model_args lacks {', '.join(missing)}; is it a nanoGPT checkpoint?")
    model_config = ModelConfig(**{k: model_args[k] for k in MODEL_ARGS})
    if meta:
        tokenizer = read_meta(meta)
    elif vocab_from:
        tokenizer = CharTokenizer.from_text(read_text(Path(vocab_from)))
    else:
        raise UserError("a character model needs its vocabulary: pass --meta meta.pkl or --vocab-from TEXT")
    if tokenizer.vocab_size != model_config.vocab_size:
        raise UserError(
            f"the vocabulary has {tokenizer.vocab_size} characters but the model has vocab_size "
            f"{model_config.vocab_size}; pass the meta.pkl or text this model was trained on"
        )
    weights = canonical_state(state)
    problems = check_weights(model_config, weights)
    if problems:
        raise UserError(f"{str(ckpt_path)!r} does not match its model_args: " + "; ".join(problems[:8]))
    train_config = TrainConfig(device="auto")
    best = others.get("best_val_loss")
    ckpt = Checkpoint(model_config=model_config, train_config=train_config, tokenizer=tokenizer, weights=weights,
                      step=int(others.get("iter_num", 0) or 0), best_val_loss=None if best is None else float(best),
                      backend="nanogpt", extra={"imported_from": str(Path(ckpt_path).resolve())})
    return save_checkpoint(out_dir, ckpt)


def _torch_reader():
    load_backend("torch")  # a clear error when torch is not installed
    from backends.torch import convert as torch_convert

    return torch_convert
