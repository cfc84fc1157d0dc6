import numpy as np
import pytest

from common.errors import UserError
from common.tokenizer import NOT_ONE_CHARACTER, REPEATED, CharTokenizer, vocabulary_problem


def test_round_trip_and_sorted_vocabulary():
    text = "hello, world!\nHELLO"
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) == len(text)
    assert tok.decode(ids) == text


def test_unknown_characters_are_listed():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UserError) as err:
        tok.encode("abxzx")
    msg = str(err.value)
    assert "'x'" in msg and "'z'" in msg and "2 character(s)" in msg


def test_json_round_trip(tmp_path):
    tok = CharTokenizer.from_text("zyx\n é")
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.chars == tok.chars


def test_shakespeare_vocabulary(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    assert len(text) == 1_115_394 and tok.vocab_size == 65
    assert tok.decode(tok.encode(text[:1000])) == text[:1000]


@pytest.mark.parametrize("chars, problem", [
    (["a", "b"], None),
    ([], None),
    (["a", "ab", "b"], (NOT_ONE_CHARACTER, "ab")),
    (["a", None], (NOT_ONE_CHARACTER, None)),
    (["a", ["b"]], (NOT_ONE_CHARACTER, ["b"])),
    (["b", "a", "b", "a"], (REPEATED, "b")),
])
def test_vocabulary_problem(chars, problem):
    """The one check behind CharTokenizer, its JSON, a checkpoint's metadata and nanoGPT's itos."""
    assert vocabulary_problem(chars) == problem
    if problem is not None:
        with pytest.raises(ValueError):
            CharTokenizer(chars)
        with pytest.raises(UserError, match="not a list of distinct single characters"):
            CharTokenizer.from_json({"type": "char", "chars": chars})
