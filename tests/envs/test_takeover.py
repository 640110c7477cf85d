"""DAgger takeovers: where along a rollout to take over (pure logic) and the expert's inferred phase."""
from __future__ import annotations

import numpy as np
import pytest

from envs.scene import Goal, SceneState
from envs.takeover import TakeoverExpert, pick_takeover_steps, resume_expert


def test_takeover_steps_skip_the_start_and_the_end_and_spread_out():
    q = [0, 8, 16, 24, 32, 40, 48]
    assert pick_takeover_steps(q, end_step=220, success=False, per_failure=3, per_success=1) == [1, 3, 6]
    assert pick_takeover_steps(q, end_step=220, success=False, per_failure=1, per_success=0) == [6]  # the last
    assert pick_takeover_steps(q, end_step=30, success=True, per_failure=3, per_success=1) == [3]  # before 30
    assert pick_takeover_steps(q, end_step=30, success=True, per_failure=3, per_success=0) == []
    assert pick_takeover_steps(q, end_step=220, success=False, per_failure=50, per_success=1) == [1, 2, 3, 4, 5, 6]
    assert pick_takeover_steps([0], end_step=5, success=False, per_failure=4, per_success=1) == []


def _scene(eef, width, bowl=(0.0, 0.0, 0.9)) -> SceneState:
    return SceneState(eef_pos=np.asarray(eef, float), eef_rot=np.diag([1.0, -1.0, -1.0]),
                      finger_axis=np.array([0.0, 1.0, 0.0]), gripper_width=width,
                      target_pos=np.asarray(bowl, float), target_rot=np.eye(3),
                      place_pos=np.array([0.25, 0.25, 0.9]), obstacles=np.zeros((0, 3)), place_radius=0.073)


@pytest.mark.parametrize("eef, width, phase", [
    ((-0.05, 0.0, 0.935), 0.012, "lift"),       # fingers pinch the wall: keep it
    ((-0.05, 0.0, 0.935), 0.002, "clear"),      # closed on nothing at the rim: up and out first
    ((-0.05, 0.0, 0.935), 0.08, "descend"),     # open hand at the rim on a free side: go down there
    ((0.01, 0.0, 0.93), 0.055, "clear"),        # hand inside the bowl
    ((-0.05, 0.0, 1.10), 0.012, "approach"),    # half-closed hand high above the bowl
    ((0.20, 0.20, 1.00), 0.08, "approach"),     # far away
])
def test_resume_infers_the_phase_from_the_scene(eef, width, phase):
    s = _scene(eef, width)
    expert = resume_expert(Goal("bowl", "plate"), s)
    assert isinstance(expert, TakeoverExpert) and expert.phase == phase and expert.retries == 0
    if phase in ("lift", "descend"):
        np.testing.assert_allclose(expert.side, [-1.0, 0.0, 0.0], atol=1e-9)  # the side the hand is on
    action = expert.act(s)
    if phase == "lift":  # carry height: bowl bottom >= carry_clearance above the plate
        assert expert.carry_z - s.eef_pos[2] >= expert.params.min_lift
        assert action[6] == 1.0 and action[2] > 0  # keeps the grip closed and lifts
    elif phase == "clear":  # straight up; fingers closed while inside the bowl, else open
        assert action[2] > 0.5 and np.allclose(action[:2], 0.0, atol=1e-9)
        inside = np.linalg.norm(s.eef_pos[:2]) < expert.params.rim_radius - 0.015
        assert action[6] == (1.0 if inside else -1.0)
    elif phase == "approach":
        assert action[6] == -1.0


def test_clear_hands_over_to_approach_above_the_rim():
    s = _scene((0.01, 0.0, 0.93), 0.055)
    expert = resume_expert(Goal("bowl", "plate"), s)
    s.eef_pos = np.array([0.01, 0.0, 0.9 + 0.053 + 0.06])  # risen to the hover height above the rim
    assert expert.act(s)[6] == -1.0 and expert.phase == "approach"


def test_resume_does_not_descend_onto_the_plate():
    s = _scene((0.05 * np.cos(0.785), 0.05 * np.sin(0.785), 0.935), 0.08, bowl=(0.0, 0.0, 0.9))
    s.place_pos = np.array([0.12, 0.12, 0.9])  # the plate lies on the side the hand is on
    assert resume_expert(Goal("bowl", "plate"), s).phase == "clear"
