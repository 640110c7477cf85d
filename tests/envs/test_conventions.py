"""Pure-logic tests of envs/conventions.py (no simulator)."""
from __future__ import annotations

import numpy as np
import pytest

from envs import conventions as C
from vla_flow.errors import UserError


def test_flip_image_is_vertical_flip_only():
    img = np.zeros((4, 5, 3), np.uint8)
    img[0, 1] = 255  # bottom row as rendered (row 0 = bottom), column 1
    out = C.flip_image(img)
    assert out[3, 1].tolist() == [255, 255, 255]  # moved to the bottom row, same column
    assert out.sum() == img.sum() and out.flags["C_CONTIGUOUS"]
    batch = np.stack([img, img])
    assert np.array_equal(C.flip_image(batch)[1], out)
    with pytest.raises(ValueError):
        C.flip_image(np.zeros((4, 5), np.uint8))


def test_to_policy_image_shape_dtype_and_determinism():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    a, b = C.to_policy_image(raw), C.to_policy_image(raw.copy())
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    # a constant image stays constant, and the top rows come from the raw bottom rows
    half = np.zeros((128, 128, 3), np.uint8)
    half[:64] = 200  # raw bottom half (as rendered) bright
    out = C.to_policy_image(half)
    assert out[-10:].mean() == 200 and out[:10].mean() == 0


def test_check_action_rejects_bad_input_and_clips():
    ok = C.check_action([0.1, -0.2, 0.3, 0, 0, 0, 1])
    assert ok.shape == (7,) and ok.dtype == np.float64
    clipped = C.check_action([2, -3, 0, 0, 0, 0, 1.5])
    assert clipped.tolist() == [1, -1, 0, 0, 0, 0, 1]
    for bad in ([0] * 6, np.zeros((1, 7)), [0, 0, 0, 0, 0, 0, np.nan], [0, 0, 0, np.inf, 0, 0, 0], "abcdefg"):
        with pytest.raises(UserError):
            C.check_action(bad)


def test_protocol_constants():
    assert C.STEP_LIMITS == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                             "libero_10": 520, "libero_90": 400}
    assert C.SETTLE_STEPS == 10 and C.CONTROL_HZ == 20
    assert C.NOOP_ACTION.tolist() == [0, 0, 0, 0, 0, 0, -1] and C.GRIPPER_OPEN == -1
    assert C.STEP_LIMITS["libero_spatial_swap"] == 220  # variants follow their base (tests/envs/test_suites.py)


def test_ee_pose_layout_keeps_quaternion_as_given():
    q = np.array([0.9, 0.1, 0.0, -0.42])  # xyzw with qw < 0: kept (no sign flip)
    pose = C.ee_pose([1, 2, 3], q)
    assert pose.dtype == np.float32 and pose.shape == (7,)
    assert np.allclose(pose, [1, 2, 3, 0.9, 0.1, 0.0, -0.42])


def test_hdf5_keys_are_distinct():
    keys = [C.H5_AGENTVIEW, C.H5_WRIST, C.H5_JOINTS, C.H5_EE_POS, C.H5_EE_ORI, C.H5_EE_QUAT, C.H5_GRIPPER]
    assert len(set(keys)) == len(keys)
    assert set(C.H5_OBS_FROM_ENV.values()) <= set(keys)
