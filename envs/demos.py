"""Scripted-expert demonstrations written in the official LIBERO / robomimic HDF5 layout, resumably.

Why this shape:
- Episodes run in the simulator workers of ``envs.workers`` (the evaluation's pool: spawn-started, one
  ``LiberoEnv`` per worker built once and reused, a timeout per call after which a hung worker is killed
  and restarted), one whole episode per ``demo`` call. Episode ``i`` is fully defined by its plan (official init
  state ``(first + i) % n`` or a fresh BDDL layout drawn with seed ``seed * 1_000_000 + i``), never by which
  worker ran it, so results do not depend on the number of workers.
- Every finished episode is written at once by the main process as a small part file
  (``DIR/.<task>_parts/ep_<i>.hdf5``, or ``ep_<i>.json`` for a failure), each atomically (temp + rename).
  The dataset ``DIR/<task>_demo.hdf5`` is then (re)assembled atomically from the previous dataset plus
  the parts, at the end and on Ctrl-C or a dead worker. A rerun with the same arguments skips every
  episode already in the dataset, its failure ledger or a part file: nothing is lost or duplicated.
  The part files and the assembly live in ``envs.demo_files``; this module runs the episodes.

Layout (LIBERO ``scripts/create_dataset.py``; docs/interfaces.md): ``data/demo_K/{actions (T, 7) f64,
obs/{agentview_rgb, eye_in_hand_rgb (T, S, S, 3) uint8 upside down as rendered, joint_states (T, 7),
ee_pos (T, 3), ee_ori (T, 3) axis-angle, ee_quat (T, 4) xyzw, gripper_states (T, 2)}, states (T, 1+nq+nv),
robot_states (T, 9), rewards, dones (T,) uint8 (1 at the last step)}``. Step t holds the observation
*before* action t. ``data`` attrs: env_args, problem_info, bddl_file_name, bddl_file_content,
macros_image_convention, num_demos, total, and ``vla_flow`` (JSON: generation settings and failure ledger).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait as wait_conns
from pathlib import Path
from typing import Optional

import numpy as np

from envs import conventions as C
from envs.config import DemoConfig, EnvConfig, RenderConfig
from envs.demo_files import GEN_ATTR, assemble, check_same_settings, dataset_header, done_episodes, write_part
from envs.expert import PickPlaceExpert
from envs.scene import parse_goal, read_scene


@dataclass(frozen=True)
class EpisodePlan:
    """Episode ``index``: official ``init_state`` k (seed = k, see LiberoEnv.reset) or a random layout.

    ``start``: a ``LiberoEnv.snapshot()`` taken in that same scene (a DAgger takeover, ``envs.takeover``):
    the episode continues from it instead of from the settled reset, and the expert's phase is inferred.
    """

    index: int
    init_state: Optional[int]
    seed: int
    start: Optional[dict] = field(default=None, compare=False, repr=False)


def plan_episodes(cfg: DemoConfig, n_init_states: int) -> list[EpisodePlan]:
    if cfg.layouts == "official":
        return [EpisodePlan(i, k := (cfg.first_init_state + i) % n_init_states, k) for i in range(cfg.episodes)]
    return [EpisodePlan(i, None, cfg.seed * 1_000_000 + i) for i in range(cfg.episodes)]


# ------------------------------------------------------------------------------------- one episode

def run_episode(env, expert: PickPlaceExpert, plan: EpisodePlan, record: bool = True) -> dict:
    """Run the expert for one episode in ``env`` (a LiberoEnv) until success or the step limit.

    Returns ``{index, init_state, seed, success, steps, wall_s}`` and, if ``record``, ``arrays``: the
    per-step LIBERO record (observation before each action) described in the module docstring.
    """
    t0 = time.perf_counter()
    obs = env.reset(init_state=plan.init_state, seed=plan.seed)
    expert.reset()
    rs_env = env.raw_env.env
    if plan.start is not None:  # a takeover: continue from the policy's state
        from envs.takeover import resume_expert

        obs = env.restore(plan.start)
        expert = resume_expert(expert.goal, read_scene(rs_env, expert.goal), expert.params)
    rows: dict[str, list] = {k: [] for k in ("actions", "states", *C.H5_OBS_FROM_ENV)}
    success, steps = False, 0
    while steps < env.max_steps:
        action = expert.act(read_scene(rs_env, expert.goal))
        if record:
            rows["states"].append(env.get_sim_state())
            for key in C.H5_OBS_FROM_ENV:
                if key in obs:
                    rows[key].append(np.array(obs[key]))
            rows["actions"].append(action)
        obs, success, _info = env.step(action)
        steps += 1
        if success:
            break
    out = {"index": plan.index, "init_state": plan.init_state, "seed": plan.seed, "success": bool(success),
           "steps": steps, "wall_s": time.perf_counter() - t0,
           "start_step": int(plan.start["step"]) if plan.start is not None else 0}
    if record and success:
        out["arrays"] = _to_arrays(rows)
    return out


def _to_arrays(rows: dict) -> dict:
    from robosuite.utils.transform_utils import quat2axisangle

    arrays = {"actions": np.asarray(rows["actions"], np.float64), "states": np.asarray(rows["states"])}
    for env_key, h5_key in C.H5_OBS_FROM_ENV.items():
        if rows[env_key]:
            arrays["obs/" + h5_key] = np.stack(rows[env_key])
    quat = arrays["obs/" + C.H5_EE_QUAT]
    # LIBERO's ee_ori, computed exactly as its create_dataset.py does (robosuite quat2axisangle, xyzw)
    arrays["obs/" + C.H5_EE_ORI] = np.stack([quat2axisangle(q.astype(np.float64)) for q in quat])
    arrays["robot_states"] = np.concatenate(
        [arrays["obs/" + C.H5_GRIPPER], arrays["obs/" + C.H5_EE_POS], quat], axis=1)
    T = len(arrays["actions"])
    arrays["rewards"] = np.zeros(T, np.uint8)
    arrays["dones"] = np.zeros(T, np.uint8)
    arrays["rewards"][-1] = arrays["dones"][-1] = 1
    return arrays


# ---------------------------------------------------------------------------------- worker process

EPISODE_TIMEOUT_S = 900.0  # one demo episode (<= 220 steps with cameras, ~20-60 s; a hung reset is killed)


def worker_episode(env, plan: EpisodePlan, record: bool) -> dict:
    """One expert episode inside a simulator worker (``envs.workers``' ``demo`` command): the expert for
    ``env``'s task, fresh per episode (parsing the BDDL goal is cheap), then ``run_episode``."""
    goal = parse_goal(Path(env.task.bddl_file).read_text())
    return run_episode(env, PickPlaceExpert(goal), plan, record)


def error_result(plan: EpisodePlan, error: str) -> dict:
    """The record of an episode that raised or whose worker died or hung: an *error*, not a failure
    (printed, not written to the failure ledger, retried by a rerun)."""
    return {"index": plan.index, "init_state": plan.init_state, "seed": plan.seed, "success": False,
            "steps": 0, "wall_s": 0.0, "error": error}


# ------------------------------------------------------------------------------------------ driver

@dataclass
class GenerationReport:
    """One run's numbers (this run's episodes only) and where the dataset is."""

    task: str
    tried: int
    succeeded: int
    mean_steps: float
    max_steps: int
    wall_s: float
    steps: int
    num_demos: int
    path: str
    skipped: int = 0
    failures: list = None  # [(episode, init_state, seed)] of this run's failed episodes
    errors: list = None  # [(episode, init_state, seed)] that raised (not failures; a rerun retries them)
    episodes: list = None  # this run's episodes: {index, init_state, seed, success, steps, wall_s, error?}

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.wall_s > 0 else 0.0

    def table(self) -> str:
        """Success rate over finished episodes: an episode that raised is an error, not a failure."""
        n_err = len(self.errors or [])
        done = self.tried - n_err
        rate = self.succeeded / done if done else float("nan")
        head = (f"{'task':<40} {'tried':>5} {'ok':>5} {'errors':>6} {'rate':>6} {'mean':>6} {'max':>5} "
                f"{'wall_s':>7} {'steps/s':>7}")
        row = (f"{self.task[:40]:<40} {self.tried:>5} {self.succeeded:>5} {n_err:>6} {rate:>6.1%} "
               f"{self.mean_steps:>6.1f} {self.max_steps:>5} {self.wall_s:>7.1f} {self.steps_per_s:>7.1f}")
        tail = f"dataset: {self.path} ({self.num_demos} demos; {self.skipped} episodes were already done)"
        lines = [head, row, tail]
        if self.failures:
            lines.append("failed (episode, init state, seed): " + ", ".join(map(str, self.failures)))
        if self.errors:
            lines.append("errors, rerun to retry (episode, init state, seed): " + ", ".join(map(str, self.errors)))
        return "\n".join(lines)


def _run_pool(plans: list[EpisodePlan], env_cfg: EnvConfig, workers: int, record: bool, on_result) -> None:
    """Run ``plans`` on a ``WorkerPool`` of ``workers`` simulators; ``on_result(result)`` in the main process
    as each episode ends. A worker whose episode raised, died or passed ``EPISODE_TIMEOUT_S`` is restarted
    and that episode comes back as an error."""
    from tqdm import tqdm

    from envs.workers import WorkerError, WorkerPool
    from vla_flow.config import to_dict

    cfg = to_dict(env_cfg)
    todo, busy = deque(plans), {}
    with WorkerPool(workers) as pool, tqdm(total=len(plans), desc="episodes", unit="ep") as bar:
        while todo or busy:
            for w in pool.workers:
                if w.slot not in busy and todo:
                    busy[w.slot] = todo.popleft()
                    w.send("demo", {"env_cfg": cfg, "plan": busy[w.slot], "record": record})
            running = [w for w in pool.workers if w.slot in busy]
            left = min(EPISODE_TIMEOUT_S - (time.perf_counter() - w.sent_at) for w in running)
            wait_conns([w.conn for w in running], timeout=max(0.0, left))
            for w in running:
                if not (w.ready() or time.perf_counter() - w.sent_at >= EPISODE_TIMEOUT_S):
                    continue
                plan = busy.pop(w.slot)
                try:
                    result = w.result(EPISODE_TIMEOUT_S)
                except WorkerError as exc:
                    if exc.kind == "error":
                        w.restart()  # the env may be half-broken after raising; the next episode starts clean
                    result = error_result(plan, str(exc))
                if result.get("error"):
                    tqdm.write(f"episode {result['index']} raised an error (not a failure; a rerun retries it):\n"
                               f"{result['error']}")
                on_result(result)
                bar.update(1)
                bar.set_postfix(ok=result["success"], steps=result["steps"])


def generate_demos(cfg: DemoConfig, env_cfg: EnvConfig, out_dir: str | Path, record: bool = True,
                   plans: Optional[list[EpisodePlan]] = None, source: Optional[dict] = None) -> GenerationReport:
    """Run the expert on ``cfg.episodes`` planned episodes of ``env_cfg``'s task, keep the successes and
    write ``out_dir/<task>_demo.hdf5``; resumes a previous run with the same settings.

    ``record=False`` (a dry run to measure the expert): cameras off, nothing written.
    ``plans``: explicit episodes instead of ``cfg``'s (DAgger takeovers; ``cfg.workers`` still applies), and
    ``source``: what they came from (recorded in the header, and a resume must match it).
    """
    from envs.libero import resolve_task

    task = resolve_task(env_cfg.suite, env_cfg.task)
    if not record:
        env_cfg = EnvConfig(**{**asdict(env_cfg), "render": RenderConfig(cameras=[])})
    out = Path(out_dir) / f"{task.name}_demo.hdf5"
    parts = Path(out_dir) / f".{task.name}_parts"
    noise = {"robot_init_noise": env_cfg.robot_init_noise} if env_cfg.robot_init_noise else {}  # old files resume
    header = dataset_header({"render": asdict(env_cfg.render), "reset": env_cfg.reset, **noise}, task, cfg, env_cfg)
    if plans is None:
        plans = plan_episodes(cfg, task.n_init_states)
    else:
        header[GEN_ATTR].update(layouts="takeover", seed=None, first_init_state=None, source=source or {})
    done: set = set()
    if record:
        check_same_settings(out, header)
        ok, failed = done_episodes(out, parts)
        done = ok | set(failed)
    todo = [p for p in plans if p.index not in done]
    from envs.render import render_metadata

    render = render_metadata(env_cfg.render)
    results: list[dict] = []

    def on_result(result: dict) -> None:
        if record and not result.get("error"):  # an error is not a failure: leave it for a rerun
            write_part(parts, result, render)
        result.pop("arrays", None)
        results.append(result)

    t0 = time.perf_counter()
    try:
        if todo:
            _run_pool(todo, env_cfg, min(cfg.workers, len(todo)), record, on_result)
    finally:
        num = assemble(out, parts, header) if record and (results or parts.is_dir()) else 0
        if record and parts.is_dir() and not any(parts.iterdir()):
            parts.rmdir()
    wall = time.perf_counter() - t0
    ok_steps = [r["steps"] for r in results if r["success"]]
    return GenerationReport(task=task.name, tried=len(results), succeeded=len(ok_steps),
                            mean_steps=float(np.mean(ok_steps)) if ok_steps else float("nan"),
                            max_steps=max(ok_steps, default=0), wall_s=wall,
                            steps=sum(r["steps"] for r in results), num_demos=num,
                            path=str(out) if record else "(dry run: nothing written)", skipped=len(done),
                            failures=sorted((r["index"], r["init_state"], r["seed"]) for r in results
                                            if not r["success"] and not r.get("error")),
                            errors=sorted((r["index"], r["init_state"], r["seed"]) for r in results
                                          if r.get("error")),
                            episodes=sorted(results, key=lambda r: r["index"]))
