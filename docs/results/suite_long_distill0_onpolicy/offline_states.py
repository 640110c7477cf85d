"""How far each student's one step from x0 = 0 is from its label (the teacher's 20-step midpoint solution from
0) on the conditioning vectors recorded in each round's student rollouts (fresh layouts, never trained on by a
student that did not see them).

    python docs/results/suite_long_distill0_onpolicy/offline_states.py --run runs/dop/d [--json FILE]

Per (states of round r, student): squared error of the raw actions (clipped to [-1, 1]) over the whole chunk,
mean with a 95% bootstrap interval over states, and grip flips (the gripper command's sign differs from the
label's in any of the 8 executed actions). Students: the demo-frame distillation (docs/results/
suite_long_distill0/policy.pt) and each round's student. Round r's states are in-sample for the students of
round >= r, out-of-sample for the earlier ones.
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
import torch

from policy.checkpoint import load_policy

TEACHER = "docs/results/suite_long/policy.pt"
DISTILL0 = "docs/results/suite_long_distill0/policy.pt"


def states(folder: Path) -> np.ndarray:
    return np.concatenate([np.load(f)["cond"] for f in sorted(glob.glob(str(folder / "rollouts" / "*.npz")))])


@torch.no_grad()
def actions(policy, cond: torch.Tensor, steps: int, solver: str) -> torch.Tensor:
    zero = torch.zeros((cond.shape[0], policy.cfg.chunk_size, policy.cfg.action_dim))
    return policy.sample_actions(cond, steps, zero, solver=solver, time_grid="uniform")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    rounds = sorted(run.glob("round_*"), key=lambda d: int(d.name.split("_")[1]))
    students = {"distill0 (demo frames)": DISTILL0}
    students.update({f"{d.name} student": str(d / "checkpoints" / "last.pt") for d in rounds
                     if (d / "checkpoints" / "last.pt").is_file()})
    teacher = load_policy(TEACHER)
    pols = {k: load_policy(v) for k, v in students.items()}
    n_exec, g = 8, teacher.cfg.gripper_action_index
    rng = np.random.default_rng(0)
    out = []
    for d in rounds:
        cond = torch.from_numpy(states(d))
        label = actions(teacher, cond, 20, "midpoint")
        for name, pol in pols.items():
            one = actions(pol, cond, 1, "euler")
            err = (one - label).pow(2).mean(dim=(1, 2)).numpy()
            flips = (torch.sign(one[:, :n_exec, g]) != torch.sign(label[:, :n_exec, g])).any(dim=1).numpy()
            boot = [err[rng.integers(0, len(err), len(err))].mean() for _ in range(1000)]
            row = {"states": d.name, "n": len(err), "student": name, "error": float(err.mean()),
                   "ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                   "grip_flips": float(flips.mean())}
            out.append(row)
            print(f"{d.name:8s} n={len(err):5d}  {name:24s} error {row['error']:.5f} "
                  f"[{row['ci'][0]:.5f}, {row['ci'][1]:.5f}]  grip flips {row['grip_flips']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
