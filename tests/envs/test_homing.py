"""Pure logic of the homing prefix (envs/homing.py); the real-simulator checks are in test_libero.py and
tests/eval/test_sim.py."""
import numpy as np
from scipy.spatial.transform import Rotation

from envs.homing import POS_SCALE, ROT_SCALE, home_action, pose_error

REST = np.array([-0.2085, 0.0, 1.1733, *Rotation.from_euler("x", 179.0, degrees=True).as_quat()])


def test_at_the_target_there_is_nothing_to_do():
    assert home_action(REST, REST) is None
    near = REST.copy()
    near[0] += 0.001  # inside the 2 mm tolerance
    assert home_action(near, REST) is None


def test_one_step_closes_a_small_error_and_keeps_the_gripper_open():
    rot = Rotation.from_euler("z", 0.1)  # world-frame yaw of 0.1 rad off the rest orientation
    pose = np.concatenate([REST[:3] + [0.01, -0.02, 0.0], (rot * Rotation.from_quat(REST[3:])).as_quat()])
    a = home_action(pose, REST)
    np.testing.assert_allclose(a[:3], np.array([-0.01, 0.02, 0.0]) / POS_SCALE, atol=1e-9)
    np.testing.assert_allclose(a[3:6], np.array([0.0, 0.0, -0.1]) / ROT_SCALE, atol=1e-9)
    assert a[6] == -1.0
    # applying the commanded rotation to the current pose gives the target
    after = Rotation.from_rotvec(a[3:6] * ROT_SCALE) * Rotation.from_quat(pose[3:])
    assert (after * Rotation.from_quat(REST[3:]).inv()).magnitude() < 1e-9


def test_large_errors_are_clipped_to_the_action_range():
    pose = REST.copy()
    pose[2] += 0.3
    a = home_action(pose, REST)
    assert a[2] == -1.0 and np.abs(a).max() <= 1.0


def test_quaternion_sign_does_not_matter():
    flipped = np.concatenate([REST[:3], -REST[3:]])
    dp, dr = pose_error(flipped, REST)
    assert np.linalg.norm(dp) == 0 and np.linalg.norm(dr) < 1e-9
