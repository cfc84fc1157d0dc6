"""The checkpoint's JSON metadata, checked field by field before anything uses it.

A checkpoint's header is valid JSON that anyone can edit (or damage); every field of the
wrong type or shape is reported by name in one line, instead of failing later, deep in
the tokenizer, the sampler or the training loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from common import config as config_mod
from common.config import ModelConfig, TrainConfig
from common.errors import UserError
from common.tokenizer import NOT_ONE_CHARACTER, CharTokenizer, vocabulary_problem

HISTORY_NUMBERS = ("lr", "loss", "train_loss", "val_loss", "ms_per_iter", "tokens_per_s")


class MetadataError(ValueError):
    """One field of the metadata is wrong; the message names it."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def check_version(meta: Any) -> int:
    """The metadata's format_version, a version number; the caller compares it with the one it reads."""
    if not isinstance(meta, dict):
        raise MetadataError(f"the metadata is {_kind(meta)}, not an object")
    if "format_version" not in meta:
        raise MetadataError("the metadata has no format_version, so it was not written by MicroGPT")
    version = meta["format_version"]
    if not _is_int(version) or version < 1:
        raise MetadataError(f"format_version is {version!r}, not a version number")
    return version


def _config(cls: type, data: Any, field: str):
    if not isinstance(data, dict):
        raise MetadataError(f"{field} is {_kind(data)}, not an object")
    try:
        return config_mod.from_dict(cls, data)
    except UserError as exc:  # the config's own message, without its command-line advice
        raise MetadataError(f"{field}: {exc.problem}") from None
    except TypeError as exc:
        raise MetadataError(f"{field}: {exc}") from None


def _tokenizer(data: Any) -> CharTokenizer:
    if not isinstance(data, dict):
        raise MetadataError(f"tokenizer is {_kind(data)}, not an object")
    if data.get("type") != "char":
        raise MetadataError(f"tokenizer.type is {data.get('type')!r}, expected 'char'")
    chars = data.get("chars")
    if not isinstance(chars, list):
        raise MetadataError(f"tokenizer.chars is {_kind(chars)}, not a list of characters")
    problem = vocabulary_problem(chars)
    if problem is not None:
        kind, c = problem
        raise MetadataError(f"tokenizer.chars holds {c!r}, not a single character" if kind == NOT_ONE_CHARACTER
                            else f"tokenizer.chars lists {c!r} twice")
    return CharTokenizer(chars)


def _sampler_state(state: Any) -> dict | None:
    if state is None:
        return None
    if not isinstance(state, dict):
        raise MetadataError(f"sampler_state is {_kind(state)}, not an object")
    try:  # numpy checks every field of its own state
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise MetadataError(f"sampler_state is not a PCG64 generator state ({exc})") from None
    return state


def _history(rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        raise MetadataError(f"extra.history is {_kind(rows)}, not a list")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise MetadataError(f"extra.history[{i}] is {_kind(row)}, not an object")
        if not _is_int(row.get("iter")) or row["iter"] < 0:
            raise MetadataError(f"extra.history[{i}].iter is {row.get('iter')!r}, not a step number")
        for key in HISTORY_NUMBERS:
            if row.get(key) is not None and not _is_number(row[key]):
                raise MetadataError(f"extra.history[{i}].{key} is {row[key]!r}, not a number")
    return rows


def _extra(extra: Any) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise MetadataError(f"extra is {_kind(extra)}, not an object")
    if "history" in extra:
        _history(extra["history"])
    for key in ("data", "imported_from"):
        if key in extra and not isinstance(extra[key], str):
            raise MetadataError(f"extra.{key} is {_kind(extra[key])}, not a path")
    return extra


def parse(meta: dict[str, Any]) -> dict[str, Any]:
    """Every field checked and converted: the keyword arguments of a ``Checkpoint`` but the tensors."""
    missing = [k for k in ("model_config", "train_config", "tokenizer") if k not in meta]
    if missing:
        raise MetadataError(f"the metadata lacks {', '.join(missing)}")
    out: dict[str, Any] = {
        "model_config": _config(ModelConfig, meta["model_config"], "model_config"),
        "train_config": _config(TrainConfig, meta["train_config"], "train_config"),
        "tokenizer": _tokenizer(meta["tokenizer"]),
    }
    step = meta.get("step", 0)
    if not _is_int(step) or step < 0:
        raise MetadataError(f"step is {step!r}, not a step number (an integer >= 0)")
    out["step"] = step
    best = meta.get("best_val_loss")
    if best is not None and (not _is_number(best) or not math.isfinite(best)):
        raise MetadataError(f"best_val_loss is {best!r}, not a finite number or null")
    out["best_val_loss"] = None if best is None else float(best)
    out["sampler_state"] = _sampler_state(meta.get("sampler_state"))
    backend = meta.get("backend", "unknown")
    if not isinstance(backend, str):
        raise MetadataError(f"backend is {_kind(backend)}, not a name")
    out["backend"] = backend
    out["extra"] = _extra(meta.get("extra"))
    return out
