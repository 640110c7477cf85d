"""The evaluate function: grid -> skip finished -> rollouts -> one record per episode -> store and videos.

Layers (STYLE.md #8): ``eval.rollout`` runs episodes and returns measurements, this module turns each
into one row of the episodes table (docs/interfaces.md) and hands frames to the video writer. Checks that
need no simulator (``validate``) run before any worker starts, so bad arguments fail in a second.

Under torchrun (``RANK``/``WORLD_SIZE`` set) each rank runs its shard of the grid with its own workers and
writes its own shard file; after a gloo barrier rank 0 merges them into ``DIR/episodes.parquet``.

One writer per folder (``vla_flow.lock``): rank 0 holds ``DIR/.vla-flow.lock`` for the whole run and every
other rank r holds ``DIR/.vla-flow.rank<r>.lock`` for its shard, so a second evaluation into the same
folder is refused at start. A disk fault anywhere in the run ends it with one ``error:`` line.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.config import EvalConfig, parse_video_policy
from eval.episodes import EpisodeKey, build_grid, shard, video_selected
from vla_flow.errors import UserError
from vla_flow.io import disk_errors


class EvalAborted(UserError):
    """Too many episodes ended in error/timeout; the message names the first error."""


@dataclass
class Plan:
    """What ``validate`` established: the tasks, the grid and the checkpoint's policy config."""

    tasks: list  # envs.libero.TaskSpec
    grid: list[EpisodeKey]
    policy_cfg: dict
    provenance: dict
    max_steps: int
    n_action_steps: int


def validate(cfg: EvalConfig, checkpoint: str | Path, env_cfg=None) -> Plan:
    """Every check that needs no simulator: checkpoint readable and for 7-D actions, tasks and init
    states exist and were trained on, n_action_steps fits the chunk, and (given ``env_cfg``) the render and
    settle settings equal the checkpoint's. Raises UserError naming the problem and the fix."""
    from envs.conventions import ACTION_DIM, STEP_LIMITS
    from envs.libero import list_tasks
    from policy.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    pcfg = ckpt["config"]
    if pcfg.get("action_dim") != ACTION_DIM:
        raise UserError(f"checkpoint {checkpoint} predicts {pcfg.get('action_dim')}-D actions; LIBERO needs "
                        f"{ACTION_DIM}-D [dx, dy, dz, droll, dpitch, dyaw, gripper]. Use a LIBERO checkpoint")
    all_tasks = list_tasks(cfg.suite)
    indices = list(range(len(all_tasks))) if cfg.tasks == "all" else list(cfg.tasks)
    bad = [i for i in indices if i >= len(all_tasks)]
    if bad:
        raise UserError(f"unknown task index {bad} in {cfg.suite}: it has tasks 0..{len(all_tasks) - 1} "
                        "(`vla-flow tasks` lists them)")
    tasks = [all_tasks[i] for i in indices]
    check_trained_tasks(ckpt, checkpoint, cfg, tasks)
    if env_cfg is not None:
        check_trained_settings(ckpt, checkpoint, cfg, env_cfg)
    for t in tasks:
        over = [i for i in cfg.init_states if i >= t.n_init_states]
        if over:
            raise UserError(f"init states {over} out of range: {cfg.suite} task {t.index} has "
                            f"{t.n_init_states} (0..{t.n_init_states - 1}); e.g. --init-states 0-{t.n_init_states - 1}")
    chunk = int(pcfg.get("chunk_size", 1))
    n_act = cfg.n_action_steps or int(pcfg.get("n_action_steps", 1))
    if n_act > chunk:
        raise UserError(f"n_action_steps {n_act} > the checkpoint's chunk size {chunk}; use at most {chunk}")
    grid = build_grid(cfg.suite, [(t.index, t.name) for t in tasks], cfg.init_states, cfg.flow_steps, cfg.seeds)
    return Plan(tasks=tasks, grid=grid, policy_cfg=pcfg, provenance=dict(ckpt.get("provenance", {})),
                max_steps=cfg.max_steps or STEP_LIMITS[cfg.suite], n_action_steps=n_act)


