"""The README's picture of the page: one row, as headless Chromium draws it at 1600 pixels.

    python -m backends.side_by_side.screenshot backends/side_by_side/attention_row.png

A maintainer's tool (Debian's ``chromium`` and Pillow), not part of ``microgpt``. Chromium reads a
copy of the page with a script that writes the row's position into the title (the page itself
holds no script), then draws the page and Pillow crops the row out of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from backends.side_by_side import build_page

WIDTH = 1600
PROBE = ("<script>const r = document.getElementById({anchor}).getBoundingClientRect();"
         "document.title = JSON.stringify({{top: r.top + scrollY, bottom: r.bottom + scrollY, "
         "width: document.documentElement.scrollWidth}})</script></body>")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium, offline and with a throwaway profile."""
    command = [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def measure(html: str, anchor: str, folder: Path) -> dict:
    """The row's top and bottom on the page, and the page's width, at WIDTH pixels."""
    probe = folder / "probe.html"
    probe.write_text(html.replace("</body>", PROBE.format(anchor=json.dumps(anchor)), 1), encoding="utf-8")
    dom = chromium("--hide-scrollbars", f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri(),
                   profile=folder / "profile").stdout
    return json.loads(dom.split("<title>", 1)[1].split("</title>", 1)[0].replace("&quot;", '"'))


def screenshot(out: Path, anchor: str, dark: bool = False, margin: int = 12) -> dict:
    from PIL import Image

    html = build_page().html
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        box = measure(html, anchor, folder)
        page = folder / "page.html"
        page.write_text(html, encoding="utf-8")
        height = int(box["bottom"]) + margin
        scheme = ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"] if dark else []
        chromium("--hide-scrollbars", *scheme, f"--window-size={WIDTH},{height}",
                 f"--screenshot={folder / 'page.png'}", page.as_uri(), profile=folder / "profile")
        image = Image.open(folder / "page.png").convert("RGB")
        row = image.crop((0, max(0, int(box["top"]) - margin), WIDTH, height))
        # a palette of 256 colours: the text stays sharp and the file small
        row.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return box


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.side_by_side.screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--row", default="model.CausalSelfAttention.forward", help="the row's anchor")
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    args = parser.parse_args(argv)
    if shutil.which("chromium") is None:
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    box = screenshot(args.out, args.row, args.dark)
    print(f"wrote {args.out}: page {box['width']} pixels wide in a {WIDTH}-pixel window, "
          f"row {int(box['bottom'] - box['top'])} pixels high")
    return 0


if __name__ == "__main__":
    sys.exit(main())
