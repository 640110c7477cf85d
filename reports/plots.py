"""The speed/quality plot: success rate (Wilson 95% interval) against median policy latency, per N.

One panel per task plus an "all tasks" panel first; in each panel one point per flow-step count N,
labelled "N=...", joined in N order so the trade-off curve reads left (fast) to right (slow). With several
runs each run gets its own colour. Matplotlib's Agg backend: no display needed.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from reports.summary import ALL_TASKS, short_task_names
from vla_flow.io import atomic_path

COLS = 4


def _panel(ax, rows: pd.DataFrame, title: str, colors: dict) -> None:
    if not (rows["n_valid"] > 0).any():
        ax.text(0.5, 0.5, "no valid episodes", ha="center", va="center", transform=ax.transAxes,
                color="0.4", fontsize=9)
    groups = rows.groupby("run", sort=False) if "run" in rows.columns else [(None, rows)]
    for k, (run, g) in enumerate(groups):
        g = g.sort_values("flow_steps")
        g = g[g["n_valid"] > 0]
        if g.empty:
            continue
        x, y = g["policy_ms_p50"], 100 * g["success_rate"]
        err = [100 * (g["success_rate"] - g["ci_low"]), 100 * (g["ci_high"] - g["success_rate"])]
        color = colors.get(run, "C0")
        ax.errorbar(x, y, yerr=err, fmt="-o", color=color, ms=5, lw=1.2, capsize=3, alpha=0.9,
                    label=run)
        if k > 0:
            continue  # several runs share the same N: label the first run's points only
        for i, (xi, yi, n) in enumerate(zip(x, y, g["flow_steps"])):
            # alternate above/below so labels of neighbouring N (close latencies) do not overlap
            ax.annotate(f"N={n}", (xi, yi), textcoords="offset points", xytext=(5, 5 if i % 2 else -11),
                        fontsize=8, color=color)
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
    runs = list(dict.fromkeys(table["run"])) if "run" in table.columns else [None]
    colors = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    cols = min(COLS, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows + 0.7), squeeze=False,
                             sharex=True, sharey=True)
    short, common = short_task_names(tasks)
    for ax, task in zip(axes.flat, tasks):
        _panel(ax, table[table["task"] == task], _wrap(short[task]), colors)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    for ax in list(axes.flat)[: len(tasks)]:
        ax.tick_params(labelbottom=True, labelleft=True)  # shared axes, but every panel labelled
    fig.supxlabel("median policy latency per call (ms)", fontsize=9)
    fig.supylabel("success rate (%)", fontsize=9)
    if len(runs) > 1:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper left", fontsize=8, title="run", title_fontsize=8)
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
