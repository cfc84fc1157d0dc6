"""The two backends paired up: which files mirror each other, which definitions are twins (one
row each), how the lines of two twins face each other, and why a one-sided definition has no twin."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from backends.side_by_side.source import Note, SourceFile, Unit, read_source

SIDES = ("torch", "jax")
# the reading order of the README; pairs found beyond these follow in alphabetical order
READING_ORDER = ("model", "train", "sampling", "device", "parallel")
# package markers: each backend's __init__.py is a one-line docstring naming its own files
SKIPPED = {"__init__.py"}
SIMILAR = 0.5  # two changed lines at least this alike (see _likeness) face each other
_WORD = re.compile(r"[A-Za-z0-9]+|[^\w\s]")  # scaled_dot_product_attention: scaled, dot, product, attention


@dataclass
class Row:
    """A definition and its twin (either may be None); ``lines`` pairs their line numbers."""

    key: str
    units: dict[str, Unit | None]
    lines: list[tuple[int | None, int | None]]
    reasons: list[Note]  # for a one-sided definition: the notes that say why it has no twin

    @property
    def one_sided(self) -> str | None:
        """The side that has it, when only one side has it."""
        present = [s for s in SIDES if self.units[s] is not None]
        return present[0] if len(present) == 1 else None


@dataclass
class Pair:
    stem: str  # "model"
    files: dict[str, SourceFile]
    rows: list[Row]

    @property
    def notes(self) -> list[Note]:
        return [n for s in SIDES for n in self.files[s].notes]


def backends_root() -> Path:
    """The folder holding ``torch/`` and ``jax/``, found from the installed package, not the cwd."""
    import backends

    return Path(backends.__file__).resolve().parent


def discover(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The stems of the files present in both backend folders, in reading order, and each side's
    files that have no twin."""
    names = {s: {p.name for p in (root / s).glob("*.py")} - SKIPPED for s in SIDES}
    both = {n[:-3] for n in names["torch"] & names["jax"]}
    stems = [s for s in READING_ORDER if s in both] + sorted(both - set(READING_ORDER))
    alone = {s: sorted(names[s] - names[o]) for s, o in zip(SIDES, reversed(SIDES))}
    return stems, alone


def build_pair(root: Path, stem: str) -> Pair:
    files = {s: read_source(root / s / f"{stem}.py", s) for s in SIDES}
    rows = _rows(files["torch"].units, files["jax"].units)
    pair = Pair(stem, files, [])
    for key, torch_unit, jax_unit in rows:
        units = {"torch": torch_unit, "jax": jax_unit}
        lines = align(files["torch"], torch_unit, files["jax"], jax_unit)
        pair.rows.append(Row(key, units, lines, []))
    for row in pair.rows:
        if row.one_sided:
            row.reasons = _reasons(pair, row)
    return pair


def _rows(left: list[Unit], right: list[Unit]) -> list[tuple[str, Unit | None, Unit | None]]:
    """One row per key, in the torch file's order; a JAX-only unit goes after the row of the JAX
    unit above it, so both files read top to bottom."""
    rows: list[list] = [[u.key, u, None] for u in left]
    cursor = -1
    for unit in right:
        index = next((i for i, r in enumerate(rows) if r[0] == unit.key and r[2] is None), None)
        if index is None:
            index = cursor + 1
            rows.insert(index, [unit.key, None, unit])
        else:
            rows[index][2] = unit
        cursor = index
    return [tuple(r) for r in rows]


# -- line alignment ------------------------------------------------------------------------------

