"""Every LIBERO convention in one place, shared by demos, training and evaluation (pure numpy + PIL).

Nothing here imports the simulator, so the dataset reader and the policy side can use the same
functions as the env without pulling in MuJoCo. Each constant cites where it comes from.

Images
    LIBERO (robosuite 1.4, ``IMAGE_CONVENTION = "opengl"``) returns camera frames with row 0 at the
    *bottom*: MuJoCo's ``mjr_readPixels`` reads bottom-up. Columns are already left-to-right, so the
    right-side-up image is a vertical flip only, ``img[::-1]``. (openpi / OpenVLA rotate 180 degrees,
    ``img[::-1, ::-1]``, to match their re-rendered RLDS data; that image is mirrored left-right. We
    train on our own HDF5 files, which store frames as LIBERO renders them, so we use the physically
    correct flip; tests/envs/test_libero.py checks it by projecting an object's world position into
    the camera.) Resizing to 224 uses PIL bilinear (deterministic, same on every machine).

Poses
    robosuite's ``robot0_eef_pos`` is the gripper's ``grip_site`` position (world frame, metres);
    ``robot0_eef_quat`` is the orientation of the hand body ``robot0_right_hand`` converted from
    MuJoCo's (w, x, y, z) to **(x, y, z, w)** (``T.convert_quat(..., to="xyzw")``, scalar last, as
    scipy's ``Rotation.as_quat``). The policy's ``ee_pose`` is ``[x, y, z, qx, qy, qz, qw]``.

Actions
    7-D ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` for robosuite's OSC_POSE controller, each in
    [-1, 1] (the controller scales to 0.05 m and 0.5 rad per step). Gripper: -1 opens, +1 closes.
"""
from __future__ import annotations

import numpy as np

from vla_flow.errors import UserError

# --- protocol constants -------------------------------------------------------------------------
CONTROL_HZ = 20  # LIBERO's ControlEnv(control_freq=20)
SETTLE_STEPS = 10  # no-op steps after reset (openpi/OpenVLA `num_steps_wait = 10`): objects drop onto the table
# Max policy steps per episode after the settle steps (openpi `examples/libero/main.py`, OpenVLA
# `run_libero_eval.py`; LeRobot uses 280 for spatial). Recorded in every output.
class _StepLimits(dict):
    """The five protocol limits; any other suite looks up its base suite (``STEP_LIMITS[suite]`` works for
    ``libero_spatial_swap`` too, so callers need no special case). A suite with no base raises UserError."""

    def __missing__(self, suite: str) -> int:
        return step_limit(suite)


STEP_LIMITS = _StepLimits({
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
})


def base_suite(suite: str) -> str | None:
    """The original LIBERO suite a (LIBERO-PRO) variant perturbs: the longest ``STEP_LIMITS`` key ``k`` with
    ``suite == k`` or ``suite`` starting with ``k + "_"`` (``libero_spatial_with_mug`` -> ``libero_spatial``,
    ``libero_10_lan`` -> ``libero_10``); None when there is none (``libero_100``, ``libero_mine``)."""
    hits = [k for k in dict.keys(STEP_LIMITS) if suite == k or suite.startswith(k + "_")]
    return max(hits, key=len) if hits else None


def step_limit(suite: str) -> int:
    """Max policy steps for ``suite``: its base suite's protocol limit (a perturbation keeps the task's length)."""
    base = base_suite(suite)
    if base is None:
        raise UserError(f"suite '{suite}' has no protocol step limit: it is not a variant of "
                        f"{', '.join(dict.keys(STEP_LIMITS))}; pass --max-steps (eval.max_steps / env.max_steps)")
    return dict.__getitem__(STEP_LIMITS, base)
GRIPPER_OPEN = -1.0
GRIPPER_CLOSE = 1.0
# The LIBERO evaluation no-op: no motion, gripper open.
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, GRIPPER_OPEN], dtype=np.float64)
ACTION_DIM = 7
POLICY_IMAGE_SIZE = 224
QUAT_ORDER = "xyzw"  # scalar last, as robosuite's robot0_eef_quat and scipy

# --- raw observation keys (robosuite/LIBERO) -----------------------------------------------------
OBS_AGENTVIEW = "agentview_image"
OBS_WRIST = "robot0_eye_in_hand_image"
OBS_JOINTS = "robot0_joint_pos"
OBS_EEF_POS = "robot0_eef_pos"
OBS_EEF_QUAT = "robot0_eef_quat"
OBS_GRIPPER = "robot0_gripper_qpos"
CAMERA_OBS_KEY = {"agentview": OBS_AGENTVIEW, "robot0_eye_in_hand": OBS_WRIST}