def trained_tasks(ckpt: dict) -> tuple[str, list[str]] | None:
    """(suite, task names) the checkpoint was trained on, from its recorded experiment config; None for
    checkpoints that record none (hand-made or older ones: nothing to check)."""
    env = ((ckpt.get("extra") or {}).get("experiment") or {}).get("env")
    if not env or "suite" not in env or "task" not in env:
        return None
    from envs.libero import resolve_tasks

    try:
        return env["suite"], [t.name for t in resolve_tasks(env["suite"], env["task"])]
    except UserError:
        return None  # a suite/task this install does not have: nothing to compare against


def check_trained_tasks(ckpt: dict, checkpoint, cfg: EvalConfig, tasks: list) -> None:
    """Refuse to evaluate tasks the policy never trained on (a silent 0% otherwise), unless
    ``eval.allow_task_transfer`` asks for it deliberately (transfer or robustness tests)."""
    trained = trained_tasks(ckpt)
    if trained is None or cfg.allow_task_transfer:
        return
    suite, names = trained
    unseen = [t for t in tasks if t.suite != suite or t.name not in names]
    if unseen:
        listing = ", ".join(f"{t.index}" for t in unseen)
        raise UserError(f"checkpoint {checkpoint} was trained on {len(names)} task(s) of {suite}, not on "
                        f"{cfg.suite} task(s) {listing}. Evaluate its own tasks (e.g. --tasks matching env.task "
                        "of its config), or set eval.allow_task_transfer=true for a deliberate transfer test")


