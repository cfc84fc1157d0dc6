"""The page's one stylesheet, inlined: system fonts, a light and a dark palette
(``prefers-color-scheme``; print is always light), Pygments' colours for each, and a print layout."""

from __future__ import annotations

LIGHT_CODE_STYLE = "default"
DARK_CODE_STYLE = "github-dark"  # in Pygments since 2.14; monokai where it is missing
# the two media queries cover every case exactly once: dark only on a screen that asks for it
DARK = "screen and (prefers-color-scheme: dark)"
LIGHT = "not screen and (prefers-color-scheme: dark)"

PAGE_CSS = """
:root {
  --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --rule: #d1d9e0; --gap: #f3f5f7;
  --noted: #fff4c2; --note-bg: #fff8dc; --note-edge: #bf8700; --bad: #cf222e; --bad-bg: #ffebe9;
  --link: #0550ae; --head-bg: #f6f8fa;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace;
}
@media screen and (prefers-color-scheme: dark) {
  :root {
    --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --rule: #3d444d; --gap: #151b23;
    --noted: #3b2e0a; --note-bg: #2b2410; --note-edge: #d29922; --bad: #ff7b72; --bad-bg: #3c1618;
    --link: #58a6ff; --head-bg: #161b22;
  }
}
html { background: var(--bg); color: var(--fg); }
body { font: 15px/1.5 var(--sans); max-width: 1600px; margin: 0 auto; padding: 0 16px 48px;
       box-sizing: border-box; overflow-wrap: anywhere; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font-family: var(--mono); font-size: 0.92em; }
h1 { font-size: 26px; margin: 24px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 6px; padding-bottom: 4px; border-bottom: 2px solid var(--rule); }
h3 { font-size: 15px; margin: 22px 0 4px; font-family: var(--mono); font-weight: 600; }
h3 .twin { color: var(--muted); font-weight: 400; }
h3 .only { font-family: var(--sans); font-size: 12px; font-weight: 600; border-radius: 3px;
           padding: 1px 6px; margin-left: 6px; background: var(--head-bg); border: 1px solid var(--rule); }
.lede, .paths, .stats { color: var(--muted); margin: 4px 0; max-width: 1100px; }
.stats a, .stats strong { font-weight: 600; }
nav.contents ol { columns: 2 22em; padding-left: 1.4em; }
nav.toc ol { columns: 4 17em; column-gap: 24px; font: 13px/1.55 var(--mono); padding-left: 2.4em; margin: 6px 0; }
nav.toc .only { font-family: var(--sans); font-size: 11px; color: var(--muted); }
ol.differences { padding-left: 2.4em; font-size: 14px; }
ol.differences li { margin: 3px 0; }
ol.differences .where { font-family: var(--mono); font-size: 12.5px; }
.side { font: 600 11px/1 var(--sans); text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.bad { color: var(--bad); }
table.code { width: 100%; table-layout: fixed; border-collapse: collapse; border: 1px solid var(--rule);
             font: 12px/1.45 var(--mono); }
col.ln { width: 3.4em; }
col.margin { width: 272px; }
table.code th { font: 600 12px/1.6 var(--sans); text-align: left; background: var(--head-bg);
                border-bottom: 1px solid var(--rule); padding: 2px 8px; }
table.code th .range { color: var(--muted); font-weight: 400; }
td.ln { text-align: right; color: var(--muted); padding: 0 6px 0 0; vertical-align: top;
        user-select: none; -webkit-user-select: none; border-left: 1px solid var(--rule); }
td.src { white-space: pre-wrap; overflow-wrap: anywhere; vertical-align: top;
         padding: 0 8px 0 calc(8px + 2ch); text-indent: -2ch; }
td.src.gap, td.ln.gap { background: var(--gap); }
td.src.noted, td.ln.noted { background: var(--noted); }
td.absent { background: var(--gap); vertical-align: top; padding: 8px 12px; font: 13px/1.5 var(--sans);
            border-left: 1px solid var(--rule); }
td.absent.bad { background: var(--bad-bg); }
td.absent p { margin: 6px 0 0; }
td.margin { vertical-align: top; padding: 0 6px 4px 10px; border-left: 1px solid var(--rule);
            font: 12.5px/1.42 var(--sans); }
.note { background: var(--note-bg); border-left: 3px solid var(--note-edge); border-radius: 3px;
        padding: 3px 7px; margin: 2px 0 4px; }
.note .num { font-weight: 700; margin-right: 4px; }
.note code, ol.differences code { font-size: 0.9em; }
@media print {
  @page { size: A4 landscape; margin: 10mm; }
  html, body { background: #fff; }
  body { max-width: none; padding: 0; font-size: 10pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; }
  h2, h3, table.code th { break-after: avoid; }
  tr, .note, ol.differences li { break-inside: avoid; }
  section.pair { break-before: page; }
  table.code { font-size: 7.2pt; }
  col.margin { width: 56mm; }
  td.margin { font-size: 7.4pt; }
  nav.toc ol { font-size: 8pt; }
}
"""


def code_css() -> str:
    """Pygments' token colours for the highlighted lines (``td.src``), light and dark."""
    from pygments.formatters import HtmlFormatter
    from pygments.util import ClassNotFound

    def token_rules(style: str, fallback: str) -> str:
        try:
            formatter = HtmlFormatter(style=style)
        except ClassNotFound:
            formatter = HtmlFormatter(style=fallback)
        return "\n".join(formatter.get_token_style_defs("td.src"))

    return (f"@media {LIGHT} {{\n{token_rules(LIGHT_CODE_STYLE, 'default')}\n}}\n"
            f"@media {DARK} {{\n{token_rules(DARK_CODE_STYLE, 'monokai')}\n}}\n")


def stylesheet() -> str:
    return PAGE_CSS + code_css()
