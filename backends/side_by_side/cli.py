"""``microgpt side-by-side``: the command line (``backends.cli`` adds it)."""

from __future__ import annotations

import argparse
import webbrowser

from common import outputs
from common.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "side-by-side", help="the torch and JAX code on one HTML page, aligned, with every difference explained",
        description="Write one self-contained HTML page showing every file of backends/torch/ beside its twin in "
                    "backends/jax/, generated from the code as it is now: each definition on one row with its twin, "
                    "the lines aligned, and every [torch≠jax] note set beside the lines it explains.")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the page to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--open", action="store_true", help="then open it in the default web browser")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from backends.side_by_side import build_page

    path = outputs.check_file(args.out, "--out", args.overwrite)  # before any work (common/outputs.py)
    page = build_page()
    try:
        outputs.atomic_write_text(path, page.html)
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r} ({exc.strerror}); choose another --out path") from None
    unexplained = f", {page.unexplained} without a reason (a bug to fix)" if page.unexplained else ""
    print(f"wrote {path}: {page.pairs} file pairs, {page.notes} [torch≠jax] notes, "
          f"{page.one_sided} definitions in one framework only{unexplained}")
    if args.open:
        _open(path)
    return 0


def _open(path) -> None:
    try:
        opened = webbrowser.get().open(path.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if not opened:
        print(f"no web browser found here; open {path} in one")
