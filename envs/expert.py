"""Scripted pick-and-place expert for LIBERO-Spatial ("pick up the black bowl ... place it on the plate").

Why: the official demonstration files cannot be downloaded here, so demonstrations are made in the real
simulator by an expert that reads the simulator state and acts only through ``env.step(action)``, like a
policy, so every recorded action is a valid training target.

How it works (a closed-loop controller with a small phase machine; the only memory is the phase, the grasp
side chosen at the start and a few step counters):

    approach (above the rim, fingers turned radial) -> descend -> grasp -> lift -> carry (bowl centre over
    plate centre, closed loop on the bowl's pose) -> lower -> release -> retreat

Which object to pick and where to place it comes from the task's BDDL goal ``(On <target> <place>)``
(``envs.scene.parse_goal``), never from a table. Poses come from MuJoCo (``envs.scene.read_scene``).
Facts it relies on, measured here: one unit of OSC_POSE delta moves the setpoint 0.05 m (0.5 rad); only the gripper command's sign
matters (-1 open, +1 close) and it ramps over ~4 steps; the bowl is 0.111 m across and 0.053 m tall with its
pose at the bottom centre. LIBERO's ``On`` check needs contact and the bowl's centre within 0.03 m of the
plate's centre (horizontally).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs.scene import Goal, SceneState

POS_SCALE = 0.05  # metres of setpoint motion per unit of OSC_POSE position action
ROT_SCALE = 0.5  # radians of setpoint rotation per unit of OSC_POSE rotation action
OPEN, CLOSE = -1.0, 1.0
TILTED_DEG = 2.0  # a bowl tilted more than this rests on something (ramekin, box edge)
LEANING_DEG = 8.0  # a bowl tilted this much or more leans on it fully (task 5: 15.9 deg on the ramekin)
WRIST_ABOVE_SITE = 0.21  # the Panda's last link sits this far above the grip site, pointing down (m)
PAD_ABOVE_SITE = 0.008  # the Panda finger pads' centre sits this far above robosuite's grip site (m)
MIN_GRASP_WIDTH = 0.006  # finger opening (m) below which the fingers closed on nothing


@dataclass
class ExpertParams:
    """Geometry and gains of the expert (metres, steps). Defaults measured on libero_spatial."""

    rim_radius: float = 0.05  # grasp point: this far from the bowl's axis, on the wall
    bowl_height: float = 0.053
    grasp_depth: float = 0.018  # grip site this far below the rim top (upright bowls); deeper put the
    # outer pad on the rim lip only and the hand on the rim, and the bowl pivoted out while lifting
    # (measured: tasks 8, 9 failures 16 -> 2 of 16 at 0.018)
    hover: float = 0.06  # approach height above the grasp point
    carry_clearance: float = 0.10  # bowl bottom this far above the plate while carrying
    retry_deeper: float = 0.006  # after a missed grasp, grasp this much lower (a tilted bowl's wall slopes)
    tilt_deeper: float = 0.018  # a bowl tilted just under LEANING_DEG is grasped this much lower (``grasp_point``)
    min_lift: float = 0.06  # lift the bowl at least this much off its support before carrying
    wall_radius: float = 0.09  # blockers this near the bowl's centre (drawer walls) must be cleared when lifting
    # (not 0.1: the cabinet beside the bowl of task 6 is 93-108 mm away and 0.2 m tall)
    wall_clearance: float = 0.02  # ... by this much (bowl bottom over the wall top)
    stall_push: float = 0.25  # per stalled carry step, the xy setpoint error grows by this fraction
    stall_near: float = 0.04  # ... only this near the plate (elsewhere a stall is the bowl caught on something)
    place_height: float = 0.012  # release when the bowl bottom is this far above the plate body
    pos_gain: float = 1.0  # action = gain * error / POS_SCALE (then clipped)
    rot_gain: float = 1.0
    grasp_steps: int = 14  # most steps to wait for the fingers to close (they stop early on the wall)
    release_steps: int = 4
    candidate_sides: int = 16
    place_margin: float = 0.01  # the outer finger stays this far outside the place object's footprint
    finger_margin: float = 0.022  # least ``_wall_clearance`` of a side (task 4: fingers 15-21 mm outside a
    # drawer wall's box still caught it)
    max_reach: float = 0.82  # shoulder-to-wrist distance the arm still tracks well (task 4: 0.820 ok, 0.822 stalls)
    reach_center: tuple = (-0.05, 0.0)  # where grasp sides are preferred to face (the robot is at -x)

    def __post_init__(self):
        if not 0.0 < self.rim_radius < 0.08:
            raise ValueError(f"rim_radius: {self.rim_radius} m out of range (0, 0.08)")
        if self.grasp_steps < 1 or self.release_steps < 1:
            raise ValueError("grasp_steps/release_steps: must be >= 1")


PHASES = ("approach", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")


@dataclass
class PickPlaceExpert:
    """Closed-loop rim-grasp expert. Call ``reset()`` per episode, then ``act(read_scene(...))`` per step."""

    goal: Goal
    params: ExpertParams = field(default_factory=ExpertParams)
    side: np.ndarray | None = None  # unit horizontal vector, bowl centre -> grasp point; chosen once
    phase: str = "approach"
    counter: int = 0
    last_width: float = 1.0
    last_eef: np.ndarray | None = None
    banned: list = field(default_factory=list)  # grasp sides the arm could not reach this episode
    retries: int = 0  # failed grasps this episode; each retry grasps ``retry_deeper`` lower
    carry_z: float = 0.0  # eef height while carrying, fixed when the lift starts
    push: float = 0.0  # extra xy gain of a stalled carry (``_over_place``)
    stalled: int = 0  # consecutive steps the arm has not moved while carrying or lowering

    def reset(self) -> None:
        self.side, self.phase, self.counter, self.last_width, self.retries = None, "approach", 0, 1.0, 0
        self.last_eef, self.banned, self.push, self.stalled = None, [], 0.0, 0

    # ---- geometry -------------------------------------------------------------------------------
    def _wall_clearance(self, s: SceneState, d: np.ndarray) -> float:
        """How far (m, negative inside) the open outer finger, coming down at side ``d`` to the grasp
        height, stays from the other objects' geoms: a drawer wall next to the bowl catches the finger and
        the pads close on the rim lip only (measured on task 4)."""
        p = self.params
        centre, rot, half = s.blockers
        if not len(centre):
            return np.inf
        grasp_z = s.target_pos[2] + p.bowl_height - p.grasp_depth
        outer = s.target_pos[:2] + (p.rim_radius + 0.045) * d[:2]  # the open outer finger's centre
        pts = np.array([np.r_[outer, grasp_z + dz] for dz in (-0.005, 0.02, 0.05)])
        local = np.einsum("gji,qgj->qgi", rot, pts[:, None] - centre[None])  # points in each box's frame
        return float(np.min(np.max(np.abs(local) - half, axis=2)))

    def _wall_top(self, s: SceneState) -> float:
        """Height of the highest blocker geom within ``wall_radius`` (horizontally) of the bowl's centre: the
        drawer walls around a bowl in the drawer (task 4: 65 mm above the bowl's bottom, i.e. above a
        ``min_lift`` lift: the bowl, hanging tilted from its rim, caught the drawer's front wall while
        carried and was yanked free tilted 26 deg; measured on init state 48). -inf if none."""
        centre, rot, half = s.blockers
        if not len(centre):
            return -np.inf
        q = np.repeat(s.target_pos[None], len(centre), axis=0)
        q[:, 2] = centre[:, 2]
        local = np.einsum("gji,gj->gi", rot, q - centre)  # the bowl's centre in each box's frame
        dist = np.linalg.norm(np.maximum(np.abs(local) - half, 0.0), axis=1)
        top = centre[:, 2] + np.einsum("gj,gj->g", np.abs(rot[:, 2, :]), half)
        near = dist < self.params.wall_radius
        return float(top[near].max()) if near.any() else -np.inf

    def carry_height(self, s: SceneState) -> float:
        """Eef height to lift a grasped bowl to: its bottom ``carry_clearance`` above the plate, at least
        ``min_lift`` above where it stands (a bowl on the cabinet starts higher than the plate), and
        ``wall_clearance`` over the walls around it (``_wall_top``: the drawer)."""
        p = self.params
        rise = max(s.place_pos[2] + p.carry_clearance - s.target_pos[2], p.min_lift,
                   self._wall_top(s) + p.wall_clearance - s.target_pos[2])
        return float(s.eef_pos[2] + rise)

    def _reachable(self, s: SceneState, d: np.ndarray) -> bool:
        """Whether the wrist above the hover point at side ``d`` is within ``max_reach`` of the shoulder.
        Past it the arm stalls short of the hover point (a bowl in the drawer, grasped from the far side)."""
        if s.shoulder is None:
            return True
        p = self.params
        up = p.bowl_height - p.grasp_depth + p.hover + WRIST_ABOVE_SITE
        wrist = s.target_pos + p.rim_radius * d + np.array([0.0, 0.0, up])
        return bool(np.linalg.norm(wrist - s.shoulder) <= p.max_reach)

    def choose_side(self, s: SceneState, avoid_place: bool = True, avoid_blockers: bool = True) -> np.ndarray:
        """Pick the rim side whose outer finger is farthest from other objects, preferring the robot side;
        sides where it would catch a wall (``_wall_clearance``) or the arm cannot reach are tried last."""
        p = self.params
        best, best_score = None, -np.inf
        for k in range(p.candidate_sides):
            a = 2 * np.pi * k / p.candidate_sides
            d = np.array([np.cos(a), np.sin(a), 0.0])
            if any(d @ b > np.cos(np.radians(50)) for b in self.banned):
                continue
            outer = s.target_pos[:2] + (p.rim_radius + 0.04) * d[:2]
            # the outer finger must not come down on the place object (plate next to the bowl): it props
            # the finger up and the grasp slips while lifting (measured on task 8, 22 of 50 failures)
            if avoid_place and np.linalg.norm(outer - s.place_pos[:2]) < s.place_radius + p.place_margin:
                continue
            wall, reachable = self._wall_clearance(s, d), self._reachable(s, d)
            if avoid_blockers and (wall < p.finger_margin or not reachable):
                continue
            clear = np.min(np.linalg.norm(s.obstacles[:, :2] - outer, axis=1)) if len(s.obstacles) else 1.0
            reach = np.linalg.norm(outer - np.asarray(p.reach_center))
            # a tilted bowl: its wall is closest to vertical (easy to pinch) on the side away from the lean
            lean = s.target_rot[:2, 2] @ d[:2]
            score = min(clear, 0.12) - 0.1 * reach - 0.5 * lean + 10 * min(wall, p.finger_margin) - (not reachable)
            if score > best_score:
                best, best_score = d, score
        if best is not None:
            return best
        if avoid_blockers:  # walls all round, or the clear sides are out of reach: the most clearance
            return self.choose_side(s, avoid_place, avoid_blockers=False)
        if self.banned:  # every side was tried and banned: start over rather than crash
            self.banned.clear()
            return self.choose_side(s, avoid_place)
        return self.choose_side(s, avoid_place=False)  # the place object surrounds the bowl: come down on it

    def grasp_point(self, s: SceneState) -> np.ndarray:
        """Grip-site target on the wall at ``side``, in the bowl's frame (a bowl leaning on the ramekin has
        its rim higher or lower on that side). A bowl leaning ``LEANING_DEG`` or more has a sloping wall, so
        the pads close lower on it, on the wall segment (collision geom) farthest along ``side``; a bowl
        tilted less is grasped as upright, up to ``tilt_deeper`` lower; the pads also close lower after
        each missed grasp (``retry_deeper``)."""
        p = self.params
        radial = s.target_rot.T @ self.side
        radial[2] = 0.0
        radial /= max(np.linalg.norm(radial), 1e-9)
        # The fingers coming down knock a bowl leaning on the ramekin (15.9 deg) partly upright, to 2-9 deg.
        # Measured on task 5: grasped as leaning (wall segment, 12 mm above its bottom) a bowl knocked to
        # 4 deg squeezed out while lifting; grasped as upright (35 mm) one knocked to 7 deg was pinched on
        # the lip and slipped. Bowls tilted less than LEANING_DEG are grasped as upright, lower by up to
        # ``tilt_deeper`` in proportion to the tilt: task 5 went from 45 to 50 of 50.
        tilt = np.degrees(np.arccos(np.clip(s.target_rot[2, 2], -1.0, 1.0)))
        if tilt < LEANING_DEG or not len(s.target_geoms):
            extra = p.tilt_deeper * float(np.clip((tilt - TILTED_DEG) / (LEANING_DEG - TILTED_DEG), 0.0, 1.0))
            local = p.rim_radius * radial + np.array(
                [0.0, 0.0, p.bowl_height - p.grasp_depth - extra - p.retry_deeper * min(self.retries, 3)])
            return s.target_pos + s.target_rot @ local
        # leaning fully: measured, closing on the wall segment itself works better
        local = (s.target_geoms - s.target_pos) @ s.target_rot  # geom centres in the bowl frame
        upper = s.target_geoms[local[:, 2] > 0.6 * local[:, 2].max()]
        seg = upper[np.argmax((upper - s.target_pos)[:, :2] @ self.side[:2])]
        return seg - np.array([0.0, 0.0, PAD_ABOVE_SITE + p.retry_deeper * min(self.retries + 2, 3)])

    def rotation_action(self, s: SceneState) -> np.ndarray:
        """Rotation (3,) that keeps the gripper pointing down with the fingers closing along ``side``."""
        axis = s.finger_axis[:2]
        yaw_err = np.arctan2(axis[0] * self.side[1] - axis[1] * self.side[0], axis @ self.side[:2])
        yaw_err = (yaw_err + np.pi / 2) % np.pi - np.pi / 2  # fingers are symmetric: mod pi
        z = s.eef_rot[:, 2]  # gripper approach axis; want (0, 0, -1)
        tilt = np.cross(z, np.array([0.0, 0.0, -1.0]))  # axis * sin(angle), world frame
        err = np.array([tilt[0], tilt[1], yaw_err])
        return self.params.rot_gain * err / ROT_SCALE

    def move(self, s: SceneState, target: np.ndarray, gripper: float) -> np.ndarray:
        pos = self.params.pos_gain * (target - s.eef_pos) / POS_SCALE
        action = np.concatenate([pos, self.rotation_action(s), [gripper]])
        return np.clip(action, -1.0, 1.0)

    # ---- the phase machine ----------------------------------------------------------------------
    def act(self, s: SceneState) -> np.ndarray:
        """Action (7,) in [-1, 1] for the current scene: [dx, dy, dz, drx, dry, drz, gripper]."""
        if self.side is None:
            self.side = self.choose_side(s)
        handler = getattr(self, f"_{self.phase}")
        return handler(s)

    def _goto(self, phase: str) -> None:
        self.phase, self.counter = phase, 0

    def _approach(self, s):
        target = self.grasp_point(s) + np.array([0, 0, self.params.hover])
        err = target - s.eef_pos
        if np.linalg.norm(err[:2]) < 0.01 and abs(err[2]) < 0.03 and abs(self.rotation_action(s)[2]) < 0.2:
            self._goto("descend")
        # stuck short of the target (joint limit with the fingers turned this way): try another side
        moved = np.linalg.norm(s.eef_pos - self.last_eef) if self.last_eef is not None else 1.0
        self.last_eef = s.eef_pos.copy()
        self.counter = self.counter + 1 if moved < 0.002 else 0
        if self.counter >= 8:
            self.banned.append(self.side)
            self.side = self.choose_side(s)
            self.counter = 0
        return self.move(s, target, OPEN)

    def _descend(self, s):
        target = self.grasp_point(s)
        self.counter += 1
        if np.linalg.norm(target - s.eef_pos) < 0.006 or self.counter > 25:
            self._goto("grasp")
        return self.move(s, target, OPEN)

    def _grasp(self, s):
        """Close until the fingers stop on the wall (width stalls) or ``grasp_steps`` pass."""
        self.counter += 1
        stalled = self.counter >= 4 and self.last_width - s.gripper_width < 0.0015
        self.last_width = s.gripper_width
        if stalled or self.counter >= self.params.grasp_steps:
            if s.gripper_width < MIN_GRASP_WIDTH:  # closed on nothing: open and try again, deeper
                self.retries += 1
                self._goto("approach")
                return self.move(s, s.eef_pos, OPEN)
            self.carry_z = self.carry_height(s)
            self._goto("lift")
        return self.move(s, self.grasp_point(s), CLOSE)

    def _lift(self, s):
        target = s.eef_pos.copy()
        target[2] = self.carry_z
        if s.gripper_width < MIN_GRASP_WIDTH:  # dropped it
            self.retries += 1
            self._goto("approach")
        elif self.carry_z - s.eef_pos[2] < 0.03:
            self._goto("carry")
            self.push, self.stalled = 0.0, 0
        return self.move(s, target, CLOSE)

    def _over_place(self, s) -> np.ndarray:
        """Eef xy target that brings the bowl's centre over the place's (``carry`` and ``lower``).

        The arm can stall short of it: a bowl lifted out of the drawer and taken to a far plate leaves the
        elbow at its joint limit (q4 = -0.07) and the OSC's pull from a 13-21 mm error cannot move it
        (measured: task 4, init states 2 and 40 stood still for 130 steps; a full-scale action still moves
        it). Each stalled step near the place aims the setpoint farther past it (``stall_push``)."""
        moved = np.linalg.norm(s.eef_pos - self.last_eef) if self.last_eef is not None else 1.0
        self.last_eef = s.eef_pos.copy()
        self.stalled = self.stalled + 1 if moved < 0.002 else 0
        err = s.place_pos[:2] - s.target_pos[:2]
        # not the slow last millimetres of a normal carry, nor a bowl caught on something on the way
        if self.stalled >= 3 and np.linalg.norm(err) < self.params.stall_near:
            self.push = min(self.push + self.params.stall_push, 4.0)
        return s.eef_pos[:2] + (1.0 + self.push) * err

    def _carry(self, s):
        target = s.eef_pos.copy()
        target[:2] = self._over_place(s)
        target[2] = self.carry_z
        if s.eef_pos[2] - s.target_pos[2] > 1.5 * self.params.bowl_height:  # the bowl stayed behind or fell
            # (a narrow width alone is no sign: pads pinching the rim lip carry it at 5 mm)
            self.retries += 1
            self._goto("approach")
        elif np.linalg.norm(s.place_pos[:2] - s.target_pos[:2]) < 0.012:
            self._goto("lower")
        return self.move(s, target, CLOSE)

    def _lower(self, s):
        target = s.eef_pos.copy()
        target[:2] = self._over_place(s)
        above = s.target_pos[2] - s.place_pos[2]
        target[2] -= above - self.params.place_height
        self.counter += 1
        if above < self.params.place_height + 0.008 or self.counter > 60:
            self._goto("release")
        return self.move(s, target, CLOSE)

    def _release(self, s):
        self.counter += 1
        if self.counter >= self.params.release_steps:
            self._goto("retreat")
        return self.move(s, s.eef_pos, OPEN)

    def _retreat(self, s):
        return self.move(s, s.eef_pos + np.array([0, 0, 0.05]), OPEN)
