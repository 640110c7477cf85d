"""Homing: drive the gripper back to the arm's rest pose before the policy takes over.

Why: every scripted demo starts with the arm exactly at robosuite's rest joints (LIBERO builds robosuite
without ``initialization_noise``), while LIBERO's official init states were drawn with robosuite's default
noise (0.016-0.027 rad std per joint). Measured on fresh layouts, that noise alone takes the 40k suite policy
from 86% to 66% (README, "Why the official init states are harder"). Homing is an agent-side prefix: a
proportional controller on the observed end-effector pose (``ee_pose``) that moves it to the rest pose
the demos started from, through the same OSC_POSE actions a policy sends. Its steps count against the
episode's step limit; the objects are never touched (only the gripper moves, open, above the table).

Measured (task 4, official init states 0-5): 6-10 steps bring the joints from 0.015-0.042 rad off rest to
<= 0.01 rad and the gripper to within 2 mm of the rest position (OSC's nullspace term pulls the redundant
joint toward the controller's initial joints, i.e. the rest pose, so matching the pose restores the joints).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.spatial.transform import Rotation

from envs.conventions import NOOP_ACTION

POS_SCALE = 0.05  # metres of OSC_POSE setpoint motion per unit of position action (envs/conventions.py)
ROT_SCALE = 0.5  # radians per unit of rotation action
POS_TOL = 0.002  # metres: homed when the grip site is this near the rest position ...
ROT_TOL = 0.01  # ... and the hand this near the rest orientation (radians)
MAX_HOME_STEPS = 20  # give up homing after this many steps (the policy then starts wherever the arm is)


def rest_ee_pose(env) -> np.ndarray:
    """(7,) ``ee_pose`` of a ``LiberoEnv``'s arm at robosuite's rest joints (``init_qpos``, where every fresh
    layout, and so every demo, starts): forward kinematics on the current model, the arm's joint positions
    put back afterwards (no time passes, the state is unchanged). Two ``mj_forward`` calls: cheap next to a reset."""
    import robosuite.utils.transform_utils as T

    from envs.conventions import ee_pose

    robot, sim = env.raw_env.robots[0], env.sim
    d, idx = sim.data, np.asarray(robot._ref_joint_pos_indexes)
    saved = d.qpos[idx].copy()
    try:
        d.qpos[idx] = np.asarray(robot.init_qpos, dtype=np.float64)
        sim.forward()
        pos = np.array(d.site_xpos[robot.eef_site_id])
        quat = T.convert_quat(np.array(d.get_body_xquat(robot.robot_model.eef_name)), to="xyzw")
    finally:
        d.qpos[idx] = saved
        sim.forward()
    return ee_pose(pos, quat).astype(np.float64)


def pose_error(ee_pose: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position error (3,) m, rotation error (3,) rotation vector, world frame) from ``ee_pose`` to
    ``target``; both (7,) ``[x, y, z, qx, qy, qz, qw]`` (docs/interfaces.md)."""
    ee_pose, target = np.asarray(ee_pose, np.float64), np.asarray(target, np.float64)
    dp = target[:3] - ee_pose[:3]
    dr = (Rotation.from_quat(target[3:]) * Rotation.from_quat(ee_pose[3:]).inv()).as_rotvec()
    return dp, dr


def home_action(ee_pose: np.ndarray, target: np.ndarray, pos_tol: float = POS_TOL,
                rot_tol: float = ROT_TOL) -> Optional[np.ndarray]:
    """The next homing action (7,) in [-1, 1] (gripper open), or None once ``ee_pose`` is within
    ``pos_tol`` / ``rot_tol`` of ``target`` (both (7,) poses). Robosuite's OSC_POSE delta actions move the
    setpoint by ``action * 0.05 m`` and rotate it by ``action * 0.5 rad`` about a world axis, so a gain of 1
    closes the error in one step where the error is below the per-step limit."""
    dp, dr = pose_error(ee_pose, target)
    if np.linalg.norm(dp) < pos_tol and np.linalg.norm(dr) < rot_tol:
        return None
    action = NOOP_ACTION.copy()
    action[:3] = np.clip(dp / POS_SCALE, -1.0, 1.0)
    action[3:6] = np.clip(dr / ROT_SCALE, -1.0, 1.0)
    return action
