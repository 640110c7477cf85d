"""The speed/quality plot: success rate (Wilson 95% interval) against the flow-loop time per call, per N.

The speed axis is what N changes: the in-rollout flow loop (``flow_ms`` of the summary, the median over
episodes of each episode's mean ``flow_ms_mean``), on a log scale. The whole call (image encode included,
``policy_ms_p50``) is written beside each point ("N=5 | 63 ms"): it is dominated by the image encode and
machine noise (N=10 plotted faster than N=5 when the total was the axis). Tables without ``flow_ms`` fall
back to the total on the axis.

One panel per task plus an "all tasks" panel first (one panel when there is one task); in each panel one point
per flow-step count N, joined in N order so the trade-off curve reads left (fast) to right (slow). With several
runs (e.g. a checkpoint, its reflow, another solver) each run gets its own colour and its own labels; past three
runs the whole-call figures move into the legend (beside the panel) and the points keep only "N=n".
Matplotlib's Agg backend.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from reports.summary import ALL_TASKS, short_task_names
from vla_flow.io import atomic_path

COLS = 4


def _panel(ax, rows: pd.DataFrame, title: str, colors: dict, xcol: str, totals_in_legend: bool = False) -> None:
    if not (rows["n_valid"] > 0).any():
        ax.text(0.5, 0.5, "no valid episodes", ha="center", va="center", transform=ax.transAxes,
                color="0.4", fontsize=9)
    groups = rows.groupby("run", sort=False) if "run" in rows.columns else [(None, rows)]
    for k, (run, g) in enumerate(groups):
        g = g.sort_values("flow_steps")
        g = g[g["n_valid"] > 0]
        if g.empty:
            continue
        x, y = g[xcol], 100 * g["success_rate"]
        err = [100 * (g["success_rate"] - g["ci_low"]), 100 * (g["ci_high"] - g["success_rate"])]
        color = colors.get(run, "C0")
        label = run
        if totals_in_legend and xcol == "flow_ms":
            lo, hi = g["policy_ms_p50"].min(), g["policy_ms_p50"].max()
            label = f"{run}: call {lo:.0f}" + (f"-{hi:.0f} ms" if round(hi) != round(lo) else " ms")
        ax.errorbar(x, y, yerr=err, fmt="-o", color=color, ms=5, lw=1.2, capsize=3, alpha=0.9, label=label)
        for i, (xi, yi, n, total) in enumerate(zip(x, y, g["flow_steps"], g["policy_ms_p50"])):
            # alternate above/below, and the other way round for every other run, so labels of neighbouring
            # points (close latencies, or the same N of two runs) do not overlap
            label = f"N={n}" if xcol == "policy_ms_p50" or totals_in_legend else f"N={n} | {total:.0f} ms"
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(5, 5 if (i + k) % 2 else -11),
                        fontsize=7, color=color)
    ax.set_title(title, fontsize=8.5, fontweight="bold" if title == ALL_TASKS else "normal")
    ax.set_ylim(-5, 110)
    ax.margins(x=0.18)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)


def speed_quality_plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the plot for a :func:`reports.summary.report_summary` table to ``path`` (PNG, atomic)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [ALL_TASKS] + sorted(t for t in table["task"].unique() if t != ALL_TASKS)
    if len(tasks) == 2:  # one task: its panel would repeat the "all tasks" one
        tasks = tasks[1:]
    runs = list(dict.fromkeys(table["run"])) if "run" in table.columns else [None]
    colors = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    # many runs (e.g. every few-step variant): the whole-call figures go to the legend, points keep "N=n"
    crowded = len(runs) > 3
    cols = min(COLS, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    size = (9.5, 5.2) if crowded and len(tasks) == 1 else (3.6 * cols, 3.3 * rows + 0.7)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, sharex=True, sharey=True)
    short, common = short_task_names(tasks)
    xcol = "flow_ms" if "flow_ms" in table.columns and table["flow_ms"].notna().any() else "policy_ms_p50"
    for ax, task in zip(axes.flat, tasks):
        _panel(ax, table[table["task"] == task], _wrap(short[task]), colors, xcol, crowded)
        if xcol == "flow_ms":
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    for ax in list(axes.flat)[: len(tasks)]:
        ax.tick_params(labelbottom=True, labelleft=True)  # shared axes, but every panel labelled
    call = "legend: whole call incl. image encode (median ms)" if crowded else \
        "labels: N | whole call incl. image encode (median ms)"
    fig.supxlabel(f"flow loop per call (ms, in rollout; log scale); {call}"
                  if xcol == "flow_ms" else "median policy latency per call (ms)", fontsize=9)
    fig.supylabel("success rate (%)", fontsize=9)
    if crowded:
        axes.flat[0].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="run",
                            title_fontsize=8, frameon=False)  # beside the panel, clear of the points
    elif len(runs) > 1:
        axes.flat[0].legend(loc="lower right", fontsize=8, title="run", title_fontsize=8)  # clear of the title
    title = "Speed vs quality: success rate with Wilson 95% interval, one point per flow-step count N"
    fig.suptitle(title + (f"\ntasks: {common}" if common else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _wrap(task: str, width: int = 46, lines: int = 3) -> str:
    """Panel titles: wrap long task names onto a few lines instead of cutting them."""
    import textwrap

    wrapped = textwrap.wrap(task.replace("_", " "), width)
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: width - 1] + "…"
    return "\n".join(wrapped)
