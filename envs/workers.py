"""Simulator worker processes: one LiberoEnv per process, reused across episodes, driven over a Pipe.

Why our own and not gymnasium's AsyncVectorEnv: we need (1) one batched policy call over whichever
workers are waiting, (2) a per-call timeout after which a hung worker is killed and restarted and its
episode retried, (3) exceptions returned as records with the traceback instead of killing the run, and
(4) a worker that switches task by rebuilding its env. AsyncVectorEnv offers none of these.

Processes are started with ``spawn``: an EGL/OSMesa context does not survive ``fork``. LIBERO's
``reset`` can loop forever (``while not success: try ... finally: continue`` in its env wrapper
swallows every exception), so every call has a timeout and a worker past it is SIGKILLed.

Protocol (main -> worker): ``(cmd, payload)`` with cmd in ``reset | step | demo | close`` (``demo``: one
whole scripted-expert episode, ``envs.demos``); worker -> main:
``("ok", result)`` or ``("error", traceback_text)``. Results are small dicts of numpy arrays (with
``want_snapshot``, also the env's ``snapshot()`` after the call: what a DAgger takeover restores).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Optional

from envs.gl import ensure_gl_backend


VIDEO_CAMERA = "agentview"  # the camera videos show; a frame-only step renders just this one
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Make this (spawned) worker die when the process that started it dies.

    Why: a main process killed by SIGTERM/SIGKILL runs no cleanup, and a ``ProcessPoolExecutor`` worker
    holds both ends of its call queue, so it never sees EOF and would simulate on as an orphan (seen
    here: demo workers outliving their killed parent by minutes). Linux ``prctl(PR_SET_PDEATHSIG,
    SIGKILL)``; elsewhere a no-op. ``parent_pid`` closes the race where the parent died before the call.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


class WorkerError(RuntimeError):
    """A worker call failed. ``kind``: ``error`` (env raised; message is the traceback), ``died`` (the
    process exited) or ``timeout`` (no answer within the call timeout; the process was killed)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class FaultInjection:
    """Test hook only: make the worker fail at step ``at_step`` (counted from reset) of an episode.

    ``kind``: ``raise`` (RuntimeError), ``exit`` (the process dies, as on a segfault) or ``hang``.
    ``attempts``: which retry attempts of an episode fail (``(0,)``: only the first try);
    ``init_states``: only episodes from these init states (empty: all).
    """

    kind: str
    at_step: int
    attempts: tuple = (0,)
    init_states: tuple = ()

    def __post_init__(self):
        if self.kind not in ("raise", "exit", "hang"):
            raise ValueError(f"kind: {self.kind!r} is not raise, exit or hang")


@dataclass
class _WorkerState:
    env: Any = None
    env_id: Any = None
    step: int = 0
    attempt: int = 0
    init_state: Optional[int] = None
    skip_renders: bool = False  # this episode renders only the frames someone reads (LiberoEnv.cameras_on)


def _build_env(state: _WorkerState, env_cfg: dict) -> None:
    """(Re)build the env when the task or env settings change; otherwise keep it (reuse saves ~2 s)."""
    from envs.config import EnvConfig
    from envs.libero import LiberoEnv, resolve_task
    from vla_flow.config import from_dict

    env_id = repr(sorted(env_cfg.items()))
    if state.env is not None and state.env_id == env_id:
        return
    if state.env is not None:
        state.env.close()
        state.env = None
    cfg = from_dict(EnvConfig, env_cfg)
    state.env = LiberoEnv(resolve_task(cfg.suite, cfg.task), cfg)
    state.env_id = env_id


def _pack(obs, success: bool, info: dict, want_obs: bool, want_frame: bool) -> dict:
    """Observation -> what the main process needs: policy inputs only when the policy is queried, the
    agentview frame (224, 224, 3) right side up when a video frame is kept."""
    from envs import conventions as C
    from envs.libero import policy_inputs

    out: dict = {"success": bool(success), "info": info, "inputs": None, "frame": None}
    if want_obs:
        out["inputs"] = policy_inputs(obs)
        out["frame"] = out["inputs"]["image"] if want_frame else None
    elif want_frame:
        out["frame"] = C.to_policy_image(obs[C.OBS_AGENTVIEW])
    return out


def _maybe_fault(faults: tuple, state: _WorkerState) -> None:
    for fault in faults:
        if state.step == fault.at_step and state.attempt in fault.attempts and (
                not fault.init_states or state.init_state in fault.init_states):
            _fail(fault, state)


def _fail(fault: FaultInjection, state: _WorkerState) -> None:
    if fault.kind == "raise":
        raise RuntimeError(f"injected fault at step {state.step}")
    if fault.kind == "exit":
        os._exit(17)
    time.sleep(10_000)


