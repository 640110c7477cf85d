"""The robustness report: an original LIBERO suite against its LIBERO-PRO variants (``vla-flow eval --suites``).

Input: ``DIR/robustness.json`` (suites, grid, task pairing; eval/robustness.py) and one evaluation folder
``DIR/<suite>/`` per suite. Output in OUT: ``robustness.csv`` (the table), ``robustness.png`` (the plot) and
``robustness.html`` (table, plot, and the episode videos grouped by (base task, init state, seed, N) with one
column per suite, so the same start can be watched on the base and each perturbed scene side by side).

The table, one row per (suite, N): successes / valid episodes with the Wilson 95% interval; for a variant,
the episodes paired with the base by (base task, init state, seed, N) (both valid), the base's and the
variant's rate on those pairs, ``drop_vs_base`` = base rate - variant rate (points, positive = worse), the discordant
counts ``b10`` (base succeeded, variant failed) and ``b01`` (the reverse) and the exact McNemar p-value.
On the pairs, drop = (b10 - b01) / n_pairs exactly. Errors are never failures (reports/summary.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from reports.stats import mcnemar_exact, wilson_interval
from vla_flow.errors import UserError

RUN_FILE = "robustness.json"
OUTPUTS = ("robustness.csv", "robustness.png", "robustness.html")
PAIR_KEY = ["base_task", "init_state", "seed", "flow_steps"]
NAN = float("nan")


def is_robustness_dir(directory: str | Path) -> bool:
    return (Path(directory) / RUN_FILE).is_file()


def load_meta(directory: str | Path) -> dict:
    path = Path(directory) / RUN_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; rerun `vla-flow eval --suites ...` into {directory}") from exc
    for key in ("base_suite", "suites", "suite_info"):
        if key not in meta:
            raise UserError(f"{path} lacks '{key}': not written by `vla-flow eval --suites`; rerun it")
    return meta


def load_episodes(directory: str | Path, meta: dict) -> pd.DataFrame:
    """Every suite's episodes with ``suite`` and ``base_task`` columns (suites not started yet are skipped)."""
    from reports.summary import load

    frames = []
    for suite in meta["suites"]:
        d = Path(directory) / suite
        if not (d / "episodes.parquet").is_file():
            continue
        df = load(d)
        base_of = {p["index"]: p["base_task"] for p in meta["suite_info"][suite]["pairs"]}
        unknown = sorted(set(df["task_index"]) - set(base_of))
        if unknown:
            raise UserError(f"{d}/episodes.parquet has task(s) {unknown} that {RUN_FILE} does not pair with a "
                            "base task; evaluate them through `vla-flow eval --suites` into this folder")
        frames.append(df.assign(suite=suite, base_task=df["task_index"].map(base_of).astype(int),
                                video=[f"{suite}/{v}" if v else "" for v in df["video"]]))
    if not frames:
        raise UserError(f"no episodes yet under {directory}/<suite>/: let `vla-flow eval --suites` finish some")
    return pd.concat(frames, ignore_index=True)


def _rate_row(g: pd.DataFrame) -> dict:
    valid = g[g["status"] == "ok"]
    k, n = int(valid["success"].sum()), len(valid)
    low, high = wilson_interval(k, n)
    return {"n": len(g), "n_error": len(g) - n, "n_valid": n, "successes": k,
            "success_rate": k / n if n else NAN, "ci_low": low, "ci_high": high}


