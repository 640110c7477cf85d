"""Config dataclasses for the environment layer and demonstration generation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union



def check_suite_name(suite: str) -> None:
    """ValueError unless ``suite`` can run. The suites come from the installed benchmark, never from a list
    here (``envs.tasks.working_suites``): every registered suite whose BDDL and init-state files exist, the
    LIBERO-PRO variants included. The five original suites (the protocol's step-limit table) pass without
    importing LIBERO, so loading a config stays instant; any other name asks the benchmark (~1 s, cached)."""
    from envs.conventions import STEP_LIMITS

    if suite in dict.keys(STEP_LIMITS):
        return
    from envs.tasks import check_suite
    from vla_flow.errors import UserError

    try:
        check_suite(suite)
    except UserError as exc:
        raise ValueError(f"suite: {exc}") from None


@dataclass
class RenderConfig:
    """Camera rendering. ``fast`` turns off MSAA, shadows and reflections (CPU/EGL ~9 -> ~21 steps/s for
    one 128x128 camera; images differ by ~3/255). Recorded in every output; keep train and eval equal."""

    fast: bool = False
    camera_size: int = 128  # LIBERO's official datasets render 128x128
    cameras: list[str] = field(default_factory=lambda: ["agentview", "robot0_eye_in_hand"])

    def __post_init__(self):
        if self.camera_size < 16 or self.camera_size > 1024:
            raise ValueError(f"camera_size: {self.camera_size} out of range 16..1024")
        valid = {"agentview", "robot0_eye_in_hand", "frontview", "birdview", "sideview"}
        bad = [c for c in self.cameras if c not in valid]
        if bad:
            raise ValueError(f"cameras: unknown {bad}; valid: {sorted(valid)}")


@dataclass
class EnvConfig:
    """Which LIBERO task, and how episodes start and end (openpi/OpenVLA protocol by default)."""

    suite: str = "libero_spatial"
    # Index in the suite or the task name from the benchmark; for multi-task training also a list of them,
    # a range string ("0-4,7") or "all" (envs.tasks.resolve_tasks reads every form).
    task: Union[int, str, list[Union[int, str]]] = 0
    settle_steps: int = 10  # no-op steps after reset, as the LIBERO evaluation protocol does
    max_steps: Optional[int] = None  # None: the suite's protocol limit (envs.conventions.STEP_LIMITS)
    # "hard": robosuite rebuilds model, sim and GL context every reset (LIBERO's default, slow);
    # "soft": keep them and only overwrite the state (see envs/libero.py for the equivalence check)
    reset: Literal["hard", "soft"] = "hard"
    render: RenderConfig = field(default_factory=RenderConfig)
    # Fresh layouts only: std (rad) of Gaussian noise on the arm's 7 initial joint positions. LIBERO's env
    # wrapper builds robosuite with none, but the official init states were drawn with robosuite's default
    # (0.02: their arm joints spread by 0.016-0.027 rad, fresh layouts by 0), so 0.02 makes fresh layouts
    # start like the benchmark. An official init state sets the whole state and ignores this.
    robot_init_noise: float = 0.0

    def __post_init__(self):
        check_suite_name(self.suite)
        if self.settle_steps < 0:
            raise ValueError(f"settle_steps: {self.settle_steps} must be >= 0")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps: {self.max_steps} must be > 0")
        if self.reset not in ("hard", "soft"):
            raise ValueError(f"reset: '{self.reset}' must be 'hard' or 'soft'")
        if not 0.0 <= float(self.robot_init_noise) < 1.0:
            raise ValueError(f"robot_init_noise: {self.robot_init_noise} must be in [0, 1) rad "
                             "(0.02 is what the official init states were drawn with)")


@dataclass
class DemoConfig:
    """Scripted-expert demonstrations."""

    episodes: int = 50
    layouts: Literal["official", "random"] = "official"  # official init states, or fresh BDDL samples
    seed: int = 0
    workers: int = 2
    first_init_state: int = 0  # official layouts: episode i uses init state (first + i) % 50

    def __post_init__(self):
        if self.episodes <= 0:
            raise ValueError(f"episodes: {self.episodes} must be > 0")
        if self.workers <= 0:
            raise ValueError(f"workers: {self.workers} must be > 0")


# The env settings that must agree between demos, training and evaluation: the frames and the start of
# every episode depend on them. Stored with the demos (``data.attrs["vla_flow"]``) and the checkpoint (its
# experiment's ``env``), compared by ``train.data.check_settings`` and ``eval.evaluate.check_trained_settings``.
AGREED_SETTINGS = ("render.fast", "render.camera_size", "render.cameras", "settle_steps")


def agreed_settings(env: dict) -> dict:
    """``{key: value}`` for the keys of ``AGREED_SETTINGS`` that ``env`` (an EnvConfig as a dict, or a demo
    file's record of it) holds; keys it does not record are left out (older files and checkpoints)."""
    render = env.get("render") or {}
    out = {f"render.{k}": render[k] for k in ("fast", "camera_size", "cameras") if k in render}
    if "settle_steps" in env:
        out["settle_steps"] = env["settle_steps"]
    if "render.cameras" in out:
        out["render.cameras"] = list(out["render.cameras"])
    return out