def _handle(state: _WorkerState, cmd: str, p: dict, faults: tuple) -> dict:
    if cmd == "reset":
        t0 = time.perf_counter()
        _build_env(state, p["env_cfg"])
        state.step, state.attempt, state.init_state = 0, p.get("attempt", 0), p["init_state"]
        state.skip_renders = bool(p.get("skip_renders"))
        obs = state.env.reset(init_state=p["init_state"], seed=p["seed"], render_settle=not state.skip_renders)
        out = _pack(obs, False, {}, p["want_obs"], p["want_frame"])
        out["reset_ms"] = (time.perf_counter() - t0) * 1e3
        if p.get("want_snapshot"):
            out["snapshot"] = state.env.snapshot()
        if p.get("want_rest_pose"):  # eval.home_arm: the target of the homing prefix (envs/homing.py)
            from envs.homing import rest_ee_pose

            out["rest_ee_pose"] = rest_ee_pose(state.env)
        return out
    if cmd == "step":
        state.step += 1
        _maybe_fault(faults, state)
        if state.skip_renders:
            state.env.cameras_on = True if p["want_obs"] else ({VIDEO_CAMERA} if p["want_frame"] else False)
        try:
            obs, success, info = state.env.step(p["action"])
        finally:
            state.env.cameras_on = True
        out = _pack(obs, success, info, p["want_obs"], p["want_frame"])
        if p.get("want_snapshot"):  # the state before the next action, for DAgger takeovers
            out["snapshot"] = state.env.snapshot()
        return out
    if cmd == "demo":  # one whole scripted-expert episode (envs/demos.py)
        from envs.demos import worker_episode

        _build_env(state, p["env_cfg"])
        return worker_episode(state.env, p["plan"], p["record"])
    raise ValueError(f"unknown worker command {cmd!r}")


def worker_main(conn: Connection, faults: tuple = (), parent_pid: int | None = None) -> None:
    """Entry point of a spawned worker: serve commands until ``close`` or the pipe closes."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's job; it closes us
    ensure_gl_backend()
    state = _WorkerState()
    while True:
        try:
            cmd, payload = conn.recv()
        except (EOFError, OSError):  # main process gone
            break
        if cmd == "close":
            break
        try:
            reply = ("ok", _handle(state, cmd, payload, faults))
        except BaseException:  # noqa: BLE001 - every failure goes back as a record
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            break
    if state.env is not None:
        try:
            state.env.close()
        except Exception:  # noqa: BLE001 - closing at exit; nothing to report to
            pass


class EnvWorker:
    """Handle to one worker process. ``send`` then ``result`` (or ``call``) a command; on death or
    timeout the process is killed and a fresh one started (its env is built on the next reset)."""

    def __init__(self, slot: int, faults: tuple = ()):
        self.slot = slot
        self.faults = tuple(faults)
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self.proc: Optional[mp.process.BaseProcess] = None
        self.conn: Optional[Connection] = None
        self.pending: Optional[str] = None  # command sent, result not yet read
        self.sent_at = 0.0
        self._start()

    def _start(self) -> None:
        from vla_flow.worklog import mark

        mark("worker")
        parent, child = self._ctx.Pipe(duplex=True)
        self.proc = self._ctx.Process(target=worker_main, args=(child, self.faults, os.getpid()),
                                      name=f"libero-worker-{self.slot}", daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.pending = None

    def send(self, cmd: str, payload: dict) -> None:
        if self.pending is not None:
            raise RuntimeError(f"worker {self.slot}: '{self.pending}' still pending")
        self.conn.send((cmd, payload))
        self.pending, self.sent_at = cmd, time.perf_counter()

    def ready(self) -> bool:
        return self.pending is not None and self.conn.poll(0)

    def result(self, timeout: float) -> dict:
        """Wait up to ``timeout`` s (from the send) for the answer; raise WorkerError on failure."""
        remaining = max(0.0, timeout - (time.perf_counter() - self.sent_at))
        cmd = self.pending
        try:
            got = self.conn.poll(remaining)
            status, value = self.conn.recv() if got else (None, None)
        except (EOFError, OSError):
            status, value = "died", None
        if status == "ok":
            self.pending = None
            return value
        if status == "error":
            self.pending = None
            raise WorkerError("error", value)
        kind = "died" if status == "died" or not self.proc.is_alive() else "timeout"
        code = self.proc.exitcode
        self.restart()
        what = (f"worker {self.slot} died during '{cmd}' (exit code {code})" if kind == "died"
                else f"worker {self.slot}: '{cmd}' gave no answer within {timeout:.0f} s (killed)")
        raise WorkerError(kind, what)

    def call(self, cmd: str, payload: dict, timeout: float) -> dict:
        self.send(cmd, payload)
        return self.result(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(10)
        if self.conn is not None:
            self.conn.close()

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self._start()

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to close its env and exit; kill it if it does not within ``timeout``."""
        if self.proc is None:
            return
        try:
            if self.pending is None:
                self.conn.send(("close", {}))
            self.proc.join(timeout if self.pending is None else 0)
        except (BrokenPipeError, OSError):
            pass
        self.kill()
        self.proc = None


class WorkerPool:
    """W workers; closes all of them on exit (also on Ctrl-C)."""

    def __init__(self, n: int, faults: tuple = ()):
        self.workers = [EnvWorker(i, faults) for i in range(n)]

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            w.close()