def paired_drop(base: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Pair two suites' episodes of one N on (base_task, init_state, seed); only pairs valid on both sides."""
    a = base.set_index(PAIR_KEY)[["success", "status"]]
    b = other.set_index(PAIR_KEY)[["success", "status"]]
    for side, name in ((a, "base"), (b, "variant")):
        if side.index.duplicated().any():
            raise UserError(f"the {name} suite has several episodes with one key {PAIR_KEY}; a pairing would "
                            "be ambiguous")
    pairs = pd.merge(a, b, left_index=True, right_index=True, suffixes=("_a", "_b"))
    pairs = pairs[(pairs["status_a"] == "ok") & (pairs["status_b"] == "ok")]
    sa, sb = pairs["success_a"].astype(bool), pairs["success_b"].astype(bool)
    n, b10, b01 = len(pairs), int((sa & ~sb).sum()), int((~sa & sb).sum())
    return {"n_pairs": n, "base_rate_paired": float(sa.mean()) if n else NAN,
            "rate_paired": float(sb.mean()) if n else NAN, "drop_vs_base": (b10 - b01) / n if n else NAN,
            "b10": b10, "b01": b01, "p_value": mcnemar_exact(b01, b10) if n else NAN}


def robustness_table(df: pd.DataFrame, base: str, suites: list[str]) -> pd.DataFrame:
    """One row per (suite, N) in the run's suite order; paired columns empty for the base itself."""
    rows = []
    for suite in [s for s in suites if s in set(df["suite"])]:
        for n in sorted(df["flow_steps"].unique()):
            g = df[(df["suite"] == suite) & (df["flow_steps"] == n)]
            if g.empty:
                continue
            row = {"suite": suite, "flow_steps": int(n), **_rate_row(g)}
            ref = df[(df["suite"] == base) & (df["flow_steps"] == n)]
            if suite != base and not ref.empty:
                row.update(paired_drop(ref, g))
            rows.append(row)
    return pd.DataFrame(rows)


def with_ceiling(table: pd.DataFrame, directory: str | Path, episodes: pd.DataFrame) -> pd.DataFrame:
    """Add the expert ceiling (``vla-flow ceiling``, ``DIR/expert/``) per suite: the scripted expert's successes
    and the settle check's largest drift and tilt, on the (task, init state) starts the policy ran in that
    suite (a ceiling run over more starts is cut to those). Unchanged without it."""
    from eval.ceiling import load_ceiling, summarize

    ceiling = load_ceiling(directory)
    if ceiling is None or table.empty:
        return table
    ran = episodes[["suite", "task_index", "init_state"]].drop_duplicates()
    ceiling = ceiling.merge(ran, on=["suite", "task_index", "init_state"], how="inner")
    if ceiling.empty:
        return table
    cols = ["suite", "expert_successes", "expert_n", "expert_rate", "expert_errors", "drift_mm_max",
            "bowl_tilt_deg_max", "n_with_warnings"]
    return table.merge(summarize(ceiling)[cols], on="suite", how="left")


def format_table(table: pd.DataFrame) -> str:
    """Terminal text: suite x N, success [Wilson 95%], then the paired drop and McNemar p."""
    def pct(x):
        return "–" if x != x else f"{100 * x:5.1f}%"

    lines = ["suite                              N   success             [95% CI]        pairs  drop (pts)  b10/b01  p"]
    for r in table.to_dict("records"):
        paired = ""
        if not math.isnan(r.get("n_pairs", NAN)):
            paired = (f"{int(r['n_pairs']):>5}  {100 * r['drop_vs_base']:+8.1f}   "
                      f"{int(r['b10']):>3}/{int(r['b01']):<3}  {r['p_value']:.3g}")
        expert = ""
        if r.get("expert_n", NAN) == r.get("expert_n", NAN) and "expert_n" in r:
            expert = f"  expert {int(r['expert_successes'])}/{int(r['expert_n'])}, drift {r['drift_mm_max']:.2f} mm"
        lines.append(f"{r['suite']:<34} {r['flow_steps']:>2}  {r['successes']:>3}/{r['n_valid']:<3} "
                     f"{pct(r['success_rate'])}  [{pct(r['ci_low'])}, {pct(r['ci_high'])}]  {paired}{expert}")
    return "\n".join(lines)


def robustness_plot(table: pd.DataFrame, base: str, path: str | Path) -> Path:
    """Success rate (Wilson 95% interval) per suite, one colour per N, the base's rate as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vla_flow.io import atomic_path

    suites = list(dict.fromkeys(table["suite"]))
    ns = sorted(table["flow_steps"].unique())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(suites) + 2), 4.2))
    width = 0.8 / max(len(ns), 1)
    for j, n in enumerate(ns):
        t = table[(table["flow_steps"] == n) & (table["n_valid"] > 0)]
        x = [suites.index(s) + (j - (len(ns) - 1) / 2) * width for s in t["suite"]]
        y = 100 * t["success_rate"]
        err = [100 * (t["success_rate"] - t["ci_low"]), 100 * (t["ci_high"] - t["success_rate"])]
        ax.errorbar(x, y, yerr=err, fmt="o", color=f"C{j}", capsize=3, label=f"N={n}")
        ref = t[t["suite"] == base]
        if len(ref):
            ax.axhline(100 * float(ref["success_rate"].iloc[0]), color=f"C{j}", ls="--", lw=0.8, alpha=0.6)
    ax.set_xticks(range(len(suites)))
    ax.set_xticklabels([s if s == base else s[len(base):] for s in suites], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-5, 105)
    ax.set_ylabel("success rate (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="dashed: base", title_fontsize=7)
    ax.set_title(f"{base} and its LIBERO-PRO variants: success with Wilson 95% interval", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def video_groups(df: pd.DataFrame, suites: list[str]) -> list[dict]:
    """Episodes grouped by (base task, init state, seed, N), one cell per suite (outcome + video href)."""
    groups = []
    for key, g in df.groupby(PAIR_KEY, sort=True):
        if not (g["video_href"] != "").any():
            continue
        cells = []
        for suite in suites:
            r = g[g["suite"] == suite]
            if r.empty:
                cells.append({"suite": suite, "outcome": "not run", "href": "", "poster": ""})
                continue
            r = r.iloc[0]
            outcome = ("success" if r["success"] else "failure") if r["status"] == "ok" else r["status"]
            cells.append({"suite": suite, "outcome": outcome, "href": r["video_href"], "task": r["task"],
                          "poster": r.get("poster_href", "")})
        groups.append({"key": dict(zip(PAIR_KEY, map(int, key))), "cells": cells})
    return groups


def make_robustness_report(directory: str | Path, out: str | Path) -> pd.DataFrame:
    """Write robustness.csv, robustness.png and robustness.html into ``out``; return the table."""
    import base64
    import datetime as dt

    import jinja2

    from reports.html import TEMPLATES, _fmt_p, _fmt_pct, poster_hrefs, random_init, video_hrefs
    from reports.summary import load_run_meta
    from vla_flow.io import atomic_path, atomic_write_text

    directory, out = Path(directory), Path(out)
    meta = load_meta(directory)
    df = load_episodes(directory, meta)
    base, suites = meta["base_suite"], [s for s in meta["suites"] if s in set(df["suite"])]
    out.mkdir(parents=True, exist_ok=True)
    table = with_ceiling(robustness_table(df, base, suites), directory, df)
    with atomic_path(out / "robustness.csv") as tmp:
        table.to_csv(tmp, index=False)
    png = robustness_plot(table, base, out / "robustness.png")
    df["video_href"] = video_hrefs(df["video"], directory, out)
    df["poster_href"] = poster_hrefs(df["video"], directory, out)  # the last frame: outcomes scan without playing
    runs = {s: load_run_meta(directory / s) for s in suites}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_fmt_pct, pval=_fmt_p)
    page = env.get_template("robustness.html.j2").render(
        base=base, suites=suites, table=table.to_dict("records"), meta=meta, has_ceiling="expert_n" in table,
        info={s: meta["suite_info"].get(s, {}) for s in suites},
        random_init=any(random_init(m) for m in runs.values()),
        plot=base64.b64encode(png.read_bytes()).decode(), groups=video_groups(df, suites),
        n_episodes=len(df), generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    atomic_write_text(out / "robustness.html", page)
    for name in OUTPUTS:
        (out / name).chmod(0o644)
    return table
