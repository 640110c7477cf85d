"""``vla-flow distill-onpolicy``: distil a flow teacher into a few-step student on the student's own states.

    for each round r = 1..R:
        the student's rollouts on fresh layouts of each task (OUT/round_r/rollouts/t<task>_<i>.npz): the
            conditioning vector cond (D,) of every policy call is recorded
        labels: the teacher's fine solution (reflow.pair_steps x reflow.pair_solver) from the student's start
            x0 (0 for a student with policy.noise_scale 0) under each recorded cond
        the student's velocity head is trained further on all rounds' states so far (plus, with --data, the demo
            frames' conditions and labels) -> OUT/round_r/checkpoints/last.pt
    OUT/checkpoints/last.pt: the last round's student; OUT/distill.json: the rounds' numbers

Why: a student distilled on demonstration frames (``vla-flow reflow --noise-scale 0``) matches its label to
3.6e-4 there but is 12x further from it on the states its own closed loop reaches (README, "The student's own
states"), and that is where it loses to the teacher. DAgger (Ross, Gordon, Bagnell 2011) fixes a learner's
compounding error by labelling the learner's own states; here the labeller is the teacher's map, which is
defined everywhere, so every rollout state gets a label (no takeovers, no simulator resets from snapshots).

Only the velocity head is trained (as in reflow): the student's conditioning must be the teacher's (same
weights), so the cond recorded in the student's rollout is the teacher's cond of that state. Rollouts use fresh
BDDL layouts drawn with seeds ``seed * 1_000_000 + round * 1_000 + i`` (never the official init states,
which stay held out). Each rollout and each round's checkpoint is written atomically; a rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from vla_flow.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill-onpolicy", help="distil a teacher into a few-step student on the student's own rollout states",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", required=True, help="the student checkpoint (e.g. from `vla-flow reflow`)")
    p.add_argument("--teacher", required=True, help="the teacher checkpoint whose map labels the states")
    p.add_argument("--config", default="quickstart", help="experiment YAML or preset (env and eval sections)")
    p.add_argument("--out", required=True, help="output folder (round_<r>/, checkpoints/last.pt, distill.json)")
    p.add_argument("--tasks", default=None, help="task indices of the rollouts, e.g. 0-9 or 2,3,6 (default: the "
                                                 "config's)")
    p.add_argument("--rollouts", type=int, default=5, help="rollouts per task and round (default 5)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of rollouts + training (default 1)")
    p.add_argument("--seed", type=int, default=500, help="layout seed of the rollouts (default 500)")
    p.add_argument("--flow-steps", type=int, default=1, help="flow steps N of the student's rollouts (default 1)")
    p.add_argument("--data", nargs="+", action="extend", default=None, metavar="FILE",
                   help="demo file(s) whose frames are trained on beside the rollout states (the teacher's "
                        "training data, or others with reflow.other_data=true)")
    p.add_argument("--onpolicy-weight", type=float, default=0.5,
                   help="share of the training samples drawn from rollout states when --data is given (default 0.5)")
    p.add_argument("--steps", type=int, default=2000, help="training steps per round (default 2000)")
    p.add_argument("--workers", type=int, help="simulator workers (default: the config's eval.workers)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides: eval.* / env.* for the rollouts, reflow.* (lr, batch_size, pair_steps, "
                        "pair_solver, seed, threads, other_data) for the labels and training")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------- recording cond

class CondRecorder:
    """Wraps an ``eval.rollout.PolicyCaller``: each row's timing dict also carries ``cond`` (D,), the
    policy's conditioning vector of that row (``Rollouts`` keeps them in ``EpisodeResult.conds``).

    ``FlowPolicy.predict`` computes cond internally; the policy's ``condition`` is wrapped on this instance
    to keep each call's output (padded rows dropped: a padded call repeats its last row)."""

    def __init__(self, caller):
        self.caller, self.batch_size, self._conds = caller, caller.batch_size, []
        policy = caller.policy
        inner = policy.condition

        def condition(*args, **kwargs):
            cond = inner(*args, **kwargs)
            self._conds.append(cond.detach().float().cpu().numpy())
            return cond

        policy.condition = condition

    def __call__(self, rows: list[dict], texts: list[str], noise: np.ndarray, n: int):
        self._conds.clear()
        actions, timings = self.caller(rows, texts, noise, n)
        conds = [c[:min(self.batch_size, len(rows) - k * self.batch_size)] for k, c in enumerate(self._conds)]
        conds = np.concatenate(conds)
        if len(conds) != len(rows):
            raise RuntimeError(f"recorded {len(conds)} conditions for {len(rows)} rows")
        return actions, [{**t, "cond": c} for t, c in zip(timings, conds)]


