"""Character-level tokenizer: the vocabulary is the sorted set of distinct characters."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError

NOT_ONE_CHARACTER, REPEATED = "not one character", "repeated"  # the kinds of vocabulary_problem


def vocabulary_problem(chars: list[Any]) -> tuple[str, Any] | None:
    """Why ``chars`` is not a vocabulary of distinct single characters, or None if it is:
    ``(NOT_ONE_CHARACTER, the first entry that is not a one-character string)``, else
    ``(REPEATED, the first character listed more than once)``. Each caller words its own refusal."""
    for c in chars:  # (an entry may be None itself, so no next(..., None))
        if not isinstance(c, str) or len(c) != 1:
            return NOT_ONE_CHARACTER, c
    counts = Counter(chars)
    dup = next((c for c in chars if counts[c] > 1), None)
    return None if dup is None else (REPEATED, dup)


class CharTokenizer:
    def __init__(self, chars: list[str]):
        if vocabulary_problem(chars) is not None:
            raise ValueError("a vocabulary is a list of distinct single characters")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise UserError(
                f"the text has {len(unknown)} character(s) outside the vocabulary: {shown}; "
                "use only characters the model was trained on"
            )
        lookup = self.stoi
        return np.fromiter((lookup[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"type": "char", "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict) -> "CharTokenizer":
        if not isinstance(data, dict) or data.get("type") != "char" or not isinstance(data.get("chars"), list):
            raise UserError("tokenizer metadata is not a character vocabulary; the checkpoint is damaged")
        if vocabulary_problem(data["chars"]) is not None:
            raise UserError("tokenizer metadata is not a list of distinct single characters; "
                            "the checkpoint is damaged")
        return cls(data["chars"])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "CharTokenizer":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
