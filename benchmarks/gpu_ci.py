"""What ``.ci/gpu`` runs in Python: the check that this machine can run it, and the summary table.

``python -m benchmarks.gpu_ci preflight``: exit status 0 where both backends see a CUDA GPU (on one
device type, ``benchmarks/devices.py``) and tiny Shakespeare is on disk (the script runs offline);
otherwise one line on stderr saying what is missing, exit status 2.

``python -m benchmarks.gpu_ci summary DIR``: one table of everything ``.ci/gpu`` left in DIR (its
steps with their exit status and seconds, the GPU tests from pytest's JUnit XML, the parity rows,
and every benchmark lane with its step time, tokens/s, MFU against the vendor's peak, device peak
memory and compile time), printed and written to ``DIR/summary.txt``.
Framework-free, as every parent process of the benchmark.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from benchmarks.report import figure_value
from common.errors import UserError, run_command

PROG = "python -m benchmarks.gpu_ci"


def preflight() -> None:
    import importlib.util

    from benchmarks import devices
    from common.corpus import resolve_corpus

    if importlib.util.find_spec("pytest") is None:
        raise UserError("the GPU tests need pytest, which is not installed; pip install pytest")
    try:
        devices.resolve(["torch", "jax"], "gpu")
    except UserError as exc:
        raise UserError(f"this machine cannot run the GPU checks: {exc}") from None
    resolve_corpus(None, download=False)  # offline: tiny Shakespeare must be on disk (one line otherwise)


def _steps(folder: Path) -> list[list[str]]:
    rows = []
    path = folder / "steps.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        name, status, seconds = line.split("\t")
        what = {"0": "ok", "124": "timed out", "skip": "skipped: out of time"}.get(status, f"exit status {status}")
        rows.append([name, what, f"{seconds} s"])
    return rows


def _tests(folder: Path) -> list[list[str]]:
    path = folder / "gpu-tests.xml"
    if not path.exists():
        return [["GPU tests", "no JUnit XML", ""]]
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    rows = [["GPU tests", f"{passed} passed, {counts['failures'] + counts['errors']} failed, "
                          f"{counts['skipped']} skipped", f"{float(suite.get('time', 0)):.0f} s"]]
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            if case.find(kind) is not None:
                rows.append([f"  FAIL {case.get('name')}", kind, f"{float(case.get('time', 0)):.0f} s"])
    return rows


def _parity(folder: Path) -> list[list[str]]:
    rows = []
    for path in sorted(folder.glob("parity-*.json")):
        report = json.loads(path.read_text())
        failed = [r["quantity"] for r in report["rows"] if not r["passed"]]
        rows.append([f"parity {report['dtype']} ({report['reference']} vs {report['candidate']})",
                     f"{len(report['rows']) - len(failed)}/{len(report['rows'])} rows pass"
                     + (f"; FAIL {', '.join(failed)}" if failed else ""), f"{report['seconds']:.0f} s"])
    return rows


def _fmt(value: Any, scale: float, fmt: str) -> str:
    return "n/a" if not isinstance(value, (int, float)) or isinstance(value, bool) else fmt.format(value * scale)


BENCH_COLUMNS = [("step_s.median", "step ms", 1e3, "{:.2f}"), ("tokens_per_s", "tokens/s", 1, "{:,.0f}"),
                 ("mfu_vendor", "MFU vendor", 100, "{:.1f}%"), ("device_peak_bytes", "dev MiB", 2 ** -20, "{:.0f}"),
                 ("compile_s", "compile s", 1, "{:.1f}")]


def _benchmarks(folder: Path) -> list[list[str]]:
    rows = [["benchmark", "lane", "dtype", *(c[1] for c in BENCH_COLUMNS)]]
    for path in sorted(folder.glob("bench-*.json")):
        report = json.loads(path.read_text())
        s = report["settings"]
        dtype = next((r["environment"].get("dtype") for r in report["runs"] if r.get("environment")), s["dtype"])
        dtype += " tf32" if s.get("tf32") else ""
        for group in report["summary"]:
            for lane, agg in group["backends"].items():
                bad = [st for st in agg.get("statuses", []) if st != "ok"]
                cells = [_fmt(figure_value(agg, key), scale, fmt) for key, _, scale, fmt in BENCH_COLUMNS]
                rows.append([path.stem[len("bench-"):], lane, dtype, *cells] + ([f"({', '.join(bad)})"] if bad else []))
            ratio = (group.get("ratios") or {}).get("step_s.median")
            if ratio:
                rows.append([path.stem[len("bench-"):], "jax/torch step", "", f"{ratio:.2f}x", "", "", "", ""])
    return rows if len(rows) > 1 else []


def table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def summary(folder: Path) -> str:
    checks = [["step or check", "result", "time"]] + _steps(folder) + _tests(folder) + _parity(folder)
    return (table(checks) + "\n\n" + table(_benchmarks(folder))).rstrip() + "\n"


def run(argv: list[str]) -> int:
    if argv == ["preflight"]:
        preflight()
        return 0
    if len(argv) == 2 and argv[0] == "summary":
        folder = Path(argv[1])
        if not folder.is_dir():
            raise UserError(f"{str(folder)!r} is not a folder of .ci/gpu results")
        text = summary(folder)
        sys.stdout.write(text)
        (folder / "summary.txt").write_text(text)
        return 0
    raise UserError("usage: python -m benchmarks.gpu_ci preflight | summary DIR")


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