def save_rollout(path: Path, res) -> None:
    from vla_flow.io import atomic_path

    cond = np.stack(res.conds).astype(np.float32) if res.conds else np.zeros((0, 0), np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, cond=cond, success=res.success, steps=res.steps, status=res.status, seed=res.key.seed,
                     task=res.key.task_index)


def collect(cfg, env_cfg, checkpoint: str, folder: Path, tasks: list, n: int, seed: int, flow_steps: int,
            workers: int) -> list[dict]:
    """The student's rollouts on ``n`` fresh layouts per task (``folder/t<task>_<i>.npz``, resumable)."""
    from envs.workers import WorkerPool
    from eval.episodes import EpisodeKey
    from eval.evaluate import make_caller, validate
    from eval.rollout import RolloutSettings, Rollouts
    from policy.checkpoint import load_policy
    from tqdm import tqdm
    from vla_flow.config import to_dict

    keys = [EpisodeKey(t.index, flow_steps, seed + i, None, t.suite, t.name) for t in tasks for i in range(n)]
    path = {k: folder / f"t{k.task_index}_{k.seed - seed:03d}.npz" for k in keys}
    language = {t.index: t.language for t in tasks}
    todo = [k for k in keys if not path[k].is_file()]
    if todo:
        plan = validate(cfg, checkpoint)
        policy = load_policy(checkpoint, cfg.device)
        caller, _ = make_caller(policy, cfg, plan)
        settings = RolloutSettings(env_cfg=to_dict(env_cfg), max_steps=plan.max_steps,
                                   n_action_steps=plan.n_action_steps,
                                   horizon=int(plan.policy_cfg.get("chunk_size", 1)),
                                   call_timeout_s=cfg.call_timeout_s, episode_timeout_s=cfg.episode_timeout_s,
                                   max_retries=cfg.max_retries, home_arm=cfg.home_arm)
        with WorkerPool(min(workers, len(todo))) as pool, tqdm(total=len(keys), initial=len(keys) - len(todo),
                                                                desc="student rollouts", unit="ep") as bar:
            items = [(k, False, language[k.task_index]) for k in todo]
            for res in Rollouts(pool, CondRecorder(caller), settings).run(items):
                save_rollout(path[res.key], res)
                bar.update(1)
                bar.set_postfix(task=res.key.task_index, success=res.success, steps=res.steps)
    from vla_flow.dagger import load_rollout

    return [load_rollout(path[k]) for k in keys]


# ------------------------------------------------------------------------------------- labels + training

def check_same_conditioning(student, teacher, student_path, teacher_path) -> None:
    """The student's weights outside the velocity head must equal the teacher's: the recorded cond is then
    the teacher's cond of the same state."""
    import torch

    s, t = student.state_dict(), teacher.state_dict()
    differ = sorted(k for k in t if not k.startswith("head.") and (k not in s or not torch.equal(s[k], t[k])))
    if differ or student.cfg.chunk_size != teacher.cfg.chunk_size:
        raise UserError(f"{student_path}: its conditioning (e.g. {differ[:2]}) differs from the teacher "
                        f"{teacher_path}'s; pass the teacher the student was distilled from (`vla-flow reflow "
                        "--checkpoint TEACHER`), whose conditioning it shares")


def sample_frames(n_demo: int, n_onpolicy: int, weight: float):
    """Row indices (P,) into [demo rows; on-policy rows] so that about ``weight`` of the samples are on-policy:
    each demo row once, each on-policy row repeated round(weight / (1 - weight) * n_demo / n_onpolicy) times
    (at least once). Without demo rows: every on-policy row once."""
    import torch

    demo = torch.arange(n_demo)
    if n_demo == 0 or n_onpolicy == 0:
        return torch.arange(n_demo + n_onpolicy)
    reps = max(1, round(weight / (1.0 - weight) * n_demo / n_onpolicy)) if weight < 1 else 1
    onpolicy = (n_demo + torch.arange(n_onpolicy)).repeat(reps)
    return demo if weight == 0 else torch.cat([demo, onpolicy])


