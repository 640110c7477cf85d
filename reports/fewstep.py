"""Few-step flow (issue 16) in one table: every closed-loop point beside the offline sweep's numbers for it.

A *point* is one (evaluation folder, N): a checkpoint run with one solver and time grid at N solver steps.
For each point the table gives its closed-loop success (Wilson interval), the in-rollout flow-loop and whole-call
latency, the paired comparison against a reference point (default: the first folder at its largest N, i.e. the
teacher at N=10) and, where ``--offline`` names a ``vla-flow sweep-offline`` folder, the offline numbers of the
same (checkpoint, solver, grid, N): ``mse_ref`` (integration error against the fine solver), ``mse_demo``
(error against the demonstrations) and the straightness S. The last lines say how well each offline metric
ranks the points as the closed loop does (Spearman's rho between -metric and the success rate): the issue's
question whether the seconds-long offline sweep can choose N instead of the hour-long closed loop.

    python -m reports.fewstep EVALDIR [EVALDIR ...] [--offline DIR] [--ref EVALDIR@N] [--out CSV]

The plot of every point is ``vla-flow report EVALDIR [EVALDIR ...] --out OUT`` (one colour per folder).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from vla_flow.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

OFFLINE_METRICS = ("mse_ref", "mse_demo")


def run_settings(meta: dict) -> dict:
    """The sampler a folder's episodes ran with, from its run.json: checkpoint label, solver, time grid.

    ``inference.solver`` / ``inference.time_grid`` are what ran (recorded since this module exists); older
    records have only the override ``config.solver`` (None meant the checkpoint's own, Euler on the uniform
    grid for every checkpoint this project trained before solvers were configurable)."""
    from eval.offline import checkpoint_label

    inf, cfg = meta.get("inference") or {}, meta.get("config") or {}
    if not meta.get("checkpoint"):
        raise UserError("run.json has no checkpoint: pass folders written by `vla-flow eval`")
    return {"checkpoint": checkpoint_label(meta["checkpoint"]),
            "solver": inf.get("solver") or cfg.get("solver") or "euler",
            "time_grid": inf.get("time_grid") or cfg.get("time_grid") or "uniform",
            # initial-noise scale (recorded since eval.noise_scale exists; before it, always 1)
            "noise_scale": float(inf.get("noise_scale", 1.0))}


def closed_loop_points(df: "pd.DataFrame", settings: dict[str, dict]) -> "pd.DataFrame":
    """One row per (run, N) of a multi-run episodes table (``reports.load`` of several folders).

    ``settings``: run -> :func:`run_settings`. Columns: run, checkpoint, solver, time_grid, N, nfe (network
    calls per action chunk), n_valid, successes, success_rate, ci_low, ci_high, flow_ms (median over episodes of
    the in-rollout flow loop), call_ms (median whole policy call)."""
    import pandas as pd

    from reports.summary import summary

    rows = []
    for run, g in df.groupby("run", sort=False):
        s = settings[run]
        for _, r in summary(g, by=("flow_steps",)).iterrows():
            n = int(r["flow_steps"])
            rows.append({"run": run, **s, "N": n, "nfe": n * (2 if s["solver"] == "midpoint" else 1),
                         **{k: r[k] for k in ("n_valid", "successes", "success_rate", "ci_low", "ci_high",
                                              "flow_ms", "policy_ms_p50")}})
    return pd.DataFrame(rows).rename(columns={"policy_ms_p50": "call_ms"})


def with_reference(points: "pd.DataFrame", df: "pd.DataFrame", ref: tuple[str, int]) -> "pd.DataFrame":
    """Add the paired comparison of every point against ``ref`` = (run, N): ``ref_only`` (pairs the reference
    solves and the point fails), ``point_only`` (the reverse), ``p_ref`` (exact McNemar), ``drop_pts``
    (reference rate - point rate on the pairs, in points) and ``flow_ratio`` (the point's flow loop over the
    reference's)."""
    from reports.summary import ALL_TASKS, paired_points

    out = points.copy()
    ref_flow = out.loc[(out["run"] == ref[0]) & (out["N"] == ref[1]), "flow_ms"]
    if ref_flow.empty:
        raise UserError(f"--ref {ref[0]}@{ref[1]}: no such point; points: "
                        + ", ".join(f"{r}@{n}" for r, n in zip(out["run"], out["N"])))
    cols = {"ref_only": [], "point_only": [], "p_ref": [], "drop_pts": []}
    for run, n in zip(out["run"], out["N"]):
        if (run, n) == tuple(ref):
            for k in cols:
                cols[k].append(math.nan)
            continue
        row = paired_points(df, ref, (run, int(n)))
        row = row[row["task"] == ALL_TASKS].iloc[0]
        cols["ref_only"].append(int(row["b10"]))
        cols["point_only"].append(int(row["b01"]))
        cols["p_ref"].append(float(row["p_value"]))
        cols["drop_pts"].append(-100.0 * float(row["rate_diff"]))
    for k, v in cols.items():
        out[k] = v
    out["flow_ratio"] = out["flow_ms"] / float(ref_flow.iloc[0])
    return out


def with_offline(points: "pd.DataFrame", offline: "pd.DataFrame") -> "pd.DataFrame":
    """Join the offline sweep (``offline.csv``) on (checkpoint, solver, time_grid, noise_scale, N); points it
    did not sweep get NaN. Adds ``S_fine``: the checkpoint's straightness at its finest swept Euler N from
    N(0, I) noise (the paper's S)."""
    keys = ["checkpoint", "solver", "time_grid", "noise_scale", "N"]
    if "noise_scale" not in offline:  # offline.csv files written before --noise-scales: N(0, I) only
        offline = offline.assign(noise_scale=1.0)
    if "noise_scale" not in points:
        points = points.assign(noise_scale=1.0)
    off = offline[keys + list(OFFLINE_METRICS) + ["straightness"]]
    out = points.merge(off, on=keys, how="left")
    euler = offline[(offline["solver"] == "euler") & (offline["time_grid"] == "uniform")
                    & (offline["noise_scale"] == 1.0)]
    fine = euler.sort_values("N").groupby("checkpoint")["straightness"].last()
    out["S_fine"] = out["checkpoint"].map(fine)
    return out


def rank_agreement(table: "pd.DataFrame") -> dict[str, dict]:
    """Spearman's rho between each offline metric (lower is better, so -metric) and closed-loop success,
    over the points that have both: {metric: {"rho", "p", "points"}}. rho = 1: the offline metric orders the
    points exactly as the closed loop does. With few points or tied successes, an indication, not a test.

    p is a two-sided permutation p-value (exact over all pairings up to 7 points, else 9,999 seeded random
    ones): scipy's default t approximation says p = 0 for any perfect ordering, even of 4 points, where the
    exact chance of rho = +-1 is 2/24 = 0.083."""
    from scipy.stats import permutation_test, spearmanr

    out = {}
    for m in OFFLINE_METRICS:
        sub = table.dropna(subset=[m, "success_rate"])
        if len(sub) < 3:
            out[m] = {"rho": math.nan, "p": math.nan, "points": len(sub)}
            continue
        x, y = (-sub[m]).to_numpy(), sub["success_rate"].to_numpy()
        rho = float(spearmanr(x, y).statistic)
        res = permutation_test((x, y), lambda a, b: spearmanr(a, b).statistic, permutation_type="pairings",
                               n_resamples=9999, alternative="two-sided", random_state=0)
        out[m] = {"rho": rho, "p": float(res.pvalue), "points": len(sub)}
    return out


def fewstep_table(dirs: Sequence[str | Path], offline_dir: str | Path | None = None,
                  ref: tuple[str, int] | None = None) -> tuple["pd.DataFrame", dict]:
    """The whole table and the rank agreement (empty without ``offline_dir``) for evaluation folders."""
    import pandas as pd

    from reports.summary import load, load_run_meta, run_names

    if len(dirs) < 1:
        raise UserError("pass at least one evaluation folder")
    names = run_names(dirs)
    df = load(list(dirs)) if len(dirs) > 1 else load(dirs[0]).assign(run=names[0])
    settings = {name: run_settings(load_run_meta(d)) for name, d in zip(names, dirs)}
    points = closed_loop_points(df, settings)
    if ref is None:
        first = points[points["run"] == names[0]]
        ref = (names[0], int(first["N"].max()))
    table = with_reference(points, df, ref)
    agreement = {}
    if offline_dir is not None:
        path = Path(offline_dir) / "offline.csv"
        if not path.is_file():
            raise UserError(f"--offline {offline_dir}: no offline.csv there; pass a `vla-flow sweep-offline` --out folder")
        table = with_offline(table, pd.read_csv(path))
        agreement = rank_agreement(table)
    return table, agreement


def _parse_ref(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    run, sep, n = text.rpartition("@")
    if not sep or not n.isdigit():
        raise UserError(f"--ref {text!r}: expected FOLDER@N, e.g. base@10")
    return Path(run).name, int(n)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    p = argparse.ArgumentParser(prog="python -m reports.fewstep", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", metavar="EVALDIR", help="folders written by `vla-flow eval`")
    p.add_argument("--offline", help="a `vla-flow sweep-offline` --out folder (offline.csv) covering the checkpoints")
    p.add_argument("--ref", help="the reference point FOLDER@N (default: the first folder at its largest N)")
    p.add_argument("--out", help="also write the table to this CSV")
    args = p.parse_args(argv)

    try:
        table, agreement = fewstep_table(args.dirs, args.offline, _parse_ref(args.ref))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        from vla_flow.io import atomic_path

        with atomic_path(Path(args.out)) as tmp:
            table.to_csv(tmp, index=False)
    with pd.option_context("display.float_format", lambda x: f"{x:.4g}", "display.width", 200,
                           "display.max_columns", 40):
        print(table.to_string(index=False))
    for m, a in agreement.items():
        print(f"Spearman rho (-{m} vs closed-loop success) = {a['rho']:.2f} over {a['points']} points"
              f" (p = {a['p']:.2g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
