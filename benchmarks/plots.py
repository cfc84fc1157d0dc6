"""``--plot DIR``: step time and tokens/s per backend, with error bars (matplotlib, Agg).

Bars (or points) are the median step time over all timed steps of all repeats; the
error bars span p10..p90. Tokens/s is tokens per step over those same step times.
With ``--sweep``, the figures are drawn against the swept value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.outputs import save_figure

COLORS = {"torch": "#ee4c2c", "jax": "#5e97f6"}


def color(lane: str) -> str | None:
    """A backend's colour for its lanes (``torch compile=...`` is torch's)."""
    return COLORS.get(lane.split(" ")[0])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(report: dict[str, Any], backend: str):
    """(x labels/values, median, low, high, tokens median, low, high) over the summary groups."""
    out = []
    for group in report["summary"]:
        agg = group["backends"].get(backend)
        if not agg or not agg["step_s"]["median"]:
            continue
        s, tpi = agg["step_s"], agg["tokens_per_iter"] or 0
        x = next(iter(group["sweep"].values())) if group["sweep"] else None
        out.append((x, s["median"] * 1e3, s["p10"] * 1e3, s["p90"] * 1e3,
                    tpi / s["median"], tpi / s["p90"], tpi / s["p10"]))
    return out


def plot_names(sweep_key: str | None, profile: bool) -> list[str]:
    """The files ``write_plots`` may write (``categories.png`` only with a profile)."""
    names = [f"{what}_vs_{sweep_key}.png" if sweep_key else f"{what}.png" for what in ("step_time", "tokens_per_s")]
    return names + (["categories.png"] if profile else [])


def write_plots(report: dict[str, Any], out_dir: str | Path) -> list[str]:
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = report["settings"]
    from benchmarks.report import lane_names

    backends = lane_names(settings)
    sweep = settings.get("sweep")
    title = f"MicroGPT {settings['preset']} on {report['environment']['host']['cpu_model']}"
    paths = []
    step_name, tokens_name, categories_name = plot_names(sweep["key"] if sweep else None, profile=True)
    for name, ylabel, idx in ((step_name, "step time (ms), median, p10-p90", (1, 2, 3)),
                              (tokens_name, "tokens/s, median, p10-p90", (4, 5, 6))):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        if sweep:
            for b in backends:
                pts = _series(report, b)
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                mid = [p[idx[0]] for p in pts]
                err = [[m - p[idx[1]] for m, p in zip(mid, pts)], [p[idx[2]] - m for m, p in zip(mid, pts)]]
                numeric = all(isinstance(x, (int, float)) for x in xs)
                positions = xs if numeric else list(range(len(xs)))
                ax.errorbar(positions, mid, yerr=err, marker="o", capsize=4, label=b, color=color(b))
                if not numeric:
                    ax.set_xticks(positions, [str(x) for x in xs])
            ax.set_xlabel(sweep["key"])
            if all(isinstance(v, (int, float)) and v > 0 for v in sweep["values"]) and len(sweep["values"]) > 2 \
                    and max(sweep["values"]) / min(sweep["values"]) >= 8:
                ax.set_xscale("log", base=2)
            ax.legend()
        else:
            names, mids, lows, highs = [], [], [], []
            for b in backends:
                pts = _series(report, b)
                if pts:
                    p = pts[0]
                    names.append(b)
                    mids.append(p[idx[0]])
                    lows.append(p[idx[0]] - p[idx[1]])
                    highs.append(p[idx[2]] - p[idx[0]])
            ax.bar(names, mids, yerr=[lows, highs], capsize=6, color=[color(n) or "grey" for n in names])
            for i, m in enumerate(mids):
                ax.annotate(f"{m:,.1f}" if m < 1000 else f"{m:,.0f}", (i, m), ha="center", va="bottom",
                            xytext=(0, 3), textcoords="offset points", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        save_figure(fig, out / name)
        plt.close(fig)
        paths.append(str(out / name))
    by_lane = {r.get("lane", r["backend"]): r["profile"]["categories"] for r in report["runs"]
               if (r.get("profile") or {}).get("categories", {}).get("steps")}
    if by_lane:
        paths.append(write_categories(by_lane, out / categories_name, title))
    return paths


def write_categories(by_lane: dict[str, dict], path: Path, title: str) -> str:
    """One stacked bar per lane: seconds per step in each category (``benchmarks.attribution``)."""
    from benchmarks.attribution import CATEGORIES

    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    names = list(by_lane)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4.6), dpi=120)
    bottom = [0.0] * len(names)
    for i, cat in enumerate(CATEGORIES):
        heights = [by_lane[n]["seconds"][cat] for n in names]
        if not any(heights):
            continue
        ax.bar(names, heights, bottom=bottom, color=cmap(i), label=cat, width=0.6)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for i, total in enumerate(bottom):
        ax.annotate(f"{total:.3g} s", (i, total), ha="center", va="bottom", xytext=(0, 3),
                    textcoords="offset points", fontsize=8)
    ax.set_ylabel("seconds per step (profiled steps)")
    ax.set_title(f"where the step goes:\n{title}", fontsize=9)  # two lines: a long CPU name fits
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return str(path)