# --- HDF5 demonstration layout (robomimic / official LIBERO; see docs/interfaces.md) ------------------
H5_DATA = "data"
H5_DEMO_PREFIX = "demo_"  # data/demo_0, data/demo_1, ... (sort numerically, not lexically)
H5_ACTIONS = "actions"  # (T, 7) f64
H5_OBS = "obs"
H5_AGENTVIEW = "agentview_rgb"  # (T, H, W, 3) uint8, stored upside down as rendered
H5_WRIST = "eye_in_hand_rgb"  # (T, H, W, 3) uint8, upside down
H5_JOINTS = "joint_states"  # (T, 7)
H5_EE_POS = "ee_pos"  # (T, 3)
H5_EE_ORI = "ee_ori"  # (T, 3) axis-angle, as LIBERO stores it
H5_EE_QUAT = "ee_quat"  # (T, 4) xyzw (ours, extra)
H5_GRIPPER = "gripper_states"  # (T, 2)
H5_DONES = "dones"
H5_REWARDS = "rewards"
H5_STATES = "states"  # (T, nq + nv + 1) flattened MuJoCo state
H5_ROBOT_STATES = "robot_states"
H5_GENERATION = "vla_flow"  # data.attrs[...]: JSON of our generation settings (suite, task, render, settle steps)
# raw env observation key -> HDF5 obs key
H5_OBS_FROM_ENV = {
    OBS_AGENTVIEW: H5_AGENTVIEW,
    OBS_WRIST: H5_WRIST,
    OBS_JOINTS: H5_JOINTS,
    OBS_EEF_POS: H5_EE_POS,
    OBS_EEF_QUAT: H5_EE_QUAT,
    OBS_GRIPPER: H5_GRIPPER,
}


def flip_image(img: np.ndarray) -> np.ndarray:
    """LIBERO frame (H, W, 3) or batch (..., H, W, 3), row 0 at the bottom -> right side up (contiguous)."""
    img = np.asarray(img)
    if img.ndim < 3 or img.shape[-1] != 3:
        raise ValueError(f"flip_image: expected (..., H, W, 3), got shape {img.shape}")
    return np.ascontiguousarray(img[..., ::-1, :, :])


def resize_image(img: np.ndarray, size: int = POLICY_IMAGE_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 with PIL bilinear (deterministic)."""
    from PIL import Image

    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"resize_image: expected (H, W, 3) uint8, got {img.shape} {img.dtype}")
    if img.shape[0] == size and img.shape[1] == size:
        return np.ascontiguousarray(img)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def to_policy_image(raw: np.ndarray, size: int = POLICY_IMAGE_SIZE) -> np.ndarray:
    """Raw LIBERO frame (H, W, 3) uint8 (upside down) -> policy image (size, size, 3) uint8 right side up."""
    return resize_image(flip_image(raw), size)


def ee_pose(eef_pos: np.ndarray, eef_quat_xyzw: np.ndarray) -> np.ndarray:
    """(3,) position + (4,) xyzw quaternion -> (7,) float32 ``[x, y, z, qx, qy, qz, qw]``.

    The quaternion is passed as robosuite gives it, sign included: with the gripper pointing down qw is
    near 0, so forcing qw >= 0 would make the input jump between q and -q; MuJoCo's xquat is continuous.
    """
    q = np.asarray(eef_quat_xyzw, dtype=np.float64).reshape(4)
    return np.concatenate([np.asarray(eef_pos, dtype=np.float64).reshape(3), q]).astype(np.float32)


def check_action(action) -> np.ndarray:
    """Validate one action -> (7,) float64 clipped to [-1, 1].

    Wrong shape, non-numeric, NaN or inf raise ``UserError`` (they mean a bug upstream and would
    silently corrupt the simulation). Finite values outside [-1, 1] are clipped, as robosuite's
    controller would clip them anyway (``Controller.clip_action``): clipping here makes it explicit.
    """
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"action must be 7 numbers [dx, dy, dz, droll, dpitch, dyaw, gripper]; got {action!r}") from exc
    if a.shape != (ACTION_DIM,):
        raise UserError(
            f"action has shape {a.shape}, expected ({ACTION_DIM},) = [dx, dy, dz, droll, dpitch, dyaw, gripper]; "
            "pass one step of an action chunk, e.g. chunk[0]"
        )
    if not np.all(np.isfinite(a)):
        raise UserError(f"action contains NaN or inf: {a.tolist()}; the policy output is broken")
    return np.clip(a, -1.0, 1.0)
