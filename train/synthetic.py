"""Synthetic demonstration files in the exact LIBERO/robomimic HDF5 layout (docs/interfaces.md).

For tests and benchmarks that must not depend on the simulator: random (seeded) images stored upside down
as LIBERO renders them, smooth joints/poses, and actions that are a smooth function of time so a policy
can fit them. Not demonstrations of anything: use `vla-flow demos` for real data.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from scipy.spatial.transform import Rotation

from vla_flow.io import atomic_path

# LIBERO-Spatial task 0, as the benchmark names it (the trainer checks data against env.task)
TASK0_NAME = "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
TASK0_LANGUAGE = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(T, 4) xyzw -> (T, 3) the way robosuite's ``transform_utils.quat2axisangle`` (and so LIBERO's
    ``ee_ori``) computes it: angle 2 acos(w) in [0, 2 pi], so the sign of w is kept."""
    w = np.clip(quat[:, 3], -1, 1)
    den = np.sqrt(1.0 - w * w)
    return quat[:, :3] * (2.0 * np.arccos(w) / np.where(den < 1e-9, 1.0, den))[:, None]


def write_demo_file(path: Path, n_demos: int = 4, length: int = 12, seed: int = 0, image_size: int = 32,
                    with_quat: bool = True, instruction: str = TASK0_LANGUAGE,
                    drop: str | None = None, task_name: str = TASK0_NAME, action_offset: float = 0.0,
                    generation: dict | None = None) -> Path:
    """Write ``path``; ``drop='demo_1/obs/joint_states'`` leaves that key out (for error tests).

    ``task_name`` is the benchmark task the file claims (its BDDL file name); ``action_offset`` shifts the
    six arm actions (so two files with the same ``seed`` differ only in instruction and actions: a policy
    can tell them apart by the text alone); ``generation`` is stored as our ``vla_flow`` settings JSON."""
    rng = np.random.default_rng(seed)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        data = fh.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": instruction})
        data.attrs["env_args"] = json.dumps({"env_name": "test"})
        data.attrs["bddl_file_name"] = f"libero/bddl_files/libero_spatial/{task_name}.bddl"
        if generation is not None:
            data.attrs["vla_flow"] = json.dumps(generation)
        data.attrs["num_demos"] = n_demos
        data.attrs["total"] = n_demos * length
        for k in range(n_demos):
            T = length + k  # unequal lengths
            g = data.create_group(f"demo_{k}")
            t = np.linspace(0, 1, T)[:, None]
            joints = np.sin(t * np.arange(1, 8) + k) * 0.5
            quat = Rotation.from_euler("xyz", np.c_[np.pi + 0 * t, 0.1 * t, 0.2 * t + k]).as_quat()
            quat *= np.where(k % 2, -1.0, 1.0)  # both signs of q occur in robosuite's continuous quaternions
            g.create_dataset("actions", data=np.clip(np.c_[np.cos(3 * t + k) * np.ones((T, 6)) * 0.5 + action_offset,
                                                           np.where(t > 0.5, 1.0, -1.0)], -1, 1))
            obs = g.create_group("obs")
            obs.create_dataset("agentview_rgb", data=rng.integers(0, 256, (T, image_size, image_size, 3), np.uint8))
            obs.create_dataset("eye_in_hand_rgb", data=rng.integers(0, 256, (T, image_size, image_size, 3), np.uint8))
            obs.create_dataset("joint_states", data=joints)
            obs.create_dataset("ee_pos", data=np.c_[t, t * 0.5, 1 - t])
            obs.create_dataset("ee_ori", data=quat2axisangle(quat))
            if with_quat:
                obs.create_dataset("ee_quat", data=quat)
            obs.create_dataset("gripper_states", data=np.c_[0.04 - 0.04 * t, -0.04 + 0.04 * t])
            for key in ("dones", "rewards"):
                g.create_dataset(key, data=(t[:, 0] == 1).astype(np.uint8))
            g.create_dataset("states", data=rng.normal(size=(T, 10)))
            g.create_dataset("robot_states", data=rng.normal(size=(T, 9)))
            g.attrs["num_samples"] = T
            g.attrs["init_state"] = k
            g.attrs["success"] = True
        if drop:
            del data[drop]
    return path
