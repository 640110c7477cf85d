"""The expert as a ceiling for a robustness run: can each perturbed scene be solved at all, and does it settle?

    vla-flow ceiling --suites robustness_spatial --tasks 0 --init-states 0-19 --out DIR

For every suite of the run (the base and its LIBERO-PRO variants, ``eval.robustness.expand_suites``), every
asked base task's paired task and every asked init state (clipped per suite as the robustness run clips
them), this runs the scripted expert as a dry run (it reads the variant's own BDDL goal; cameras off,
nothing recorded) and ``envs.settle_check`` on the same start (no-op steps: how far objects move after
settling, how tilted the target rests, MuJoCo warnings). Without it a policy's drop on a variant cannot be
told apart from a variant nobody can solve. ``_task`` changes the goal: the expert solves the new goal, the
policy was never trained on it.

Output: ``DIR/expert/<suite>.parquet``, one row per (task, init state): ``suite, task_index, base_task,
init_state, status (ok|error), success, steps, drift_mm, drift_object, bowl_tilt_deg, n_warnings``, written atomically per
suite; a rerun skips suites whose file covers the grid without errors. ``vla-flow report DIR`` then puts the
expert's success and the settle numbers beside each suite's row.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from vla_flow.errors import UserError

EXPERT_DIR = "expert"
SETTLE_STEPS_TOTAL = 40  # no-op steps for the settle check (drift measured after the protocol's settle steps)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ceiling", help="the scripted expert's success and the settle check on each suite of a robustness run",
        description="Dry-run the scripted expert (cameras off, nothing recorded) and the settle check on the "
                    "base suite and its LIBERO-PRO variants, task by task and init state by init state; "
                    "writes DIR/expert/<suite>.parquet for `vla-flow report DIR`.")
    p.add_argument("--suites", required=True, help="as for `vla-flow eval --suites`: e.g. robustness_spatial")
    p.add_argument("--tasks", default="0", help="base-suite task indices, e.g. 0 or 0-9 or all (default 0)")
    p.add_argument("--init-states", dest="init_states", default="0-9", help="init state indices (default 0-9)")
    p.add_argument("--workers", type=int, default=2, help="expert worker processes (default 2)")
    p.add_argument("--out", required=True, help="the robustness run's folder (or any folder)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from vla_flow.config import parse_int_list

    if args.workers <= 0:
        raise UserError(f"--workers {args.workers}: must be >= 1")
    try:
        init_states = parse_int_list(args.init_states, "--init-states")
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    df = run_ceiling(args.suites, args.tasks, init_states, args.out, workers=args.workers)
    print(format_summary(summarize(df)))
    return 0


def plan(suites_text: str, tasks_text: str, init_states: list[int]) -> list[tuple[str, list, list[int]]]:
    """``[(suite, [TaskSpec paired with each asked base task], [init states it ships])]``; every check first."""
    from envs.tasks import list_tasks
    from eval.robustness import _available_init_states, base_task_indices, expand_suites, paired_tasks
    from vla_flow.config import parse_int_list

    suites = expand_suites(suites_text)
    base_specs = list_tasks(suites[0])
    try:
        tasks = "all" if str(tasks_text).strip() == "all" else parse_int_list(tasks_text, "--tasks")
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    wanted = base_task_indices(suites[0], base_specs, tasks)
    out = []
    for suite in suites:
        mine = paired_tasks(suite, suites[0], base_specs, wanted)
        out.append((suite, mine, _available_init_states(suite, mine, init_states)))
    return out


def run_ceiling(suites_text: str, tasks_text: str, init_states: list[int], out_dir: str | Path,
                workers: int = 2, progress: bool = True) -> pd.DataFrame:
    """Expert dry runs and settle checks for every (suite, task, init state); returns all rows."""
    from vla_flow.io import atomic_path
    from eval.evaluate import hold_out_dir

    plans = plan(suites_text, tasks_text, init_states)  # all checks before any simulator starts
    folder = Path(out_dir) / EXPERT_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot create {folder} ({exc.strerror}); pass a writable folder") from exc
    frames = []
    with hold_out_dir(folder):
        for i, (suite, specs, states) in enumerate(plans):
            path = folder / f"{suite}.parquet"
            want = {(s.index, k) for s in specs for k in states}
            if path.is_file():
                old = pd.read_parquet(path)
                if set(zip(old["task_index"], old["init_state"])) == want and (old["status"] == "ok").all():
                    if not set(SETTLE_COLUMNS) <= set(old.columns):  # a file from before a settle column existed
                        old = _refresh_settle(old, specs)
                        with atomic_path(path) as tmp:
                            old.to_parquet(tmp, index=False)
                    frames.append(old)
                    continue
            t0 = time.perf_counter()
            rows = [row for spec in specs for row in _task_rows(spec, states, workers)]
            df = pd.DataFrame(rows)
            with atomic_path(path) as tmp:
                df.to_parquet(tmp, index=False)
            frames.append(df)
            if progress:
                ok = df[df["status"] == "ok"]
                print(f"[{i + 1}/{len(plans)}] {suite}: expert {int(ok['success'].sum())}/{len(ok)}, errors "
                      f"{len(df) - len(ok)}, drift max {df['drift_mm'].max():.2f} mm "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return pd.concat(frames, ignore_index=True)


def _task_rows(spec, states: list[int], workers: int) -> list[dict]:
    """One task of one suite: the expert on each start (worker pool), then the settle check in-process."""
    from envs import conventions as C
    from envs.config import DemoConfig, EnvConfig, RenderConfig
    from envs.demos import EpisodePlan, generate_demos
    from envs.libero import LiberoEnv
    from envs.settle_check import check_init_state

    env_cfg = EnvConfig(suite=spec.suite, task=spec.index, reset="soft", render=RenderConfig(cameras=[]))
    plans = [EpisodePlan(j, k, k) for j, k in enumerate(states)]
    rep = generate_demos(DemoConfig(episodes=len(plans), layouts="official", workers=min(workers, len(plans))),
                         env_cfg, "", record=False, plans=plans)
    by_state = {r["init_state"]: r for r in rep.episodes}
    settle = _settle(spec, states)
    rows = []
    for k in states:
        r = by_state.get(k, {})
        rows.append({"suite": spec.suite, "task_index": spec.index, "task": spec.name, "base_task": spec.base_task,
                     "init_state": k, "status": "error" if (not r or r.get("error")) else "ok",
                     "error": (r.get("error") or "") if r else "no result",
                     "success": bool(r.get("success", False)), "steps": int(r.get("steps", 0)), **settle[k]})
    return rows


SETTLE_COLUMNS = ("drift_mm", "drift_object", "bowl", "bowl_tilt_deg", "n_warnings")


def _settle(spec, states: list[int]) -> dict[int, dict]:
    """``envs.settle_check`` on each start of one task, in-process: ``{init_state: {SETTLE_COLUMNS}}``."""
    from envs import conventions as C
    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv
    from envs.settle_check import check_init_state

    cfg = EnvConfig(suite=spec.suite, task=spec.index, settle_steps=0, max_steps=SETTLE_STEPS_TOTAL,
                    reset="soft", render=RenderConfig(cameras=[]))
    out = {k: {"drift_mm": float("nan"), "drift_object": "", "bowl": "", "bowl_tilt_deg": float("nan"),
               "n_warnings": -1} for k in states}
    try:
        with LiberoEnv(spec, cfg) as env:
            for k in states:
                r = check_init_state(env, k, C.SETTLE_STEPS, SETTLE_STEPS_TOTAL)
                out[k] = {"drift_mm": r["drift_mm"], "drift_object": r["drift_object"], "bowl": r["bowl"],
                          "bowl_tilt_deg": r["bowl_tilt_deg"], "n_warnings": int(sum(r["warnings"].values()))}
    except Exception as exc:  # noqa: BLE001 - a scene that cannot settle is reported, not fatal
        print(f"warning: settle check of {spec.suite} task {spec.index} raised {exc!r}", file=sys.stderr)
    return out


def _refresh_settle(df: pd.DataFrame, specs: list) -> pd.DataFrame:
    """Recompute the settle columns of a finished file (no expert rerun: the expert rows are kept)."""
    df = df.copy()
    for spec in specs:
        rows = df["task_index"] == spec.index
        settle = _settle(spec, sorted(df.loc[rows, "init_state"]))
        for col in SETTLE_COLUMNS:
            df.loc[rows, col] = df.loc[rows, "init_state"].map(lambda k: settle[k][col])
    return df


def load_ceiling(directory: str | Path) -> pd.DataFrame | None:
    """Every ``DIR/expert/<suite>.parquet``, or None when the run has no expert ceiling."""
    files = sorted((Path(directory) / EXPERT_DIR).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else None


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per suite: expert successes over ok episodes, errors, settle drift / tilt maxima, warnings."""
    rows = []
    for suite, g in df.groupby("suite", sort=False):
        ok = g[g["status"] == "ok"]
        rows.append({"suite": suite, "expert_n": len(ok), "expert_successes": int(ok["success"].sum()),
                     "expert_rate": float(ok["success"].mean()) if len(ok) else float("nan"),
                     "expert_errors": len(g) - len(ok), "drift_mm_max": float(g["drift_mm"].max()),
                     "bowl_tilt_deg_max": float(g["bowl_tilt_deg"].max()),
                     "n_with_warnings": int((g["n_warnings"] != 0).sum())})
    return pd.DataFrame(rows)


def format_summary(s: pd.DataFrame) -> str:
    lines = ["suite                              expert           errors  drift max (mm)  tilt max (deg)  warned"]
    for r in s.to_dict("records"):
        lines.append(f"{r['suite']:<34} {r['expert_successes']:>3}/{r['expert_n']:<3} {100 * r['expert_rate']:5.1f}%  "
                     f"{r['expert_errors']:>6}  {r['drift_mm_max']:14.2f}  {r['bowl_tilt_deg_max']:14.1f}  "
                     f"{r['n_with_warnings']:>6}")
    return "\n".join(lines)
