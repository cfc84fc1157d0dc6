"""The process settings every lane ran under, side by side: what makes the comparison fair.

Each worker reports ``backends.process.speed_settings``: its device, compute dtype, compute
threads, float32 matmul precision, CPU affinity, C allocator and every environment variable that
can change a step's speed, under the same names in both backends. Here they are compared row by
row across the lanes. A row is

* ``same``: every lane ran with the same value;
* ``variant``: lanes differ only where a named variant declares it changes that row
  (``--malloc``, ``--xla-variant``, ``--devices``), and lanes of one variant agree;
* ``DIFFERS``: anything else, a difference nobody asked for. The default run has none
  (``tests/test_process_settings.py``).
"""

from __future__ import annotations

from typing import Any

SAME, VARIANT, DIFFERS = "same", "variant", "DIFFERS"


def lane_values(runs: list[dict[str, Any]], lane: str) -> dict[str, str] | None:
    """The settings of ``lane``'s first run that reported them (every repeat is a fresh worker
    started the same way)."""
    return next((r["process"] for r in runs if r.get("lane") == lane and r.get("process")), None)


def row_status(values: dict[str, str], declares: dict[str, str]) -> tuple[str, list[str]]:
    """``values``: lane -> value; ``declares``: lane -> the variant that changes this row, if any.
    Lanes are grouped by that variant (no variant: one group): a row is a variant's when each group
    agrees within itself and only the groups differ."""
    if len(set(values.values())) <= 1:
        return SAME, []
    groups: dict[str, set[str]] = {}
    for lane, value in values.items():
        groups.setdefault(declares.get(lane, ""), set()).add(value)
    if all(len(v) == 1 for v in groups.values()):
        return VARIANT, sorted(k for k in groups if k)
    return DIFFERS, sorted(k for k in groups if k)


def compare(runs: list[dict[str, Any]], lanes: list[dict[str, Any]]) -> dict[str, Any]:
    """Every lane's settings and each row's status (the JSON's ``process_settings``)."""
    per_lane = {ln["name"]: lane_values(runs, ln["name"]) for ln in lanes}
    per_lane = {name: v for name, v in per_lane.items() if v is not None}
    names = list(dict.fromkeys(row for v in per_lane.values() for row in v))
    rows = []
    for name in names:
        values = {lane: v.get(name, "not reported") for lane, v in per_lane.items()}
        declares = {ln["name"]: ln.get("declares", {}).get(name) for ln in lanes if ln["name"] in per_lane}
        status, variants = row_status(values, {k: v for k, v in declares.items() if v})
        rows.append({"setting": name, "values": values, "status": status, "variants": variants})
    return {"lanes": list(per_lane), "rows": rows, "differs": [r["setting"] for r in rows if r["status"] == DIFFERS]}


def format_table(table: dict[str, Any]) -> str:
    """Settings down, lanes across, and each row's status; environment variables unset in every
    lane are named on one line instead of a row each."""
    if not table.get("rows"):
        return ""
    lanes = table["lanes"]
    unset = [r["setting"] for r in table["rows"]
             if r["status"] == SAME and r["setting"].startswith("$") and set(r["values"].values()) == {"unset"}]
    shown = [r for r in table["rows"] if r["setting"] not in unset]
    header = ["process setting", *lanes, "status"]
    lines = [header]
    for r in shown:
        status = "" if r["status"] == SAME else (f"variant: {', '.join(r['variants'])}" if r["status"] == VARIANT
                                                 else f"DIFFERS{': ' + ', '.join(r['variants']) if r['variants'] else ''}")
        lines.append([r["setting"], *(r["values"][lane] for lane in lanes), status])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    verdict = ("every lane ran under the same process settings" if not table["differs"] and
               all(r["status"] == SAME for r in table["rows"]) else
               "lanes differ only where a named variant says so" if not table["differs"] else
               f"NOT COMPARABLE: {', '.join(table['differs'])} differ(s) between lanes without a variant saying so")
    out.append(f"{verdict}" + (f"; {len(unset)} more variables unset in every lane (listed in the JSON)" if unset else ""))
    return "\n".join(out)
