"""What the scripted expert reads of a scene: the BDDL goal and a snapshot of the simulator.

Why its own module: the expert (``envs.expert``) decides actions from a :class:`SceneState`; reading that state
from MuJoCo (poses, finger axis, grasp obstacles and their footprints) is a separate job, also used by the
settle check (``parse_goal``) and the demos. Which object to pick and where to place it comes from the task's
BDDL goal ``(On <target> <place>)``, never from a table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

SUPPORT_MARGIN = 0.01  # objects whose top is below the bowl's bottom + this are not grasp obstacles

_GOAL_RE = re.compile(r"\(:goal\s*\(\s*(?:And\s*)?\(\s*On\s+(\S+)\s+(\S+?)\s*\)", re.IGNORECASE)


@dataclass(frozen=True)
class Goal:
    """The pick-and-place goal of a task: put ``target`` on ``place`` (object names from the BDDL file)."""

    target: str
    place: str


def parse_goal(bddl_text: str) -> Goal:
    """Read ``(:goal (And (On target place)))`` from a BDDL file's text; ValueError if absent."""
    m = _GOAL_RE.search(bddl_text)
    if m is None:
        raise ValueError("BDDL has no '(:goal (On <object> <place>))' clause; the expert only does pick-and-place")
    return Goal(target=m.group(1), place=m.group(2))


@dataclass
class SceneState:
    """What the expert sees at one step (world frame, metres). Shapes in brackets.

    eef_pos (3,), eef_rot (3, 3) rotation matrix, finger_axis (3,) unit vector from left to right finger,
    gripper_width: finger opening in metres, target_pos / place_pos (3,) body positions (the bowl's is its
    bottom centre), target_rot (3, 3) the bowl's orientation, obstacles (N, 3): positions of every other
    object and fixture that rises above the bowl's bottom, target_geoms (G, 3): centres of the target's
    collision geoms (its wall segments).
    """

    eef_pos: np.ndarray
    eef_rot: np.ndarray
    finger_axis: np.ndarray
    gripper_width: float
    target_pos: np.ndarray
    target_rot: np.ndarray
    place_pos: np.ndarray
    obstacles: np.ndarray
    target_geoms: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    place_radius: float = 0.0  # horizontal reach of the place object's collision geoms from its centre
    shoulder: np.ndarray | None = None  # (3,) the arm's shoulder joint (Panda link2), for the reach check
    # oriented boxes (centre (K, 3), rotation (K, 3, 3), half sizes (K, 3)) of the other objects' collision
    # geoms that rise above the bowl's bottom: the drawer walls around a bowl in a drawer
    blockers: tuple = field(default_factory=lambda: (np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3))))


def read_scene(rs_env, goal: Goal) -> SceneState:
    """Snapshot the robosuite/LIBERO env ``rs_env`` (the inner ``env.env`` of LIBERO's ControlEnv)."""
    sim = rs_env.sim
    model, data = sim.model, sim.data
    eef_site = model.site_name2id("gripper0_grip_site")
    left = data.body_xpos[model.body_name2id("gripper0_leftfinger")]
    right = data.body_xpos[model.body_name2id("gripper0_rightfinger")]
    axis = right - left
    body = rs_env.obj_body_id
    bottom = data.body_xpos[body[goal.target]][2] + SUPPORT_MARGIN
    others = [n for n in body if n not in (goal.target, goal.place) and _rises_above(model, data, body[n], bottom)]
    qpos = np.array([data.qpos[i] for i in rs_env.robots[0]._ref_gripper_joint_pos_indexes])
    tid, pid = body[goal.target], body[goal.place]
    geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == tid and model.geom_contype[g]]
    return SceneState(
        eef_pos=np.array(data.site_xpos[eef_site]),
        eef_rot=np.array(data.site_xmat[eef_site]).reshape(3, 3),
        finger_axis=axis / max(np.linalg.norm(axis), 1e-9),
        gripper_width=float(np.abs(qpos).sum()),
        target_pos=np.array(data.body_xpos[body[goal.target]]),
        target_rot=np.array(data.body_xmat[body[goal.target]]).reshape(3, 3),
        place_pos=np.array(data.body_xpos[pid]),
        obstacles=np.array([data.body_xpos[body[n]] for n in others]).reshape(-1, 3),
        target_geoms=np.array(data.geom_xpos[geoms]).reshape(-1, 3),
        place_radius=_footprint_radius(model, data, pid),
        blockers=_blockers(model, data, [body[n] for n in body if n not in (goal.target, goal.place)], bottom),
        shoulder=np.array(data.body_xpos[model.body_name2id("robot0_link2")]),
    )


def _geoms(model, body_id: int) -> np.ndarray:
    """Collision geoms of ``body_id`` and its children (a cabinet's drawers are child bodies)."""
    bodies = {body_id}
    for b in range(body_id + 1, model.nbody):  # MuJoCo lists parents before their children
        if model.body_parentid[b] in bodies:
            bodies.add(b)
    return np.flatnonzero(np.isin(model.geom_bodyid, list(bodies)) & (model.geom_contype > 0))


def _blockers(model, data, body_ids, z: float) -> tuple:
    """Oriented bounding boxes of the collision geoms of ``body_ids`` whose top is above height ``z``."""
    geoms = np.concatenate([_geoms(model, b) for b in body_ids] + [np.zeros(0, int)]).astype(int)
    rot = np.asarray(data.geom_xmat)[geoms].reshape(-1, 3, 3)
    centre = np.asarray(data.geom_xpos)[geoms] + np.einsum("gij,gj->gi", rot, model.geom_aabb[geoms, :3])
    half = np.array(model.geom_aabb[geoms, 3:]).reshape(-1, 3)
    keep = centre[:, 2] + np.einsum("gj,gj->g", np.abs(rot[:, 2, :]), half) > z  # top of the box
    return centre[keep], rot[keep], half[keep]


def _corners(model, data, body_id: int) -> np.ndarray:
    """(M, 3) world corners of the bounding boxes of the collision geoms of ``body_id`` and its children."""
    geoms = _geoms(model, body_id)
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3)
    local = model.geom_aabb[geoms, None, :3] + signs[None] * model.geom_aabb[geoms, None, 3:]  # geom frames
    rot = np.asarray(data.geom_xmat)[geoms].reshape(-1, 3, 3)
    return (np.asarray(data.geom_xpos)[geoms, None] + np.einsum("gij,gkj->gki", rot, local)).reshape(-1, 3)


def _footprint_radius(model, data, body_id: int) -> float:
    """Largest horizontal distance from the body's origin to its collision geoms (a plate: ~0.073 m)."""
    corners = _corners(model, data, body_id)
    return float(np.max(np.linalg.norm(corners[:, :2] - data.xpos[body_id][:2], axis=1), initial=0.0))


def _rises_above(model, data, body_id: int, z: float) -> bool:
    """Whether any collision geom of the body reaches above height ``z``. An object lower than the bowl's
    bottom (the cabinet a bowl stands on, the table objects below it) cannot touch the fingers."""
    corners = _corners(model, data, body_id)
    return bool(len(corners) == 0 or corners[:, 2].max() > z)
