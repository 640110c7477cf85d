"""Issue 18 lever: fine-tune the 40k suite policy on demos whose arm starts where the benchmark's does.

The official init states start the arm with robosuite's 0.02 rad joint noise; every earlier demo started it at
rest (README "Why the official init states are harder"). This run draws 12 scripted-expert episodes per task
on fresh layouts with ``env.robot_init_noise=0.02`` (layout seed 2), fine-tunes the committed 40k policy on
them (``train.init_from``), and evaluates it on the official init states at N=10. This script pairs its
episodes with the committed 40k rows (``docs/results/suite_long/episodes.parquet``, N=10, same task, init state
and seed) and prints per task: both successes, gained / lost and the exact McNemar p.

    python docs/results/suite_noise_ft/compare.py                       # from the committed episodes.parquet
    python docs/results/suite_noise_ft/compare.py --runs runs/suite_noise/eval_*   # gathers the eval runs first
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from reports.stats import mcnemar_exact, wilson_interval

HERE = Path(__file__).resolve().parent
KEY = ["task_index", "init_state", "seed"]


def gather(runs: list[str]) -> pd.DataFrame:
    """The episodes of every eval run folder, one table (each run evaluates other tasks)."""
    frames = [pd.read_parquet(Path(r) / "episodes.parquet") for r in runs]
    table = pd.concat(frames, ignore_index=True).sort_values(KEY + ["flow_steps"]).reset_index(drop=True)
    if table.duplicated(KEY + ["flow_steps"]).any():
        raise SystemExit("error: the runs overlap (the same task, init state, seed and N twice); give each once")
    return table


def paired(new: pd.DataFrame, base: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    a = base[base.flow_steps == n][KEY + ["success"]]
    b = new[new.flow_steps == n][KEY + ["success", "status"]]
    both = b.merge(a, on=KEY, suffixes=("_ft", "_40k"), validate="one_to_one")
    rows = []
    for task, g in list(both.groupby("task_index")) + [("pooled", both)]:
        gained = int((g.success_ft & ~g.success_40k).sum())
        lost = int((~g.success_ft & g.success_40k).sum())
        lo, hi = wilson_interval(int(g.success_ft.sum()), len(g))
        rows.append({"task": task, "n": len(g), "40k": int(g.success_40k.sum()), "fine-tuned": int(g.success_ft.sum()),
                     "fine-tuned 95% CI": f"[{lo:.2f}, {hi:.2f}]", "gained": gained, "lost": lost,
                     "McNemar p": mcnemar_exact(gained, lost), "not ok": int((g.status != "ok").sum())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="*", help="eval run folders to gather into episodes.parquet first")
    args = ap.parse_args()
    if args.runs:
        gather(args.runs).to_parquet(HERE / "episodes.parquet", index=False)
    new = pd.read_parquet(HERE / "episodes.parquet")
    base = pd.read_parquet(HERE.parent / "suite_long" / "episodes.parquet")
    print(paired(new, base).to_string(index=False))


if __name__ == "__main__":
    main()
