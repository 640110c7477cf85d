"""Closed-loop rollouts: W simulator workers driven by one policy in the main process.

Each loop turn: idle workers take the next episode (reset), every episode whose action queue is empty
is queried in policy calls of one fixed padded shape per N (``PolicyCaller`` says why), then every
episode with an action steps its worker, and the loop waits for the step answers (resets, which take
longer, are collected whenever they are ready).

Per episode we keep: per policy call its latency split (``encode_ms``, ``flow_ms``, ``total_ms``), per env
step the worker-side ``step_ms`` split into render and physics, the executed action trace (T, 7), and the
frames when a video is wanted. Cameras render, and the worker converts an observation to policy inputs,
only on steps where the policy is queried or a video frame is kept (``skip_renders``).
Latency-budget mode: a query that took L ms makes the env hold the previous action for ceil(L / 50 ms)
steps before the new chunk starts (20 Hz control), so slow inference costs sim time.
Homing (``home_arm``): after the reset, the gripper is driven to the rest pose every demo started from
(``envs.homing``: one action per step from the observed pose, at most ``MAX_HOME_STEPS``) before the first
policy call; those steps count against the step limit and are kept in ``home_steps``.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_conns
from typing import Iterator, Optional

import numpy as np

from envs.conventions import CONTROL_HZ, NOOP_ACTION
from envs.workers import EnvWorker, WorkerError, WorkerPool
from eval.episodes import EpisodeKey, NoiseStream
from policy.action_queue import ActionQueue


@dataclass
class RolloutSettings:
    """What every episode of one run shares. ``env_cfg`` is an ``EnvConfig`` as a dict (task filled per key)."""

    env_cfg: dict
    max_steps: int
    n_action_steps: int
    horizon: int  # H of the policy's chunk
    call_timeout_s: float = 180.0
    episode_timeout_s: float = 900.0
    max_retries: int = 2
    latency_budget: bool = False
    latency_ms: Optional[float] = None  # fixed latency for latency-budget mode; None: measured per call
    skip_renders: bool = True  # render cameras only on steps whose observation is used
    record_snapshots: bool = False  # keep the env snapshot at every policy query (DAgger takeovers)
    home_arm: bool = False  # drive the gripper to the rest pose first (envs/homing.py); counts as steps


@dataclass
class EpisodeResult:
    """Everything measured in one episode. Arrays: ``actions`` (steps, 7) as executed."""

    key: EpisodeKey
    status: str = "ok"  # ok | error | sim_unstable | timeout
    success: bool = False
    steps: int = 0
    policy_calls: int = 0
    wall_s: float = 0.0
    reset_ms: float = 0.0
    call_ms: list = field(default_factory=list)  # per policy call: the call's latency (total_ms)
    encode_ms: list = field(default_factory=list)
    flow_ms: list = field(default_factory=list)
    step_ms: list = field(default_factory=list)  # per env step, measured in the worker
    render_ms: list = field(default_factory=list)
    physics_ms: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    frames: Optional[list] = None  # (H, W, 3) uint8 right side up, reset frame first: steps + 1 frames
    error: str = ""
    attempts: int = 1  # 1 + the retries after a worker died or hung
    last_worker_error: str = ""  # the last worker failure of this episode in one line ('' if none)
    held_steps: int = 0  # latency-budget mode: steps spent holding the previous action
    home_steps: int = 0  # home_arm: steps spent homing before the first policy call (part of ``steps``)
    snapshots: list = field(default_factory=list)  # record_snapshots: LiberoEnv.snapshot() at each query
    conds: list = field(default_factory=list)  # per policy call its cond (D,), when the caller returns one


class PolicyCaller:
    """Calls ``policy.predict`` in fixed-shape batches so that an episode's actions never depend on which
    other episodes shared its call.

    Measured on CPU (tiny and ViT-B/16 policies, torch 2.14): row i of a batch of b differs from the same
    row predicted alone in the last bits (max 1.2e-7) for every b >= 2, but with a fixed padded shape
    (``pad_to=P``) row i is bitwise identical whatever the other rows are. So every call here has exactly
    ``batch_size`` rows (P=1: one row per call). The same P gives the same actions with 1 or 2 workers
    and on any rank; ``check_batch_invariance`` re-verifies this at the start of every run.
    """

    def __init__(self, policy, batch_size: int = 1):
        self.policy, self.batch_size = policy, max(1, int(batch_size))
        cfg = policy.cfg
        self.use_gripper = bool(cfg.use_gripper_state)
        self.use_wrist = bool(cfg.vision.use_wrist_image)

    def _predict(self, rows: list[dict], texts: list[str], noise: np.ndarray, n: int) -> tuple[np.ndarray, dict]:
        p = self.policy
        extra = {}
        if self.use_gripper:
            extra["gripper"] = np.stack([r["gripper"] for r in rows])
        if self.use_wrist:
            extra["wrist_images"] = np.stack([r["wrist_image"] for r in rows])
        t0 = time.perf_counter()
        out = p.predict(np.stack([r["image"] for r in rows]), list(texts), np.stack([r["joints"] for r in rows]),
                        np.stack([r["ee_pose"] for r in rows]), num_flow_steps=n, noise=noise,
                        pad_to=self.batch_size if self.batch_size > 1 else None, **extra)
        wall = (time.perf_counter() - t0) * 1e3
        t = dict(getattr(p, "last_timings", None) or {})
        timing = {"total_ms": float(t.get("total_ms", wall)), "encode_ms": float(t.get("encode_ms", np.nan)),
                  "flow_ms": float(t.get("flow_ms", np.nan))}
        return np.asarray(out, dtype=np.float64), timing

    def __call__(self, rows: list[dict], texts: list[str], noise: np.ndarray, n: int):
        """rows: B policy-input dicts; noise (B, H, 7) -> actions (B, H, 7), B timing dicts."""
        outs, times = [], []
        for i in range(0, len(rows), self.batch_size):
            j = min(i + self.batch_size, len(rows))
            out, t = self._predict(rows[i:j], texts[i:j], noise[i:j], n)
            outs.append(out)
            times.extend([t] * (j - i))
        return np.concatenate(outs), times


def check_batch_invariance(caller: PolicyCaller, rows: list[dict], texts: list[str], horizon: int,
                           n: int = 2) -> bool:
    """True when each row of a full ``caller.batch_size`` call equals that row called alone (padded to the
    same shape), bit for bit, with the same noise. ``rows``: at least 2 distinct policy inputs."""
    size = caller.batch_size
    if size == 1:
        return True  # one row per call: nothing else in the batch
    rows = (rows * size)[:size]
    texts = (texts * size)[:size]
    noise = np.random.default_rng(0).standard_normal((size, horizon, 7)).astype(np.float32)
    full, _ = caller(rows, texts, noise, n)
    alone = np.concatenate([caller(rows[i:i + 1], texts[i:i + 1], noise[i:i + 1], n)[0] for i in range(size)])
    return bool(np.array_equal(full, alone))


@dataclass
class _Live:
    """An episode in progress on one worker."""

    res: EpisodeResult
    noise: NoiseStream
    text: str
    video: bool
    t0: float = field(default_factory=time.perf_counter)
    phase: str = "reset"  # reset -> [home -> act ...] -> policy -> act -> (policy | act)... -> done
    homing: bool = False  # home_arm: still homing (``rest_pose`` is the target)
    rest_pose: Optional[np.ndarray] = None
    obs: Optional[dict] = None
    queue: Optional[ActionQueue] = None  # set by Rollouts._start (n_action_steps is the run's)
    last_action: np.ndarray = field(default_factory=lambda: NOOP_ACTION.copy())


class Rollouts:
    """Runs episodes on a worker pool; ``run(items)`` yields one EpisodeResult per episode as each ends.

    ``items``: (key, keep_video, instruction). An episode whose worker died or hung is retried on a fresh
    worker up to ``max_retries`` times; an env exception ends it at once as ``error`` (a deterministic
    simulator raises again), and its worker is restarted so the next episode gets a clean env.
    """

    def __init__(self, pool: WorkerPool, caller: PolicyCaller, s: RolloutSettings):
        self.pool, self.caller, self.s = pool, caller, s
        self.active: dict[int, _Live] = {}
        self.todo: deque = deque()
        self.done: list[EpisodeResult] = []
        # main-process time split (s): policy calls, blocked on workers, total; the rest is harness overhead
        self.timers = {"policy_s": 0.0, "wait_s": 0.0, "total_s": 0.0}

    def run(self, items: list[tuple[EpisodeKey, bool, str]]) -> Iterator[EpisodeResult]:
        self.todo.extend((key, video, text, 0, "") for key, video, text in items)
        t_last = time.perf_counter()
        while self.todo or self.active:
            for w in self.pool.workers:
                if w.slot not in self.active and self.todo:
                    self._start(w, *self.todo.popleft())
            self._home([ep for ep in self.active.values() if ep.phase == "home"])
            self._query([ep for ep in self.active.values() if ep.phase == "policy"])
            for w in self.pool.workers:
                ep = self.active.get(w.slot)
                if ep is not None and ep.phase == "act":
                    self._send_step(w, ep)
            self._collect()
            now = time.perf_counter()
            self.timers["total_s"] += now - t_last
            while self.done:
                yield self.done.pop(0)
            t_last = time.perf_counter()  # time spent by the consumer (store, videos) is not ours

    # -- commands ---------------------------------------------------------------------------------
    def _start(self, w: EnvWorker, key: EpisodeKey, video: bool, text: str, attempt: int,
               last_error: str = "") -> None:
        res = EpisodeResult(key=key, attempts=attempt + 1, frames=[] if video else None,
                            last_worker_error=last_error)
        ep = _Live(res=res, noise=NoiseStream(key, self.s.horizon), text=text, video=video,
                   queue=ActionQueue(self.s.n_action_steps, dtype=np.float64))
        self.active[w.slot] = ep
        env_cfg = {**self.s.env_cfg, "suite": key.suite, "task": key.task_index, "max_steps": self.s.max_steps}
        w.send("reset", {"env_cfg": env_cfg, "init_state": key.init_state, "seed": key.seed,
                         "want_obs": True, "want_frame": video, "attempt": attempt,
                         "skip_renders": self.s.skip_renders, "want_snapshot": self.s.record_snapshots,
                         "want_rest_pose": self.s.home_arm})

    def _send_step(self, w: EnvWorker, ep: _Live) -> None:
        action = ep.queue.pop()
        ep.last_action = action
        ep.res.actions.append(action)
        w.send("step", {"action": action, "want_obs": not ep.queue, "want_frame": ep.video,
                        "want_snapshot": self.s.record_snapshots and not ep.queue})
        ep.phase = "step"

    def _home(self, eps: list[_Live]) -> None:
        """Queue each homing episode's next homing action, or hand it to the policy once the gripper is at
        the rest pose (or after ``MAX_HOME_STEPS``: the policy then starts wherever the arm is)."""
        from envs.homing import MAX_HOME_STEPS, home_action

        for ep in eps:
            action = home_action(ep.obs["ee_pose"], ep.rest_pose) if ep.res.home_steps < MAX_HOME_STEPS else None
            if action is None:
                ep.homing, ep.phase = False, "policy"
                continue
            ep.res.home_steps += 1
            ep.queue.push(action[None])
            ep.phase = "act"

    def _query(self, eps: list[_Live]) -> None:
        """One policy call per distinct N among the waiting episodes (slot order, so it is reproducible)."""
        for n in sorted({ep.res.key.flow_steps for ep in eps}):
            group = [ep for ep in eps if ep.res.key.flow_steps == n]
            noise = np.stack([ep.noise.next() for ep in group])
            t0 = time.perf_counter()
            actions, timings = self.caller([ep.obs for ep in group], [ep.text for ep in group], noise, n)
            self.timers["policy_s"] += time.perf_counter() - t0
            for ep, chunk, t in zip(group, actions, timings):
                self._enqueue(ep, chunk, t)

    def _enqueue(self, ep: _Live, chunk: np.ndarray, t: dict) -> None:
        r = ep.res
        r.policy_calls += 1
        r.call_ms.append(t["total_ms"])
        r.encode_ms.append(t["encode_ms"])
        r.flow_ms.append(t["flow_ms"])
        if "cond" in t:  # a recording caller (vla_flow.distill.CondRecorder)
            r.conds.append(t["cond"])
        hold = 0
        if self.s.latency_budget:
            latency = self.s.latency_ms if self.s.latency_ms is not None else t["total_ms"]
            hold = math.ceil(latency * CONTROL_HZ / 1000.0 - 1e-9)
            r.held_steps += hold
        ep.queue.push(chunk, hold=hold, hold_action=ep.last_action)
        ep.phase = "act"

    # -- answers ----------------------------------------------------------------------------------
    def _collect(self) -> None:
        """Wait for every pending step; take resets that are ready; enforce call/episode timeouts."""
        workers = [w for w in self.pool.workers if w.slot in self.active and w.pending]
        t0 = time.perf_counter()
        if workers and not any(w.pending == "step" for w in workers):  # only resets in flight
            wait_conns([w.conn for w in workers], timeout=min(self._left(w) for w in workers))
        for w in workers:
            if w.pending == "step":  # blocked on the simulator: time it as env wait, not overhead
                w.conn.poll(self._left(w))
            if w.pending == "step" or w.ready() or self._left(w) <= 0:
                self.timers["wait_s"] += time.perf_counter() - t0
                self._answer(w)
                t0 = time.perf_counter()
        self.timers["wait_s"] += time.perf_counter() - t0

    def _left(self, w: EnvWorker) -> float:
        """Seconds until this worker's call or episode times out."""
        now = time.perf_counter()
        ep = self.active[w.slot]
        return max(0.0, min(self.s.call_timeout_s - (now - w.sent_at), self.s.episode_timeout_s - (now - ep.t0)))

    def _answer(self, w: EnvWorker) -> None:
        ep = self.active[w.slot]
        try:
            r = w.result(self._left(w) + (time.perf_counter() - w.sent_at))
        except WorkerError as exc:
            self._failed(w, ep, exc)
            return
        if ep.phase == "reset":
            ep.res.reset_ms = r["reset_ms"]
            self._observe(ep, r)
            ep.homing = self.s.home_arm
            ep.rest_pose = r.get("rest_ee_pose")
            ep.phase = "home" if ep.homing else "policy"
            return
        self._on_step(w, ep, r)

    def _observe(self, ep: _Live, r: dict) -> None:
        if r.get("inputs") is not None:
            ep.obs = r["inputs"]
        if r.get("snapshot") is not None:
            ep.res.snapshots.append(r["snapshot"])
        if ep.video and r.get("frame") is not None:
            ep.res.frames.append(r["frame"])

    def _on_step(self, w: EnvWorker, ep: _Live, r: dict) -> None:
        res, info = ep.res, r["info"]
        res.steps += 1
        res.step_ms.append(info.get("step_ms", np.nan))
        res.render_ms.append(info.get("render_ms", np.nan))
        res.physics_ms.append(info.get("physics_ms", np.nan))
        self._observe(ep, r)
        if info.get("unstable"):
            self._finish(w, "sim_unstable", error=f"MuJoCo warnings {info.get('warnings')} at step {res.steps}")
        elif r["success"]:
            res.success = True
            self._finish(w, "ok")
        elif res.steps >= self.s.max_steps:
            self._finish(w, "ok")
        else:
            ep.phase = "act" if ep.queue else ("home" if ep.homing else "policy")

    def _failed(self, w: EnvWorker, ep: _Live, exc: WorkerError) -> None:
        key, attempt = ep.res.key, ep.res.attempts - 1
        ep.res.last_worker_error = worker_error_line(exc)
        if exc.kind == "error":
            w.restart()  # the env may be half-broken after raising; start clean
        elif attempt < self.s.max_retries:
            del self.active[w.slot]
            self.todo.appendleft((key, ep.video, ep.text, attempt + 1, ep.res.last_worker_error))
            _log(f"retrying episode task {key.task_index} init {key.init_state} N={key.flow_steps} seed "
                 f"{key.seed} on a fresh worker (attempt {attempt + 2} of {self.s.max_retries + 1}): "
                 f"{ep.res.last_worker_error}")
            return
        self._finish(w, "timeout" if exc.kind == "timeout" else "error", error=str(exc))

    def _finish(self, w: EnvWorker, status: str, error: str = "") -> None:
        ep = self.active.pop(w.slot)
        ep.res.status, ep.res.error = status, error
        ep.res.wall_s = time.perf_counter() - ep.t0
        self.done.append(ep.res)


def worker_error_line(exc: WorkerError) -> str:
    """``'<kind>: <last line of the message>'``, e.g. ``died: worker 0 exited with code -9``."""
    lines = str(exc).strip().splitlines()
    return f"{exc.kind}: {lines[-1] if lines else '(no message)'}"[:500]


def _log(message: str) -> None:
    """A line on stderr that does not break a tqdm progress bar."""
    import sys

    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