def demo_conditions(teacher, teacher_path, data, rcfg):
    """(cond (F, D), mask (F, H), matches) of the train split of ``data`` under ``teacher`` (the policy loaded
    from ``teacher_path``; cached features)."""
    from train.reflow import frame_conditions, load_checkpoint_data

    _, tdata, _, matches = load_checkpoint_data(
        teacher_path, data, mismatch=None if rcfg.other_data else
        f"--data does not match {teacher_path}'s training data; pass the demo file(s) it was trained on, or "
        "reflow.other_data=true for other demos of its tasks")
    cond, arrays = frame_conditions(teacher, tdata, tdata.train)
    return cond, arrays["action_mask"], bool(matches)


def run(args: argparse.Namespace) -> int:
    import torch

    from envs.gl import ensure_gl_backend
    from eval.commands import eval_configs
    from eval.results import file_sha256
    from policy.checkpoint import load_policy, read_checkpoint, save_checkpoint
    from train.reflow import fit_head, integrate_pairs, load_pairs, save_pairs
    from train.reflow_cli import reflow_config
    from vla_flow.config import parse_int_list
    from vla_flow.experiment import load_experiment
    from vla_flow.io import atomic_write_json, check_output_dir
    from vla_flow.lock import hold_folder

    for name, low in (("rollouts", 1), ("rounds", 1), ("flow_steps", 1), ("steps", 1)):
        if getattr(args, name) < low:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {low}")
    if not 0 <= args.onpolicy_weight <= 1:
        raise UserError(f"--onpolicy-weight {args.onpolicy_weight}: must be in [0, 1]")
    for flag, path in (("--student", args.student), ("--teacher", args.teacher)):
        if not Path(path).is_file():
            raise UserError(f"{flag} {path}: no such checkpoint")
    from train.commands import split_data_and_overrides

    args.data, overrides = split_data_and_overrides(args.data or [], args.overrides)  # --data A B key=value
    rest = [o for o in overrides if not o.startswith("reflow.")]
    rcfg = reflow_config(None, [o for o in overrides if o.startswith("reflow.")], {"steps": args.steps})
    exp = load_experiment(args.config, rest)
    tasks_flag = parse_int_list(args.tasks, "--tasks") if args.tasks else None
    cfg, _ = eval_configs(args.config, rest, {"flow_steps": [args.flow_steps], "init_states": [0], "seeds": [0],
                                              "workers": args.workers, "tasks": tasks_flag})
    from eval.evaluate import validate

    plan = validate(cfg, args.student)  # tasks exist and were trained on, before any simulator
    student, teacher = load_policy(args.student), load_policy(args.teacher)
    check_same_conditioning(student, teacher, args.student, args.teacher)
    experiment = (read_checkpoint(args.student).get("extra") or {}).get("experiment")
    out = check_output_dir(args.out)
    ensure_gl_backend()
    if rcfg.threads:
        torch.set_num_threads(rcfg.threads)
    workers = args.workers or cfg.workers
    scale = float(student.cfg.noise_scale)
    h, a = teacher.cfg.chunk_size, teacher.cfg.action_dim
    g = torch.Generator().manual_seed(rcfg.seed)

    def label(cond: torch.Tensor, desc: str):
        x0 = torch.randn((cond.shape[0], h, a), generator=g) * scale
        x1 = integrate_pairs(teacher.head, cond, torch.arange(cond.shape[0]), x0, rcfg.pair_steps,
                             rcfg.pair_solver, desc=desc, progress=args.progress)
        return x0, x1

    with hold_folder(out):
        t0 = time.perf_counter()
        demo, n_demo, matches = {}, 0, None
        if args.data:
            cond_d, mask_d, matches = demo_conditions(teacher, args.teacher, args.data, rcfg)
            key = f"{file_sha256(args.teacher)}:{[file_sha256(p) for p in args.data]}:{rcfg.pair_steps}:" \
                  f"{rcfg.pair_solver}:{rcfg.seed}:{scale}"
            x1 = load_pairs(out / "demo_pairs.pt", key, torch.Size((cond_d.shape[0], h, a)))
            x0_d = torch.randn((cond_d.shape[0], h, a), generator=g) * scale
            if x1 is None:
                x1 = integrate_pairs(teacher.head, cond_d, torch.arange(cond_d.shape[0]), x0_d, rcfg.pair_steps,
                                     rcfg.pair_solver, desc="demo labels", progress=args.progress)
                save_pairs(out / "demo_pairs.pt", key, x1)
            demo = {"cond": cond_d, "mask": mask_d.float(), "x0": x0_d, "x1": x1}
            n_demo = cond_d.shape[0]
        t_demo = time.perf_counter() - t0
        rounds, current, states = [], args.student, []
        for r in range(1, args.rounds + 1):
            folder = out / f"round_{r}"
            ckpt_path = folder / "checkpoints" / "last.pt"
            t1 = time.perf_counter()
            rolls = collect(cfg, exp.env, current, folder / "rollouts", plan.tasks, args.rollouts,
                            args.seed * 1_000_000 + r * 1_000, args.flow_steps, workers)
            t_roll = time.perf_counter() - t1
            ok = [x for x in rolls if x["status"] == "ok" and len(x["cond"])]
            states.append(torch.from_numpy(np.concatenate([x["cond"] for x in ok])))
            info = {"round": r, "rollouts": len(rolls), "success": sum(x["success"] for x in rolls),
                    "errors": sum(x["status"] != "ok" for x in rolls),
                    "per_task": {str(t.index): sum(x["success"] for x in rolls if x["task"] == t.index)
                                 for t in plan.tasks},
                    "states_this_round": int(states[-1].shape[0]), "states_total": int(sum(len(s) for s in states)),
                    "rollouts_s": round(t_roll, 1)}
            if ckpt_path.is_file():  # this round was trained before: resume from its student
                print(f"round {r}: {ckpt_path} exists; continuing from it", file=sys.stderr)
                current = str(ckpt_path)
                rounds.append({**info, "resumed": True})
                continue
            t2 = time.perf_counter()
            cond_on = torch.cat(states)
            x0_on, x1_on = label(cond_on, f"round {r} labels")
            t_label = time.perf_counter() - t2
            cond = torch.cat([demo["cond"], cond_on]) if n_demo else cond_on
            x0 = torch.cat([demo["x0"], x0_on]) if n_demo else x0_on
            x1 = torch.cat([demo["x1"], x1_on]) if n_demo else x1_on
            mask = torch.cat([demo["mask"], torch.ones(cond_on.shape[0], h)]) if n_demo else None
            frame = sample_frames(n_demo, cond_on.shape[0], args.onpolicy_weight)
            student = load_policy(current)
            losses = fit_head(student.head, cond, frame, x0[frame], x1[frame], mask, steps=rcfg.steps,
                              batch_size=rcfg.batch_size, lr=rcfg.lr,
                              time_sampling=rcfg.time_sampling or teacher.cfg.time_sampling, seed=rcfg.seed + r,
                              desc=f"round {r} training", progress=args.progress)
            student.eval()
            info.update({"labels_s": round(t_label, 1), "train_s": round(time.perf_counter() - t2 - t_label, 1),
                         "final_loss": float(np.mean(losses[-50:])), "samples": int(frame.shape[0])})
            save_checkpoint(ckpt_path, student, experiment=experiment, step=rcfg.steps,
                            distill_onpolicy={"teacher": str(Path(args.teacher).resolve()),
                                              "student_in": str(Path(current).resolve()), **info})
            current = str(ckpt_path)
            rounds.append(info)
            print(f"round {r}: student {info['success']}/{info['rollouts']} on fresh layouts; "
                  f"{info['states_total']} states; loss {info['final_loss']:.2e}", file=sys.stderr)
        final = out / "checkpoints" / "last.pt"
        save_checkpoint(final, load_policy(current), experiment=experiment, step=rcfg.steps,
                        distill_onpolicy={"teacher": str(Path(args.teacher).resolve()), "rounds": rounds})
        from vla_flow.config import to_dict

        summary = {"student": str(args.student), "student_sha256": file_sha256(args.student),
                   "teacher": str(args.teacher), "teacher_sha256": file_sha256(args.teacher),
                   "tasks": [t.index for t in plan.tasks], "rollouts_per_task": args.rollouts, "seed": args.seed,
                   "flow_steps": args.flow_steps, "noise_scale": scale, "data": list(args.data or []),
                   "demo_frames": n_demo, "data_matches_teacher": matches, "onpolicy_weight": args.onpolicy_weight,
                   "reflow": to_dict(rcfg), "demo_labels_s": round(t_demo, 1), "rounds": rounds,
                   "home_arm": bool(cfg.home_arm), "wall_s": round(time.perf_counter() - t0, 1)}
        atomic_write_json(out / "distill.json", summary)
    print(json.dumps({"checkpoint": str(final), "rounds": [
        {k: x[k] for k in ("round", "success", "rollouts", "states_total") if k in x} for x in rounds]}, indent=2))
    return 0
