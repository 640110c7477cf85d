"""The suite view of an evaluation: a task x N success table whose first row is the suite (all tasks
pooled, Wilson 95% interval), and the published LIBERO figures it is read against.

Why a separate table from ``report_summary``: the field compares policies by one number per suite (LIBERO
protocol: every task x the 50 official init states = 500 episodes for a 10-task suite), so a reader wants
that row first and the tasks as rows with N as columns, not one long list of (task, N) rows.

The suite row pools episodes (successes / valid episodes over every task), which equals the mean of the
per-task rates only when every task has the same number of valid episodes; it is labelled "pooled".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from reports.stats import wilson_interval

if TYPE_CHECKING:
    import pandas as pd

SUITE_ROW = "suite (pooled)"


@dataclass(frozen=True)
class Published:
    """One published suite result, with what a reader needs to know to compare it with ours."""

    method: str
    suite: str
    success: float  # fraction, 0..1
    protocol: str  # demos and encoders
    source: str


# LIBERO-Spatial, 50 episodes per task (500), as cited in this project's issue tracker (issue 18).
# Every one of these trains on LIBERO's human-teleoperated demos; ours are scripted-expert demos and our CLIP
# is random-init (no weights can be downloaded here), so the comparison is context, not a like-for-like race.
PUBLISHED = [
    Published("OpenVLA-OFT", "libero_spatial", 0.976, "human demos; pretrained VLA, fine-tuned",
              "Kim et al. 2025 (OpenVLA-OFT)"),
    Published("pi0", "libero_spatial", 0.968, "human demos; pretrained VLM + flow head, fine-tuned",
              "Black et al. 2024, as reported by OpenVLA-OFT"),
    Published("OpenVLA", "libero_spatial", 0.847, "human demos; pretrained VLA, fine-tuned",
              "Kim et al. 2024 (OpenVLA)"),
    Published("Diffusion Policy (from scratch)", "libero_spatial", 0.783,
              "human demos; no pretraining; 3 seeds x 500", "OpenVLA paper, Kim et al. 2024"),
    Published("MDT", "libero_spatial", 0.785, "human demos", "secondary table (as cited in issue 18)"),
    Published("ACT (reproduction)", "libero_spatial", 0.820, "human demos",
              "secondary table (as cited in issue 18)"),
    Published("MINT-30M", "libero_spatial", 0.986, "human demos; 30M head on frozen pretrained encoders",
              "arXiv 2602.08602, secondary table"),
]


def published_for(suite: str) -> list[Published]:
    """Published figures for ``suite`` (a perturbed suite such as ``libero_spatial_swap`` has none)."""
    return [p for p in PUBLISHED if p.suite == suite]


def _cell(valid: "pd.DataFrame") -> dict:
    n, k = len(valid), int(valid["success"].sum())
    low, high = wilson_interval(k, n)
    return {"successes": k, "n_valid": n, "rate": k / n if n else float("nan"), "ci_low": low, "ci_high": high}


def suite_table(df: "pd.DataFrame") -> "pd.DataFrame":
    """Long table, one row per (task, N) plus the pooled suite row per N first.

    Columns: ``task`` (``SUITE_ROW`` for the pooled row), ``task_index`` (-1 for it), ``flow_steps``,
    ``successes``, ``n_valid`` (status ``ok`` episodes), ``n_error``, ``rate``, ``ci_low``, ``ci_high``.
    Errors are counted apart and left out of the rate, as everywhere in reports/.
    """
    import pandas as pd

    rows = []
    for n_steps, g in df.groupby("flow_steps", sort=True):
        valid = g[g["status"] == "ok"]
        rows.append({"task": SUITE_ROW, "task_index": -1, "flow_steps": int(n_steps),
                     "n_error": len(g) - len(valid), **_cell(valid)})
    for (index, task, n_steps), g in df.groupby(["task_index", "task", "flow_steps"], sort=True):
        valid = g[g["status"] == "ok"]
        rows.append({"task": task, "task_index": int(index), "flow_steps": int(n_steps),
                     "n_error": len(g) - len(valid), **_cell(valid)})
    cols = ["task", "task_index", "flow_steps", "successes", "n_valid", "n_error", "rate", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


def suite_grid(df: "pd.DataFrame") -> dict:
    """The task x N grid for the report: {"ns": [N...], "rows": [{"task", "task_index", "cells": {N: cell}}]},
    the pooled suite row first. A cell is the dict of ``suite_table``'s columns for that (task, N)."""
    table = suite_table(df)
    ns = sorted(int(n) for n in table["flow_steps"].unique())
    rows = []
    for (index, task), g in table.groupby(["task_index", "task"], sort=True):
        rows.append({"task": task, "task_index": int(index),
                     "cells": {int(r["flow_steps"]): r for r in g.to_dict("records")}})
    return {"ns": ns, "rows": rows}


def format_suite(df: "pd.DataFrame") -> str:
    """Plain-text task x N table (k/n and rate; the suite row with its interval) for the terminal/README."""
    grid = suite_grid(df)
    head = f"{'task':<6}" + "".join(f"{'N=' + str(n):>24}" for n in grid["ns"])
    lines = [head]
    for row in grid["rows"]:
        name = "suite" if row["task_index"] < 0 else str(row["task_index"])
        cells = []
        for n in grid["ns"]:
            c = row["cells"].get(n)
            if c is None:
                cells.append(f"{'-':>24}")
                continue
            text = f"{c['successes']}/{c['n_valid']} {100 * c['rate']:.1f}%"
            if row["task_index"] < 0:
                text += f" [{100 * c['ci_low']:.1f},{100 * c['ci_high']:.1f}]"
            cells.append(f"{text:>24}")
        lines.append(f"{name:<6}" + "".join(cells))
    return "\n".join(lines)
