"""DAgger takeovers: the scripted expert continues from states a policy brought about.

Why: a policy trained on expert demos drifts into states the expert never visits (a grasp closed beside
the wall, a hand stuck at the wrong height) and has no data there. DAgger labels the policy's own states
with the expert's actions. Our expert is a phase machine, so its label at a foreign state needs its phase
inferred from the scene (``resume_expert``, which also adds a ``clear`` phase for a hand that starts in
or against the bowl); from there it runs to success in the simulator, and the whole
continuation is kept as one demonstration that starts at the policy's state (``envs.demos`` with
``EpisodePlan.start``). Every label is then an expert action along the expert's own trajectory, and a
takeover that fails is dropped like any failed demo.

``pick_takeover_steps`` (pure logic) decides where along a rollout to take over.
"""
from __future__ import annotations

import numpy as np

from envs.expert import CLOSE, MIN_GRASP_WIDTH, OPEN, PickPlaceExpert
from envs.scene import SceneState

HOLDING_WIDTH = 0.03  # finger opening (m) at most while pinching the bowl's wall (open: ~0.08)
OPEN_WIDTH = 0.06  # finger opening (m) at least when the hand is open
RIM_TOLERANCE = 0.025  # grip site this close (m, horizontally) to the rim ring counts as "at the rim"
CLEAR_REACH = 0.05  # grip site this far (m) outside the rim ring still has fingers over the bowl


class TakeoverExpert(PickPlaceExpert):
    """The scripted expert plus one phase that only foreign states need: ``clear``.

    The expert's approach flies straight to the hover point above its grasp point. From its own start
    (the arm high above the table) that path is free; from a policy's state the hand may sit inside the
    bowl or against a tilted rim, and flying sideways drags the bowl along so the target never comes
    closer (measured: 2 of the first 4 takeovers of a DAgger round stalled in approach until the step
    limit). ``clear`` first raises the hand straight up to the hover height above the bowl's rim, the
    fingers closed while they are inside the bowl (open fingers press on its wall), then approaches.
    """

    def _clear(self, s: SceneState) -> np.ndarray:
        p = self.params
        top = s.target_pos[2] + p.bowl_height + p.hover
        if s.eef_pos[2] > top - 0.01:
            self._goto("approach")
            return self._approach(s)
        target = s.eef_pos.copy()
        target[2] = top
        inside = np.linalg.norm(s.eef_pos[:2] - s.target_pos[:2]) < p.rim_radius - 0.015
        return self.move(s, target, CLOSE if inside else OPEN)


def resume_expert(goal, s: SceneState, params=None) -> TakeoverExpert:
    """A ``TakeoverExpert`` for ``goal`` whose phase is inferred from scene ``s`` (a policy's state):

    - the fingers pinch the bowl's wall (opening between empty and ``HOLDING_WIDTH``, grip site at the
      rim ring within the wall's height): keep that side, ``lift`` (then carry, lower, release);
    - the open hand is at the rim ring on a side the expert itself would accept: ``descend`` there;
    - the hand is over the bowl's footprint below the hover height: ``clear``, then approach;
    - otherwise ``approach`` with the gripper opening (a half-closed or empty grip opens first).
    """
    expert = TakeoverExpert(goal) if params is None else TakeoverExpert(goal, params)
    p = expert.params
    rel = s.eef_pos - s.target_pos  # from the bowl's bottom centre
    radial = float(np.linalg.norm(rel[:2]))
    at_rim = abs(radial - p.rim_radius) < RIM_TOLERANCE and -0.01 < rel[2] < p.bowl_height + 0.015
    side = np.r_[rel[:2] / max(radial, 1e-9), 0.0]
    if at_rim and MIN_GRASP_WIDTH <= s.gripper_width <= HOLDING_WIDTH:
        expert.side = side
        expert.carry_z = expert.carry_height(s)  # the expert's own rule (clears the drawer walls)
        expert.phase = "lift"
    elif at_rim and s.gripper_width > OPEN_WIDTH and _acceptable(expert, s, side):
        expert.side = side
        expert.phase = "descend"
    elif radial < p.rim_radius + CLEAR_REACH and rel[2] < p.bowl_height + p.hover - 0.01:
        expert.phase = "clear"
    return expert


def _acceptable(expert: PickPlaceExpert, s: SceneState, d: np.ndarray) -> bool:
    """Whether the expert's own side rules allow side ``d``: clear of the plate and walls, reachable."""
    p = expert.params
    outer = s.target_pos[:2] + (p.rim_radius + 0.04) * d[:2]
    if np.linalg.norm(outer - s.place_pos[:2]) < s.place_radius + p.place_margin:
        return False
    return expert._wall_clearance(s, d) >= p.finger_margin and expert._reachable(s, d)


def pick_takeover_steps(query_steps, end_step: int, success: bool, per_failure: int,
                        per_success: int) -> list[int]:
    """Indices into ``query_steps`` (the steps at which the policy was queried, ascending) to take over at.

    Step 0 is skipped (the expert's own demos start there), and so are queries at or after ``end_step``
    (the step the rollout succeeded or ran out). A failed rollout gets ``per_failure`` takeovers and a
    successful one ``per_success``, spread evenly over the remaining queries, the last one included
    (a failed rollout's late states are where the policy got stuck). Returns a sorted list, no repeats.
    """
    steps = np.asarray(query_steps)
    idx = np.flatnonzero((steps > 0) & (steps < end_step))
    k = min(per_success if success else per_failure, len(idx))
    if k <= 0:
        return []
    picks = np.unique(np.round(np.linspace(len(idx) - 1, 0, k)).astype(int))
    return sorted(int(i) for i in idx[picks])
