"""Fresh random layouts against the official init states (issues 16 and 18).

Every policy here was trained on scripted demos drawn on fresh random BDDL layouts; the benchmark scores it on
LIBERO's 50 official init states per task. ``vla-flow dagger`` rolls a policy out on fresh layouts (layout
seed ``seed * 1_000_000 + i``, the same layouts for every checkpoint given the same ``--seed``), so its
``rollouts/r_<i>.npz`` measure the policy on its training distribution. This script gathers those rollouts
into one table (``rollouts.parquet``: run, checkpoint, task_index, layout seed, N, ``robot_init_noise``,
success, steps, status, the arm's joint positions at the first query),
and prints, per task and policy, the success on fresh layouts beside the same policy's success on the
official init states (the committed ``episodes.parquet`` of that checkpoint), the spread of the arm's start
pose on fresh layouts and in the official init states, and every pair of variants on the layouts both ran
(exact McNemar). ``env.robot_init_noise`` perturbs only the arm, from a generator of its own, so a layout
seed gives the same objects with and without it: those pairs are paired.

    python docs/results/fresh_layouts/collect.py --runs runs/teacher10_fresh_t* runs/distill0_dagger_t*   # writes rollouts.parquet
    python docs/results/fresh_layouts/collect.py      # recomputes the tables from the committed rollouts.parquet
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from reports.stats import mcnemar_exact, wilson_interval

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
# the committed episodes tables of each checkpoint on the official init states
OFFICIAL = {"docs/results/suite_long/policy.pt": ("suite_long", "40k policy"),
            "docs/results/suite_long_distill0/policy.pt": ("suite_long_distill0", "distilled student")}


def gather(runs: list[str]) -> pd.DataFrame:
    from vla_flow.dagger import load_rollout

    names = pd.read_parquet(RESULTS / "suite_long" / "episodes.parquet")[["task", "task_index"]].drop_duplicates()
    index = dict(zip(names.task, names.task_index))
    rows = []
    for run in runs:
        meta = json.loads((Path(run) / "dagger.json").read_text())
        task = Path(meta["dataset"]).name.removesuffix("_demo.hdf5")
        for f in sorted((Path(run) / "rollouts").glob("r_*.npz")):
            r = load_rollout(f)
            rows.append({"run": Path(run).name, "checkpoint": meta["checkpoint"],
                         "checkpoint_sha256": meta["checkpoint_sha256"], "task": task, "task_index": index[task],
                         "layout_seed": int(r["seed"]), "flow_steps": int(meta["flow_steps"]),
                         "robot_init_noise": float(meta.get("robot_init_noise", 0.0)),
                         "home_arm": bool(meta.get("home_arm", False)),  # eval.home_arm (envs/homing.py)
                         "success": bool(r["success"]), "steps": int(r["steps"]), "status": r["status"],
                         # the arm's 7 joint positions at the first policy query (after the settle steps)
                         **{f"arm_q{j}": float(r["state"][0][1 + j]) if len(r["step"]) else np.nan
                            for j in range(7)}})
    return pd.DataFrame(rows)


def cell(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / n:.0%} [{lo:.0%}, {hi:.0%}]"


def mcnemar(a: pd.Series, b: pd.Series) -> str:
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return f"{only_a} / {only_b}, p = {mcnemar_exact(only_a, only_b):.2g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", default=None, help="`vla-flow dagger` folders (omit: the committed table)")
    args = ap.parse_args()
    path = HERE / "rollouts.parquet"
    if args.runs:
        df = gather(args.runs)
        tmp = path.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(path)
        print(f"wrote {path} ({len(df)} rollouts)")
    df = pd.read_parquet(path)
    if "home_arm" not in df.columns:  # a table from before the homing prefix existed
        df["home_arm"] = False
    variant = ["checkpoint", "flow_steps", "robot_init_noise", "home_arm"]
    assert not df.duplicated(variant + ["task_index", "layout_seed"]).any(), "duplicate rollouts"
    print(f"\n{(df.status != 'ok').sum()} of {len(df)} rollouts not ok\n")
    print("| task | policy, N, arm init noise (rad) | fresh layouts | official init states 0-49 (same N) |")
    print("|---|---|---|---|")
    ok = df[df.status == "ok"]
    name = lambda ckpt, n, noise, home: f"{OFFICIAL[ckpt][1]}, N={n}, noise {noise:g}" + (", homed" if home else "")
    for (task, ckpt, n, noise, home), g in ok.groupby(["task_index"] + variant):
        off = pd.read_parquet(RESULTS / OFFICIAL[ckpt][0] / "episodes.parquet")
        off = off[(off.task_index == task) & (off.flow_steps == n) & (off.seed == 0) & (off.status == "ok")]
        if home:  # homed runs on the official states are their own folders (README "Homing"), not compared here
            off = off.iloc[:0]
        official = cell(int(off.success.sum()), len(off)) if len(off) else "-"
        print(f"| {task} | {name(ckpt, n, noise, home)} | {cell(int(g.success.sum()), len(g))} | {official} |")
    arm = [f"arm_q{j}" for j in range(7)]
    print("\nThe arm's start (joint positions after the settle steps, rad): std over episodes per joint")
    for (ckpt, n, noise, home), g in ok.groupby(variant):
        print(f"  fresh layouts, noise {noise:g} ({name(ckpt, n, noise, home)}, {len(g)}): "
              + " ".join(f"{v:.4f}" for v in g[arm].std().values))
    from envs.libero import resolve_task
    from envs.tasks import load_init_states
    for task in sorted(ok.task_index.unique()):
        init = load_init_states(resolve_task("libero_spatial", int(task)))  # [time, qpos, qvel]; qpos[0:7] = arm
        print(f"  official init states of task {task} (50, before the settle steps): "
              + " ".join(f"{v:.4f}" for v in init[:, 1:8].std(axis=0)))
    groups = {v: g.set_index(["task_index", "layout_seed"]).success for v, g in ok.groupby(variant)}
    names = list(groups)
    for i, va in enumerate(names):
        for vb in names[i + 1:]:
            a, b = groups[va], groups[vb]
            both = a.index.intersection(b.index)
            if not len(both) or sum([va[:2] != vb[:2], va[2] != vb[2], va[3] != vb[3]]) != 1:  # one at a time
                continue
            print(f"\n{name(*va)} against {name(*vb)}, the same fresh layouts (only the first / only the second, "
                  "exact McNemar):")
            for task in sorted(set(both.get_level_values(0))):
                keys = [k for k in both if k[0] == task]
                print(f"  task {task}: {cell(int(a[keys].sum()), len(keys))} vs {cell(int(b[keys].sum()), len(keys))}; "
                      f"{mcnemar(a[keys], b[keys])}")
            print(f"  pooled: {cell(int(a[both].sum()), len(both))} vs {cell(int(b[both].sum()), len(both))}; "
                  f"{mcnemar(a[both], b[both])}")


if __name__ == "__main__":
    main()
