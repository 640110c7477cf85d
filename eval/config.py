"""Config for closed-loop evaluation: which episodes to run, how many workers, what to record.

One episode = (task, init state, N flow steps, seed). Lists here span the grid (eval/episodes.py); the
CLI (eval/commands.py) fills the same fields from flags, so a YAML file and a command line are equivalent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Union

from vla_flow.config import IntList, parse_int_list  # noqa: F401 - parse_int_list re-exported for callers

DEVICES = ("cpu", "cuda")


def parse_video_policy(text: str) -> tuple[str, int]:
    """``all|failures|none|first:K`` -> (mode, K). K is only used by ``first``."""
    if text in ("all", "failures", "none"):
        return text, 0
    m = re.fullmatch(r"first:(\d+)", text)
    if m is None:
        raise ValueError(f"videos: '{text}' is not one of all, failures, none, first:K")
    return "first", int(m.group(1))


@dataclass
class EvalConfig:
    """Closed-loop evaluation settings (defaults follow the openpi LIBERO protocol: replan every 5 steps)."""

    suite: str = "libero_spatial"
    tasks: Union[IntList, str] = "all"  # "all", "0,3", "0-4" or a list of task indices
    init_states: IntList = field(default_factory=lambda: list(range(50)))  # official init states ("0-49")
    flow_steps: IntList = field(default_factory=lambda: [1, 2, 5, 10])  # N, the sweep axis
    seeds: IntList = field(default_factory=lambda: [0])
    workers: int = 2  # simulator processes per rank
    n_action_steps: Optional[int] = None  # actions run per predicted chunk; None: the checkpoint's value
    batch_size: int = 1  # rows per policy call, padded to this fixed shape (batch-invariant; GPU: = workers)
    max_steps: Optional[int] = None  # None: the suite's protocol limit (envs.conventions.STEP_LIMITS)
    videos: str = "failures"  # all | failures | first:K | none
    episode_timeout_s: float = 900.0  # wall time for one episode before its worker is killed and retried
    call_timeout_s: float = 180.0  # one reset/step call (reset includes building the env in a new worker)
    max_retries: int = 2  # retries of an episode whose worker died or hung, then status error/timeout
    max_error_fraction: float = 0.1  # stop the run once errors exceed this fraction of the grid
    latency_budget: bool = False  # inference time costs simulated time (the previous action is held)
    latency_ms: Optional[float] = None  # latency-budget mode: fixed latency instead of the measured one
    device: str = "cpu"
    skip_renders: bool = True  # render cameras only on steps whose observation is used (same results)
    save_actions: bool = False  # also write each episode's executed actions to DIR/actions/<key>.npy
    # Evaluate tasks the checkpoint was not trained on (transfer / robustness tests); refused otherwise.
    allow_task_transfer: bool = False
    # Evaluate although render/settle settings differ from the checkpoint's (warns); refused otherwise.
    allow_setting_mismatch: bool = False
    # Flow ODE solver / time grid at evaluation (policy/flow.py); None keeps the checkpoint's policy.solver /
    # policy.time_grid. N (flow_steps) counts solver steps: midpoint calls the network 2N times.
    solver: Optional[str] = None  # euler | midpoint
    time_grid: Optional[str] = None  # uniform | cosine | early | late
    # Initial-noise scale at evaluation (policy.noise_scale); None keeps the checkpoint's (1 unless set).
    # 0: every call integrates from x0 = 0 (deterministic; at N=1 the network's conditional-mean estimate).
    noise_scale: Optional[float] = None
    # Agent-side homing prefix (envs/homing.py): before the first policy call, drive the gripper to the rest
    # pose every demo started from (at most 20 steps, counted against the step limit). The official init
    # states start the arm off rest by robosuite's init noise, which the scripted demos never show.
    home_arm: bool = False

    def __post_init__(self):
        from envs.config import check_suite_name  # the suites come from the installed benchmark

        check_suite_name(self.suite)
        if self.tasks != "all":
            self.tasks = parse_int_list(self.tasks, "tasks")
            if min(self.tasks) < 0:
                raise ValueError(f"tasks: {self.tasks} has a negative index")
        self.init_states = parse_int_list(self.init_states, "init_states")
        if min(self.init_states) < 0:
            raise ValueError(f"init_states: {self.init_states} has a negative index")
        self.flow_steps = parse_int_list(self.flow_steps, "flow_steps")
        if min(self.flow_steps) <= 0:
            raise ValueError(f"flow_steps: every N must be > 0, got {self.flow_steps}")
        self.seeds = parse_int_list(self.seeds, "seeds")
        for name, low in (("workers", 1), ("batch_size", 1), ("max_retries", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= {low}")
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"n_action_steps: {self.n_action_steps} must be >= 1")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps: {self.max_steps} must be > 0")
        parse_video_policy(self.videos)
        if self.episode_timeout_s <= 0 or self.call_timeout_s <= 0:
            raise ValueError("episode_timeout_s / call_timeout_s: must be > 0 seconds")
        if not 0.0 <= self.max_error_fraction <= 1.0:
            raise ValueError(f"max_error_fraction: {self.max_error_fraction} must be in [0, 1]")
        if self.latency_ms is not None and self.latency_ms < 0:
            raise ValueError(f"latency_ms: {self.latency_ms} must be >= 0")
        from policy.flow import SOLVERS, TIME_GRIDS, check_noise_scale

        if self.solver is not None and self.solver not in SOLVERS:
            raise ValueError(f"solver: '{self.solver}' does not exist; expected one of {', '.join(SOLVERS)}")
        if self.time_grid is not None and self.time_grid not in TIME_GRIDS:
            raise ValueError(f"time_grid: '{self.time_grid}' does not exist; expected one of {', '.join(TIME_GRIDS)}")
        if self.noise_scale is not None:
            self.noise_scale = check_noise_scale(self.noise_scale)
        if self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"device: '{self.device}' is not cpu, cuda or cuda:K")