def _yaml(value) -> str:
    """A value as a KEY=VALUE override reads it back (lists in flow style: [agentview, robot0_eye_in_hand])."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def check_trained_settings(ckpt: dict, checkpoint, cfg: EvalConfig, env_cfg) -> None:
    """Evaluation must render and settle as the training demos did (training checked its demo files
    against the config it stored in the checkpoint): a mismatch is refused, naming both values, or only
    warned about with ``eval.allow_setting_mismatch``."""
    from envs.config import AGREED_SETTINGS as SETTINGS, agreed_settings
    from vla_flow.config import to_dict

    trained = agreed_settings(((ckpt.get("extra") or {}).get("experiment") or {}).get("env") or {})
    mine = agreed_settings(to_dict(env_cfg))
    diff = [f"{k}: checkpoint {trained[k]!r}, evaluation {mine[k]!r}" for k in SETTINGS
            if k in trained and k in mine and trained[k] != mine[k]]
    if not diff:
        return
    text = "; ".join(diff)
    if cfg.allow_setting_mismatch:
        print(f"warning: {checkpoint} was trained with other settings ({text}); evaluating anyway "
              "(eval.allow_setting_mismatch=true)", file=sys.stderr)
        return
    fix = " ".join(f"env.{k}={_yaml(trained[k])}" for k in SETTINGS if k in trained and trained[k] != mine.get(k))
    raise UserError(f"{checkpoint} was trained with other settings than this evaluation ({text}); pass "
                    f"{fix}, or eval.allow_setting_mismatch=true to evaluate anyway")


def _dist_info() -> tuple[int, int, bool]:
    """(rank, world size, joined) from torchrun's variables; joins the gloo group when there are several ranks
    and none is joined yet (``joined``: this call created it, so the evaluation must also destroy it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    joined = False
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
            joined = True
    return rank, world, joined


def _row(res, video: str) -> dict:
    """EpisodeResult -> one row of the episodes table (docs/interfaces.md)."""
    k = res.key
    calls = np.asarray(res.call_ms, dtype=float)

    def mean(xs) -> float:
        xs = np.asarray(xs, dtype=float)
        return float(np.nanmean(xs)) if xs.size and not np.all(np.isnan(xs)) else float("nan")

    return {"task": k.task, "task_index": k.task_index, "init_state": k.init_state, "flow_steps": k.flow_steps,
            "seed": k.seed, "success": bool(res.success), "status": res.status, "steps": res.steps,
            "policy_calls": res.policy_calls, "wall_s": res.wall_s,
            "policy_ms_p50": float(np.percentile(calls, 50)) if calls.size else float("nan"),
            "policy_ms_p95": float(np.percentile(calls, 95)) if calls.size else float("nan"),
            "encode_ms_mean": mean(res.encode_ms), "flow_ms_mean": mean(res.flow_ms),
            "env_ms_mean": mean(res.step_ms), "video": video, "error": res.error,
            "attempts": int(getattr(res, "attempts", 1)), "last_worker_error": getattr(res, "last_worker_error", ""),
            "home_steps": int(getattr(res, "home_steps", 0))}


def _run_meta(cfg: EvalConfig, checkpoint, plan: Plan, env_cfg, world: int, invariant: bool) -> dict:
    from envs.conventions import SETTLE_STEPS, STEP_LIMITS
    from envs.render import render_metadata
    from eval.results import file_sha256, library_versions
    from policy.encoders import resolve_dtype
    from vla_flow.config import to_dict

    prov = plan.provenance
    return {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": file_sha256(checkpoint),
            "encoder": {**prov, "pretrained": prov.get("pretrained"), "random_init": bool(prov.get("random_init"))},
            "encoder_dtype": resolve_dtype((plan.policy_cfg.get("vision") or {}).get("dtype", "float32")),
            "device": cfg.device, "render": render_metadata(env_cfg.render), "step_limits": dict(STEP_LIMITS),
            "max_steps": plan.max_steps, "settle_steps": env_cfg.settle_steps, "protocol_settle_steps": SETTLE_STEPS,
            "versions": library_versions(), "command": " ".join(sys.argv), "suite": cfg.suite,
            "tasks": [t.record() for t in plan.tasks],  # the instruction fed and its source, per task
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": to_dict(cfg), "env": to_dict(env_cfg),
            "world_size": world, "n_action_steps": plan.n_action_steps, "home_arm": bool(cfg.home_arm),
            "inference": {"batch_size": cfg.batch_size, "batch_invariant_verified": invariant,
                          # the sampler that ran: the eval override, else the checkpoint's own
                          "solver": cfg.solver or plan.policy_cfg.get("solver", "euler"),
                          "time_grid": cfg.time_grid or plan.policy_cfg.get("time_grid", "uniform"),
                          "noise_scale": cfg.noise_scale if cfg.noise_scale is not None
                          else plan.policy_cfg.get("noise_scale", 1.0)}}


def make_caller(policy, cfg: EvalConfig, plan: Plan):
    """The policy caller of a rollout run (``eval.rollout.PolicyCaller``) and whether its batches are
    row-invariant. Warm the text cache one instruction at a time (a batch of new strings would change their bits),
    then verify the fixed-shape batch path is row-invariant; fall back to one row per call if not."""
    from eval.rollout import PolicyCaller, check_batch_invariance

    for t in plan.tasks:
        policy.encode_text([t.language])
    caller = PolicyCaller(policy, cfg.batch_size)
    rng = np.random.default_rng(0)
    rows = [{"image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
             "wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
             "joints": rng.standard_normal(7).astype(np.float32),
             "ee_pose": rng.standard_normal(7).astype(np.float32),
             "gripper": rng.standard_normal(2).astype(np.float32)} for _ in range(2)]
    texts = [plan.tasks[0].language] * 2
    ok = check_batch_invariance(caller, rows, texts, int(plan.policy_cfg.get("chunk_size", 1)))
    if not ok:
        print(f"warning: batch_size={cfg.batch_size} is not batch-invariant with this policy/device; "
              "using one row per policy call", file=sys.stderr)
        caller = PolicyCaller(policy, 1)
    return caller, ok


def evaluate(cfg: EvalConfig, checkpoint: str | Path, out_dir: str | Path, env_cfg=None,
             faults: tuple = (), progress: bool = True):
    """Run (or resume) the evaluation into ``out_dir``; returns this folder's episodes DataFrame.

    ``env_cfg``: ``envs.config.EnvConfig`` (render settings, settle steps); task/suite/max_steps are set
    per episode. ``faults``: ``envs.workers.FaultInjection`` records, tests only. The folder is checked
    and locked before the checkpoint is read (``hold_out_dir``).
    """
    with hold_out_dir(out_dir), disk_errors(out_dir):
        return _evaluate(cfg, checkpoint, out_dir, env_cfg, faults, progress)


@contextlib.contextmanager
def hold_out_dir(out_dir: str | Path):
    """Validate ``out_dir`` (a writable folder) and hold its writer lock for the block: rank 0 the folder
    lock, rank r > 0 the lock of its shard (``vla_flow.lock``). Re-entrant in one process."""
    from vla_flow import lock
    from vla_flow.io import check_output_dir, check_run_record

    check_output_dir(out_dir, "--out")
    check_run_record(out_dir, "eval")  # not a training or reflow folder, whose run.json it would overwrite
    rank = int(os.environ.get("RANK", "0"))
    path = lock.folder_lock(out_dir) if rank == 0 else Path(out_dir) / f".vla-flow.rank{rank}.lock"
    with lock.hold(path, "--out"):
        yield


def _evaluate(cfg, checkpoint, out_dir, env_cfg, faults, progress):
    import torch

    from envs.config import EnvConfig
    from eval.results import ElapsedClock, ResultStore, write_run_json
    from policy.checkpoint import load_policy

    env_cfg = env_cfg or EnvConfig(suite=cfg.suite)
    plan = validate(cfg, checkpoint, env_cfg)
    rank, world, joined = _dist_info()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device cuda requested but torch sees no CUDA device; use --device cpu")
    policy = load_policy(checkpoint, cfg.device)
    policy.cfg.solver, policy.cfg.time_grid = cfg.solver or policy.cfg.solver, cfg.time_grid or policy.cfg.time_grid
    if cfg.noise_scale is not None:
        policy.cfg.noise_scale = cfg.noise_scale
    caller, invariant = make_caller(policy, cfg, plan)
    store = ResultStore(out_dir, rank, world)  # moves an unreadable table it owns aside (with a warning)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has set aside what it owns before any rank reads the folder
    if rank == 0:
        write_run_json(out_dir, _run_meta(cfg, checkpoint, plan, env_cfg, world, invariant))
    mine = shard(plan.grid, rank, world)
    done = store.finished()
    index = {k: i for i, k in enumerate(plan.grid)}
    todo = [k for k in mine if (k.task_index, k.init_state, k.flow_steps, k.seed) not in done]
    if todo:
        clock = ElapsedClock(out_dir) if rank == 0 else None
        try:
            _run(cfg, plan, env_cfg, caller, store, todo, len(mine), index, faults, progress,
                 clock.tick if clock else None)
        finally:  # a call stopped by Ctrl-C or an abort still counts its time
            if clock:
                clock.tick()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        df = store.merge() if rank == 0 else store.all_rows()
        dist.barrier()
        if joined:  # leave the group before the process exits, as torch.distributed asks
            dist.destroy_process_group()
    else:
        df = store.all_rows()
    if rank == 0 and progress:
        print(summary_text(df))
    return df


def _run(cfg, plan, env_cfg, caller, store, todo, total, index, faults, progress, tick=None) -> None:
    """Roll out ``todo`` and append one row per finished episode (then ``tick()``); stop on too many errors."""
    from tqdm import tqdm

    from envs.workers import WorkerPool
    from eval.rollout import RolloutSettings, Rollouts
    from eval.video import VideoWriter, video_name
    from vla_flow.config import to_dict

    mode, first_k = parse_video_policy(cfg.videos)
    lang = {t.index: t.language for t in plan.tasks}
    items = [(k, video_selected(mode, first_k, index[k]), lang[k.task_index]) for k in todo]
    settings = RolloutSettings(env_cfg=to_dict(env_cfg), max_steps=plan.max_steps,
                               n_action_steps=plan.n_action_steps, horizon=int(plan.policy_cfg.get("chunk_size", 1)),
                               call_timeout_s=cfg.call_timeout_s, episode_timeout_s=cfg.episode_timeout_s,
                               max_retries=cfg.max_retries, latency_budget=cfg.latency_budget,
                               latency_ms=cfg.latency_ms, skip_renders=cfg.skip_renders, home_arm=cfg.home_arm)
    writer = VideoWriter(store.dir) if any(v for _, v, _ in items) else None
    bar = tqdm(total=total, initial=total - len(todo), desc="eval", unit="ep", disable=not progress,
               dynamic_ncols=True)
    t0, n_done, n_ok, errors = time.perf_counter(), 0, 0, []
    try:
        with WorkerPool(min(cfg.workers, len(todo)), faults) as pool:
            for res in Rollouts(pool, caller, settings).run(items):
                video = ""
                if res.frames and (mode != "failures" or not res.success):
                    k = res.key
                    outcome = "success" if res.success else ("failure" if res.status == "ok" else res.status)
                    name = video_name(k.task_index, k.task, k.init_state, k.flow_steps, k.seed, outcome)
                    video = writer.submit(name, res.frames, [lang[k.task_index], f"N={k.flow_steps} init={k.init_state}"],
                                          len(res.frames) - 1 if res.success else None)
                store.append(_row(res, video))
                if tick is not None:
                    tick()
                if cfg.save_actions:
                    _save_actions(store.dir, res)
                n_done, n_ok = n_done + 1, n_ok + int(res.success)
                bar.update(1)
                bar.set_postfix(success=f"{n_ok}/{n_done}", eps_per_min=f"{60 * n_done / (time.perf_counter() - t0):.2f}")
                if res.status in ("error", "timeout"):
                    errors.append(res)
                    if len(errors) > cfg.max_error_fraction * total:
                        raise EvalAborted(_abort_message(errors, total, cfg, store.dir))
    finally:
        bar.close()
        if writer is not None:
            writer.close()


def _abort_message(errors, total, cfg, out_dir) -> str:
    first = errors[0]
    last_line = first.error.strip().splitlines()[-1] if first.error.strip() else "(no message)"
    return (f"stopped: {len(errors)} of {total} episodes ended in error/timeout, more than max_error_fraction="
            f"{cfg.max_error_fraction}. First: task {first.key.task_index} init {first.key.init_state} "
            f"N={first.key.flow_steps}: {last_line}. Full tracebacks in {out_dir}/episodes.parquet (column "
            "'error'); fix the cause and rerun the same command to resume")


def _save_actions(out_dir: Path, res) -> None:
    from vla_flow.io import atomic_path

    k = res.key
    path = Path(out_dir) / "actions" / f"t{k.task_index:02d}_init{k.init_state:02d}_N{k.flow_steps}_seed{k.seed}.npy"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(res.actions, dtype=np.float64).reshape(-1, 7))


def summary_text(df) -> str:
    """Success per task and N (k/n and rate), then median policy latency per N."""
    if df.empty:
        return "no episodes"
    g = df.groupby(["task_index", "flow_steps"])
    per = g.agg(task=("task", "first"), n=("success", "size"), ok=("success", "sum"),
                errors=("status", lambda s: int((s != "ok").sum()))).reset_index()
    lines = ["task  N    success        errors  name"]
    for r in per.itertuples():
        lines.append(f"{r.task_index:>4} {r.flow_steps:>3}  {r.ok:>3}/{r.n:<3} {r.ok / r.n:6.1%}  {r.errors:>6}  {r.task[:50]}")
    lines.append("N    success        median policy ms (p50 per episode)")
    for n, d in df.groupby("flow_steps"):
        lines.append(f"{n:>3}  {int(d.success.sum()):>3}/{len(d):<3} {d.success.mean():6.1%}  {d.policy_ms_p50.median():8.1f}")
    return "\n".join(lines)
