"""One backend source file, read as text: its definitions (``ast``), its lines highlighted
(Pygments) and its ``[torch≠jax]`` notes. Nothing here imports a framework."""

from __future__ import annotations

import ast
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

TAG = "[torch≠jax]"
# torch's Module.forward is Flax NNX's Module.__call__: the one method renamed between the backends
TWIN_NAMES = {"forward": "__call__"}
MODULE_KEY = "__module__"  # the row of the module docstring and imports


@dataclass
class Unit:
    """A stretch of a file shown as one row: the module head, a function, a class header or a method.

    ``key`` is what its twin in the other backend shares (``GPT.__call__`` for torch's
    ``GPT.forward``); ``name`` is as written. Lines are 1-based and inclusive."""

    key: str
    name: str
    kind: str  # "module", "function", "class" or "method"
    start: int
    end: int
    def_line: int  # the ``def``/``class`` line (the head's first line)

    @property
    def is_definition(self) -> bool:
        return self.kind != "module"


@dataclass
class Note:
    """One line holding the tag: a comment (with the comment lines continuing it) or a docstring
    paragraph. ``text`` is the prose after the tag."""

    side: str
    line: int
    end: int
    text: str


@dataclass
class SourceFile:
    side: str  # "torch" or "jax"
    path: Path
    lines: list[str]
    html_lines: list[str]  # each line highlighted, as HTML
    units: list[Unit] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def unit_at(self, line: int) -> Unit | None:
        return next((u for u in self.units if u.start <= line <= u.end), None)


def read_source(path: Path, side: str) -> SourceFile:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    html_lines, kinds = highlight(text, len(lines))
    return SourceFile(side, path, lines, html_lines, units(text, lines), notes(lines, kinds, side))


# -- definitions ---------------------------------------------------------------------------------

def _first_line(node: ast.AST) -> int:
    """A definition starts at its first decorator."""
    return min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])


def _is_def(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def _end(node: ast.AST, lines: list[str]) -> int:
    """A definition's last line: its last statement, or a comment below it indented into its body."""
    end, below = node.end_lineno, node.end_lineno
    while below < len(lines):
        line = lines[below]
        below += 1
        if not line.strip():
            continue
        if not (line.lstrip().startswith("#") and len(line) - len(line.lstrip()) > node.col_offset):
            break
        end = below
    return end


def units(text: str, lines: list[str]) -> list[Unit]:
    """The module head, then every top-level function and class and every method, in file order.

    Each unit runs until the next one starts, so every line of the file is in one unit: the
    comments, constants and blank lines between two definitions belong to the one below them
    (a constant is written above the function that uses it); the head is the docstring and the
    imports. Blank lines at either end of a unit are left out."""
    tree = ast.parse(text)
    body = tree.body
    first_def = next((i for i, n in enumerate(body) if _is_def(n)), len(body))
    head_end = max([n.end_lineno for n in body[:first_def]
                    if isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr))] + [0])
    starts: list[tuple[int, str, str, str, int]] = [(1, MODULE_KEY, "module docstring and imports", "module", 1)]
    previous_end = head_end
    for node in body[first_def:]:
        if not _is_def(node):
            continue
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            starts.append((previous_end + 1, node.name, node.name, "class", node.lineno))
            preamble = [n for n in node.body if methods and n.lineno < methods[0].lineno]
            header_end = max([n.end_lineno for n in preamble]
                             + [n.end_lineno for n in node.bases + node.keywords] + [node.lineno])
            for method in methods:
                key = f"{node.name}.{TWIN_NAMES.get(method.name, method.name)}"
                starts.append((header_end + 1, key, f"{node.name}.{method.name}", "method", method.lineno))
                header_end = _end(method, lines)
        else:
            starts.append((previous_end + 1, node.name, node.name, "function", node.lineno))
        previous_end = _end(node, lines)
    out = []
    for i, (start, key, name, kind, def_line) in enumerate(starts):
        end = starts[i + 1][0] - 1 if i + 1 < len(starts) else len(lines)
        while start < end and not lines[start - 1].strip():
            start += 1
        while end > start and not lines[end - 1].strip():
            end -= 1
        if end >= start and lines[start - 1].strip():  # an empty head (no docstring, no imports) is no row
            out.append(Unit(key, name, kind, start, end, def_line))
    return out


# -- notes ---------------------------------------------------------------------------------------

def _prose(parts: list[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(parts)).strip()


def _until_closing_quote(piece: str) -> tuple[str, bool]:
    """``piece`` up to a closing triple quote, and whether the string ends there."""
    cut = min((piece.find(q) for q in ('"""', "'''") if q in piece), default=-1)
    return (piece, False) if cut < 0 else (piece[:cut], True)


def notes(lines: list[str], kinds: dict[int, str], side: str) -> list[Note]:
    """One note per line holding the tag, so that the page counts what ``grep -c`` counts.

    ``kinds`` says where each tag is (``"comment"`` or ``"string"``, from the lexer). A comment
    note goes on through the comment lines right below it at the same column; a docstring note
    through its paragraph (to a blank line, the next tag or the string's end)."""
    found = []
    for number, line in enumerate(lines, start=1):
        if TAG not in line:
            continue
        rest, end = line.split(TAG, 1)[1], number
        parts = []
        if kinds.get(number) == "comment":
            column = line.index("#") if line.lstrip().startswith("#") else None
            parts.append(rest)
            while column is not None and end < len(lines):
                below = lines[end]
                if not (below.lstrip().startswith("#") and below.index("#") == column and TAG not in below):
                    break
                parts.append(below.strip().lstrip("#"))
                end += 1
        elif kinds.get(number) == "string":
            piece, closed = _until_closing_quote(rest)
            parts.append(piece)
            while not closed and end < len(lines) and lines[end].strip() and TAG not in lines[end]:
                piece, closed = _until_closing_quote(lines[end])
                parts.append(piece)
                end += 1
        else:  # a tag the lexer saw in code (none expected): the line itself
            parts.append(rest)
        found.append(Note(side, number, end, _prose(parts)))
    return found


# -- highlighting --------------------------------------------------------------------------------

def highlight(text: str, n_lines: int) -> tuple[list[str], dict[int, str]]:
    """Each line as HTML spans with Pygments' short class names (``k``, ``nf``, ``c1``, ...), and
    for each line holding the tag whether the lexer found it in a comment or in a string. The
    whole file is lexed at once, so strings and docstrings over many lines are coloured right."""
    from pygments.lexers import PythonLexer
    from pygments.token import STANDARD_TYPES, Comment, String

    def css_class(ttype) -> str:
        while ttype not in STANDARD_TYPES:
            ttype = ttype.parent
        return STANDARD_TYPES[ttype]

    out: list[str] = []
    current: list[str] = []
    kinds: dict[int, str] = {}
    for ttype, value in PythonLexer(stripnl=False, ensurenl=True).get_tokens(text):
        if TAG in value and (ttype in Comment or ttype in String):
            line = len(out) + 1
            for offset, piece in enumerate(value.split("\n")):
                if TAG in piece:
                    kinds[line + offset] = "comment" if ttype in Comment else "string"
        cls = css_class(ttype)
        for i, piece in enumerate(value.split("\n")):
            if i:
                out.append("".join(current))
                current = []
            if piece:
                escaped = html.escape(piece, quote=False)
                current.append(f'<span class="{cls}">{escaped}</span>' if cls and piece.strip() else escaped)
    if current:
        out.append("".join(current))
    return (out + [""] * n_lines)[:n_lines], kinds
