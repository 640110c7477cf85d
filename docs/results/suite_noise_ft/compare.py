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
from reports.versus import paired_by_task, read_episodes

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="*", help="eval run folders to gather into episodes.parquet first")
    args = ap.parse_args()
    if args.runs:
        read_episodes(args.runs).sort_values(["task_index", "init_state", "seed", "flow_steps"]).to_parquet(
            HERE / "episodes.parquet", index=False)
    new = pd.read_parquet(HERE / "episodes.parquet")
    base = pd.read_parquet(HERE.parent / "suite_long" / "episodes.parquet")
    print(paired_by_task(new, base, 10, names=("fine-tuned", "40k")).to_string(index=False))


if __name__ == "__main__":
    main()
