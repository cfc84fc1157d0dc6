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
from common import lock, outputs
from common.checkpoint import Checkpoint, nonfinite, save_checkpoint
from common.config import ModelConfig, TrainConfig
from common.corpus import read_text
from common.errors import UserError
from common.params import check_weights
from common.tokenizer import NOT_ONE_CHARACTER, CharTokenizer, vocabulary_problem

PREFIX = "_orig_mod."
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers; refuses to import any class or function."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_meta(path: str | Path) -> CharTokenizer:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--meta {str(path)!r} is a folder; give nanoGPT's meta.pkl file (or --vocab-from TEXT)")
    try:
        meta = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise UserError(f"no meta.pkl at {str(path)!r}; check the --meta path") from None
    except OSError as exc:
        raise UserError(f"cannot read --meta {str(path)!r} ({exc.strerror}); check the path") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in many ways; every one means refuse
        raise UserError(f"{str(path)!r} is not a plain nanoGPT meta.pkl ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); pass --vocab-from TEXT instead") from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict):
        raise UserError(f"{str(path)!r} has no character vocabulary ('itos'); pass --vocab-from TEXT instead")
    return CharTokenizer(check_itos(itos, path))


def check_itos(itos: dict, path: Path) -> list[str]:
    """nanoGPT's ``itos``: ids 0..n-1, each one distinct character."""
    where = f"{str(path)!r}: its vocabulary ('itos')"
    fix = "pass the meta.pkl nanoGPT wrote for this model, or --vocab-from TEXT"
    ids = list(itos)
    if not ids or any(not isinstance(i, int) or isinstance(i, bool) for i in ids) or sorted(ids) != list(range(len(ids))):
        shown = ", ".join(repr(i) for i in sorted(ids, key=repr)[:5])
        raise UserError(f"{where} has the ids {shown}{' ...' if len(ids) > 5 else ''}, not 0..{len(ids) - 1}; {fix}")
    chars = [itos[i] for i in range(len(ids))]
    problem = vocabulary_problem(chars)
    if problem is not None:
        kind, c = problem
        raise UserError(f"{where} maps an id to {c!r}, not one character; {fix}" if kind == NOT_ONE_CHARACTER
                        else f"{where} maps two ids to {c!r}; {fix}")
    return chars


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
            vocab_from: str | None = None, overwrite: bool = False) -> Path:
    lock.check_free(out_dir)  # another process writing there: one line naming it
    outputs.check_checkpoint_dir(out_dir, overwrite=overwrite)  # before reading anything
    torch_convert = _torch_reader()
    model_args, state, others = torch_convert.read_nanogpt_checkpoint(ckpt_path)
    missing = [k for k in MODEL_ARGS if k not in model_args]
    if missing:
        raise UserError(f"{str(ckpt_path)!r}: model_args lacks {', '.join(missing)}; is it a nanoGPT checkpoint?")
    try:
        model_config = ModelConfig(**{k: model_args[k] for k in MODEL_ARGS})
    except UserError as exc:  # the config's own words, without its command-line advice
        raise UserError(f"{str(ckpt_path)!r}: model_args: {exc.problem}; "
                        "is it a checkpoint of nanoGPT's train.py?") from None
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
    best = float(best) if isinstance(best, (int, float)) and not isinstance(best, bool) and np.isfinite(best) else None
    step = others.get("iter_num")
    step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0
    bad_weights = nonfinite(weights)
    if bad_weights:
        raise UserError(f"{str(ckpt_path)!r} holds non-finite weights ({', '.join(bad_weights[:3])}); "
                        "import a checkpoint from before the training diverged")
    ckpt = Checkpoint(model_config=model_config, train_config=train_config, tokenizer=tokenizer, weights=weights,
                      step=step, best_val_loss=best,
                      backend="nanogpt", extra={"imported_from": str(Path(ckpt_path).resolve())})
    with lock.hold(out_dir):  # one writer at a time (a training run's last/ or best/ holds it too)
        return save_checkpoint(out_dir, ckpt)


def _torch_reader():
    load_backend("torch")  # a clear error when torch is not installed
    from backends.torch import convert as torch_convert

    return torch_convert