def align(left_file: SourceFile, left: Unit | None, right_file: SourceFile, right: Unit | None
          ) -> list[tuple[int | None, int | None]]:
    """The two units' line numbers, paired: equal lines (difflib's matching blocks), then within
    each changed stretch the most alike lines (``q.view(...)`` facing ``q.reshape(...)``), then
    the rest of a stretch in order where they are of a kind (code, comment, docstring), so that
    nothing is spread out needlessly and a comment does not face unrelated code."""
    a = list(range(left.start, left.end + 1)) if left else []
    b = list(range(right.start, right.end + 1)) if right else []
    a_lines = [(left_file.lines[i - 1].strip(), _kind(left_file, i)) for i in a]
    b_lines = [(right_file.lines[j - 1].strip(), _kind(right_file, j)) for j in b]
    pairs: list[tuple[int | None, int | None]] = []
    matcher = difflib.SequenceMatcher(None, [t for t, _ in a_lines], [t for t, _ in b_lines], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs += list(zip(a[i1:i2], b[j1:j2]))
        else:
            pairs += _most_alike(a[i1:i2], a_lines[i1:i2], b[j1:j2], b_lines[j1:j2])
    return pairs


def _kind(source: SourceFile, line: int) -> str:
    text = source.lines[line - 1].strip()
    if not text:
        return "blank"
    if text.startswith("#"):
        return "comment"
    return "docstring" if source.html_lines[line - 1].lstrip().startswith('<span class="sd">') else "code"


def _most_alike(a, a_lines, b, b_lines) -> list[tuple[int | None, int | None]]:
    """Pairs of lines, in order on both sides, of the greatest total likeness: first the pairs at
    least SIMILAR alike, then as many pairs of one kind as fit between them (all of them together
    worth less than one alike pair); the lines in no pair stand alone. A small dynamic programme over a
    changed stretch: stretches are short."""
    n, m = len(a), len(b)
    kind = SIMILAR / (min(n, m) + 1)
    a_words = [_words(t) for t, _ in a_lines]
    b_words = [_words(t) for t, _ in b_lines]
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    like = [[0.0] * m for _ in range(n)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            like[i][j] = _likeness(a_words[i], b_words[j]) or (kind if a_lines[i][1] == b_lines[j][1] else 0.0)
            paired = like[i][j] + best[i + 1][j + 1] if like[i][j] else 0.0
            best[i][j] = max(best[i + 1][j], best[i][j + 1], paired)
    out, i, j = [], 0, 0
    while i < n and j < m:
        if like[i][j] and best[i][j] == like[i][j] + best[i + 1][j + 1]:
            out.append((a[i], b[j]))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            out.append((a[i], None))
            i += 1
        else:
            out.append((None, b[j]))
            j += 1
    return out + [(k, None) for k in a[i:]] + [(None, k) for k in b[j:]]


def _code(line: str) -> str:
    """A stripped line without its trailing comment (a comment-only line stays as it is)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and k:
            return line[:k].rstrip()
    return line


def _words(line: str) -> list[str]:
    return _WORD.findall(_code(line))


def _likeness(a: list[str], b: list[str]) -> float:
    """How alike two lines' words are: difflib's ratio, or, when the shorter line (of four words
    or more) is mostly inside the longer one, 0.8 of that share (``y = F.scaled_dot_product_attention(``
    and ``y = jax.nn.dot_product_attention(q, k, v, is_causal=True)`` play the same part)."""
    shorter = min(len(a), len(b))
    if not shorter:
        return 0.0

    def score(matched: int) -> float:
        return max(2 * matched / (len(a) + len(b)), 0.8 * matched / shorter if shorter >= 4 else 0.0)

    if score(sum((Counter(a) & Counter(b)).values())) < SIMILAR:  # an upper bound, quick to count
        return 0.0
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    likeness = score(sum(block.size for block in blocks))
    return likeness if likeness >= SIMILAR else 0.0


# -- reasons for one-sided definitions -----------------------------------------------------------

def _names_it(note: Note, name: str) -> bool:
    """Does the note name ``name`` as code: ``name()``, ``.name``, ```name```, or an identifier
    with an underscore (``_init_weights``)? A plain word (``model``) is not a mention."""
    word = re.escape(name)
    patterns = [rf"`{word}`", rf"\.{word}(?!\w)", rf"(?<![\w.]){word}\("]
    if "_" in name:
        patterns.append(rf"(?<![\w.]){word}(?!\w)")
    return any(re.search(p, note.text) for p in patterns)


def _reasons(pair: Pair, row: Row) -> list[Note]:
    """Why a definition is on one side only: the notes inside it; else the notes of its class,
    when the class is one-sided too; else any note of the pair that names it."""
    side = row.one_sided
    unit = row.units[side]
    source = pair.files[side]
    inside = [n for n in source.notes if unit.start <= n.line <= unit.end]
    if inside:
        return inside
    if unit.kind == "method":
        cls = next(r for r in pair.rows if r.units[side] is not None and r.units[side].key == unit.key.split(".")[0])
        if cls.one_sided:
            return cls.reasons or _reasons(pair, cls)
    bare = unit.name.split(".")[-1]
    return [n for n in pair.notes if _names_it(n, bare)]
