"""Character-level tokenizer: the vocabulary is the sorted set of distinct characters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.errors import UserError


class CharTokenizer:
    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
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
        try:
            return cls(data["chars"])
        except (ValueError, TypeError):
            raise UserError("tokenizer metadata is not a list of distinct single characters; "
                            "the checkpoint is damaged") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "CharTokenizer":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
