"""``microgpt side-by-side``: the PyTorch and JAX backends on one HTML page, generated from the
code as it is at run time. Every file present in both ``backends/torch/`` and ``backends/jax/``
is a pair; each definition faces its twin of the same name, their lines aligned, and every
``# [torch≠jax]`` note is set beside the lines it explains.

- ``source.py``: one file read as text: definitions (``ast``), notes (``tokenize``), highlighting (Pygments);
- ``pairing.py``: the pairs, the rows of twins, the line alignment (``difflib``), one-sided definitions' reasons;
- ``render.py`` and ``style.py``: the self-contained page;
- ``cli.py``: the command.

Nothing here imports torch or jax: the files are read, never run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError


@dataclass
class Page:
    html: str
    pairs: int
    notes: int
    one_sided: int
    unexplained: int


def build_page(root: Path | None = None) -> Page:
    """The page for the backend folders under ``root`` (by default the installed ``backends``)."""
    try:
        import pygments  # noqa: F401  (the highlighting)
    except ImportError:
        raise UserError("microgpt side-by-side highlights the code with Pygments, which is not installed; "
                        "pip install Pygments (or reinstall microgpt)") from None
    from backends.side_by_side.pairing import backends_root, build_pair, discover
    from backends.side_by_side.render import render_page

    root = Path(root) if root is not None else backends_root()
    stems, alone = discover(root)
    pairs = [build_pair(root, stem) for stem in stems]
    one_sided = [r for p in pairs for r in p.rows if r.one_sided]
    return Page(render_page(pairs, alone), len(pairs), sum(len(p.notes) for p in pairs),
                len(one_sided), sum(not r.reasons for r in one_sided))
