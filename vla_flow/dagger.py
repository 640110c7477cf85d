"""``vla-flow dagger``: one round of DAgger data collection (expert takeovers of the policy's own rollouts).

    policy rollouts on fresh layouts (snapshots at every query) -> takeover points -> the scripted expert
    continues from each (``envs.takeover``) -> successful continuations as demos in LIBERO's HDF5 layout

Then train on the aggregate: ``vla-flow train --config C --data DEMOS.hdf5 --data DIR/demos/<task>_demo.hdf5``.

Why takeovers and not per-state relabeling: the expert is a phase machine whose action is right along its
own trajectory; from a foreign state it is right once its phase is inferred, and it stays right as it runs
on. So each takeover is an ordinary demonstration that happens to start where the policy went, chunks of
actions included. Rollouts use fresh BDDL layouts drawn with seeds ``seed * 1_000_000 + i`` (never the
official init states, which stay held out for evaluation; keep ``--seed`` apart from the demos' seed).

Outputs under ``--out``: ``rollouts/r_<i>.npz`` (one per rollout: success, steps, the query steps and
their env snapshots), ``demos/<task>_demo.hdf5`` (the takeovers; per demo ``start_step`` > 0), and
``dagger.json`` (the round's numbers). Each part is written atomically and a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vla_flow.errors import UserError

SNAPSHOT_KEYS = ("state", "gripper_action", "warmstart", "step")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "dagger", help="DAgger round: roll out a policy, let the scripted expert take over, save the demos",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="policy checkpoint (.pt) from `vla-flow train`")
    p.add_argument("--config", default="quickstart", help="experiment YAML or preset (env and eval sections)")
    p.add_argument("--out", required=True, help="output folder (rollouts/, demos/, dagger.json)")
    p.add_argument("--rollouts", type=int, default=20, help="policy rollouts on fresh layouts (default 20)")
    p.add_argument("--seed", type=int, default=100, help="layout seed of the rollouts (default 100)")
    p.add_argument("--flow-steps", type=int, default=10, help="flow steps N of the rollouts (default 10)")
    p.add_argument("--per-failure", type=int, default=4, help="takeovers per failed rollout (default 4)")
    p.add_argument("--per-success", type=int, default=1, help="takeovers per successful rollout (default 1)")
    p.add_argument("--workers", type=int, help="simulator workers (default: the config's eval.workers)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------- rollouts

def save_rollout(path: Path, res) -> None:
    """One rollout (``eval.rollout.EpisodeResult`` with snapshots) -> ``path`` (.npz), atomically."""
    from vla_flow.io import atomic_path

    snaps = res.snapshots
    arrays = {k: np.stack([np.asarray(s[k]) for s in snaps]) if snaps else np.zeros((0,)) for k in SNAPSHOT_KEYS}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, success=res.success, steps=res.steps, status=res.status, seed=res.key.seed,
                     error=res.error, **arrays)


def load_rollout(path: Path) -> dict:
    """A rollout .npz (this module's or ``vla_flow.distill``'s) as a dict: arrays, and 0-d entries as scalars."""
    with np.load(path) as z:
        return {k: z[k].item() if z[k].ndim == 0 else z[k] for k in z.files}


def collect_rollouts(cfg, env_cfg, checkpoint: str, out: Path, n: int, seed: int, flow_steps: int,
                     workers: int) -> list[dict]:
    """Roll the policy out on ``n`` fresh layouts (``rollouts/r_<i>.npz``, resumable); return all n."""
    from envs.libero import resolve_task
    from envs.workers import WorkerPool
    from eval.episodes import EpisodeKey
    from eval.evaluate import make_caller, validate
    from eval.rollout import RolloutSettings, Rollouts
    from policy.checkpoint import load_policy
    from tqdm import tqdm
    from vla_flow.config import to_dict

    task = resolve_task(env_cfg.suite, env_cfg.task)
    folder = out / "rollouts"
    keys = [EpisodeKey(task.index, flow_steps, seed * 1_000_000 + i, None, task.suite, task.name) for i in range(n)]
    path = {k: folder / f"r_{i:04d}.npz" for i, k in enumerate(keys)}
    todo = [k for k in keys if not path[k].is_file()]
    if todo:
        plan = validate(cfg, checkpoint)
        policy = load_policy(checkpoint, cfg.device)
        caller, _ = make_caller(policy, cfg, plan)
        settings = RolloutSettings(env_cfg={**to_dict(env_cfg), "task": task.index}, max_steps=plan.max_steps,
                                   n_action_steps=plan.n_action_steps,
                                   horizon=int(plan.policy_cfg.get("chunk_size", 1)),
                                   call_timeout_s=cfg.call_timeout_s, episode_timeout_s=cfg.episode_timeout_s,
                                   max_retries=cfg.max_retries, record_snapshots=True,
                                   home_arm=cfg.home_arm)
        with WorkerPool(min(workers, len(todo))) as pool, tqdm(total=n, initial=n - len(todo), desc="rollouts",
                                                                unit="ep") as bar:
            for res in Rollouts(pool, caller, settings).run([(k, False, task.language) for k in todo]):
                save_rollout(path[res.key], res)
                bar.update(1)
                bar.set_postfix(success=res.success, steps=res.steps)
    return [load_rollout(path[k]) for k in keys]


# ------------------------------------------------------------------------------------- takeovers

def takeover_plans(rollouts: list[dict], per_failure: int, per_success: int) -> list:
    """``EpisodePlan``s (index in rollout order) starting from the chosen snapshots of each rollout.
    A rollout that ended in error contributes nothing (its states may be the simulator's fault)."""
    from envs.demos import EpisodePlan
    from envs.takeover import pick_takeover_steps

    plans = []
    for r in rollouts:
        if r["status"] != "ok" or not len(r["step"]):
            continue
        for j in pick_takeover_steps(r["step"], r["steps"], r["success"], per_failure, per_success):
            snap = {k: r[k][j] for k in SNAPSHOT_KEYS}
            plans.append(EpisodePlan(len(plans), None, int(r["seed"]), start=snap))
    return plans


def run(args: argparse.Namespace) -> int:
    from envs.config import DemoConfig
    from envs.gl import ensure_gl_backend
    from eval.commands import eval_configs
    from envs.demos import generate_demos
    from eval.results import file_sha256
    from vla_flow.config import resolve_config_path
    from vla_flow.experiment import load_experiment
    from vla_flow.io import atomic_write_text

    ensure_gl_backend()
    for name in ("rollouts", "per_failure", "per_success", "flow_steps"):
        if getattr(args, name) < (1 if name in ("rollouts", "flow_steps") else 0):
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= "
                            f"{1 if name in ('rollouts', 'flow_steps') else 0}")
    if not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint {args.checkpoint} not found; train one with `vla-flow train`")
    exp = load_experiment(resolve_config_path(args.config), args.overrides)
    cfg, _ = eval_configs(args.config, args.overrides, {"flow_steps": [args.flow_steps], "init_states": [0],
                                                        "seeds": [0], "workers": args.workers})
    env_cfg = exp.env
    workers = args.workers or cfg.workers
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"vla-flow dagger: {args.rollouts} rollouts of {args.checkpoint} at N={args.flow_steps}, layouts seed "
          f"{args.seed}; takeovers: {args.per_failure} per failure, {args.per_success} per success")
    rollouts = collect_rollouts(cfg, env_cfg, args.checkpoint, out, args.rollouts, args.seed, args.flow_steps,
                                workers)
    t_roll = time.perf_counter() - t0
    plans = takeover_plans(rollouts, args.per_failure, args.per_success)
    if not plans:
        raise UserError("no takeover points: every rollout errored or succeeded at its first query; "
                        "raise --per-success or --rollouts")
    source = {"checkpoint_sha256": file_sha256(args.checkpoint), "rollouts": args.rollouts, "seed": args.seed,
              "flow_steps": args.flow_steps, "per_failure": args.per_failure, "per_success": args.per_success}
    rep = generate_demos(DemoConfig(episodes=len(plans), workers=workers, layouts="random", seed=args.seed),
                         env_cfg, out / "demos", plans=plans, source=source)
    ok = sum(r["success"] for r in rollouts)
    summary = {**source, "checkpoint": str(args.checkpoint), "robot_init_noise": env_cfg.robot_init_noise,
               "home_arm": bool(cfg.home_arm),
               "policy_success": ok,
               "policy_errors": sum(r["status"] != "ok" for r in rollouts), "takeovers": len(plans),
               "takeovers_this_run": rep.tried, "takeovers_ok_this_run": rep.succeeded,
               "num_demos": rep.num_demos, "dataset": rep.path, "rollouts_s": round(t_roll, 1),
               "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out / "dagger.json", json.dumps(summary, indent=2))
    print(f"\npolicy rollouts: {ok}/{len(rollouts)} succeeded ({t_roll / 60:.1f} min)")
    print(rep.table())
    print(f"takeover demos: {rep.num_demos} of {len(plans)} takeover points in {rep.path}")
    print(f"next: vla-flow train --config {args.config} --data <your demos>.hdf5 --data {rep.path} --out RUN")
    return 0
