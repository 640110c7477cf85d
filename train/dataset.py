"""HDF5 demonstration reader: our generated files and the official LIBERO files, one code path.

Layout (robomimic / LIBERO, see docs/interfaces.md and ``envs.conventions``): ``data/demo_K/actions (T, 7)``
and ``data/demo_K/obs/{agentview_rgb (T, H, W, 3) uint8 upside down, joint_states (T, 7), ee_pos (T, 3),
ee_ori (T, 3) axis-angle, [ee_quat (T, 4) xyzw], gripper_states (T, 2)}``; the instruction is in the JSON
attribute ``data.attrs["problem_info"]["language_instruction"]``. Official files have no ``ee_quat``; it is
recovered from ``ee_ori`` exactly (robosuite's ``quat2axisangle`` inverted by scipy's ``from_rotvec``).

Why the split into ``DemoFile`` (validation + low-dim arrays, read once, small) and ``FrameTable`` (all
frames of one split as flat numpy arrays): the training loop gathers a batch with one fancy-index per
array, and images (the only large data) are read lazily through a per-process h5py handle, so DataLoader
workers started by fork/spawn each open their own handle.

Samples follow LeRobot/pi0 chunking: frame t of an episode of length T predicts ``actions[t : t + H]``;
past the end the last action is repeated and ``action_mask`` is 0 there (the loss ignores it).
"""
from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs import conventions as C
from vla_flow.errors import UserError

# obs key -> trailing shape (after T); images are checked separately
LOWDIM_KEYS = {C.H5_JOINTS: (7,), C.H5_EE_POS: (3,), C.H5_EE_ORI: (3,), C.H5_GRIPPER: (2,)}


class DatasetError(UserError):
    """An HDF5 file is missing, unreadable or has a wrong key/shape; the message names file, demo and key."""


def _demo_number(name: str) -> int:
    match = re.fullmatch(rf"{C.H5_DEMO_PREFIX}(\d+)", name)
    return int(match.group(1)) if match else -1


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angle (LIBERO ``ee_ori``) -> (T, 4) xyzw. Inverse of robosuite ``quat2axisangle``,
    sign included (angle in [0, 2 pi] maps back to the stored w = cos(angle / 2))."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64)).as_quat().astype(np.float32)


@dataclass
class DemoFile:
    """One validated HDF5 file. Low-dim arrays are held in memory (KBs per demo); images stay on disk.

    ``demos`` are sorted numerically (demo_2 before demo_10); ``lengths[i]`` is demo i's T.
    """

    path: Path
    image_key: str
    instruction: str
    demos: list[str]
    lengths: list[int]
    actions: list[np.ndarray]  # each (T, 7) f32
    joints: list[np.ndarray]  # (T, 7) f32
    ee_pose: list[np.ndarray]  # (T, 7) f32 [x, y, z, qx, qy, qz, qw]
    gripper: list[np.ndarray]  # (T, 2) f32
    image_shape: tuple = ()
    bddl_file_name: str = ""
    # Our generation settings (data.attrs["vla_flow"] JSON: suite, task_index, settle_steps, env.render ...);
    # {} for official LIBERO files. Training checks that files and config agree on them (train/data.py).
    generation: dict = field(default_factory=dict)
    _handle: object = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return int(sum(self.lengths))

    def read_image(self, demo_idx: int, t: int) -> np.ndarray:
        """Raw stored frame (H, W, 3) uint8 (upside down), through a lazily opened handle."""
        with _damaged(self.path, f"{self.demos[demo_idx]}/obs/{self.image_key}"):
            return self._h5()[C.H5_DATA][self.demos[demo_idx]][C.H5_OBS][self.image_key][t]

    def read_demo_images(self, demo_idx: int) -> np.ndarray:
        """All raw frames of one demo, (T, H, W, 3) uint8."""
        with _damaged(self.path, f"{self.demos[demo_idx]}/obs/{self.image_key}"):
            return self._h5()[C.H5_DATA][self.demos[demo_idx]][C.H5_OBS][self.image_key][()]

    def _h5(self):
        import h5py

        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self):  # DataLoader workers: never pickle an open handle
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


@contextlib.contextmanager
def _damaged(path: Path, where: str):
    """h5py's errors on a damaged file (RuntimeError/OSError/KeyError without the file name) -> DatasetError."""
    try:
        yield
    except DatasetError:
        raise
    except (OSError, RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DatasetError(f"{path}: damaged HDF5 file, {where} cannot be read ({type(exc).__name__}: {first}); "
                           "restore the file from a good copy or regenerate it with `vla-flow demos`") from None


def _fail(path: Path, where: str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {where}: {problem}. The file does not follow the LIBERO/robomimic layout "
                        f"(docs/interfaces.md); regenerate it with `vla-flow demos` or fix the file.")


def _read_instruction(path: Path, data) -> str:
    raw = data.attrs.get("problem_info")
    if raw is None:
        raise _fail(path, "data.attrs['problem_info']", "missing (it holds the language instruction)")
    try:
        info = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        text = str(info["language_instruction"]).strip()
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(path, "data.attrs['problem_info']", f"no language_instruction in JSON ({exc})") from None
    if not text:
        raise _fail(path, "data.attrs['problem_info']", "language_instruction is empty")
    return text


def _read_demo(path: Path, demo, name: str, image_key: str) -> tuple[int, tuple, dict]:
    """Validate one demo group; return (T, image shape, low-dim arrays)."""
    if C.H5_ACTIONS not in demo:
        raise _fail(path, f"{name}/{C.H5_ACTIONS}", "missing key")
    if C.H5_OBS not in demo:
        raise _fail(path, f"{name}/{C.H5_OBS}", "missing group")
    obs = demo[C.H5_OBS]
    actions = np.asarray(demo[C.H5_ACTIONS][()], dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != C.ACTION_DIM or actions.shape[0] == 0:
        raise _fail(path, f"{name}/{C.H5_ACTIONS}", f"shape {actions.shape}, expected (T>0, {C.ACTION_DIM})")
    T = actions.shape[0]
    if not np.all(np.isfinite(actions)):
        raise _fail(path, f"{name}/{C.H5_ACTIONS}", "contains NaN or inf")
    if image_key not in obs:
        raise _fail(path, f"{name}/obs/{image_key}", f"missing key (has {sorted(obs.keys())})")
    img = obs[image_key]
    if img.dtype != np.uint8 or img.ndim != 4 or img.shape[-1] != 3 or img.shape[0] != T:
        raise _fail(path, f"{name}/obs/{image_key}",
                    f"shape {img.shape} {img.dtype}, expected ({T}, H, W, 3) uint8 (T = len(actions))")
    arrays = {}
    for key, tail in LOWDIM_KEYS.items():
        if key not in obs:
            raise _fail(path, f"{name}/obs/{key}", "missing key")
        arr = np.asarray(obs[key][()], dtype=np.float32)
        if arr.shape != (T, *tail):
            raise _fail(path, f"{name}/obs/{key}", f"shape {arr.shape}, expected {(T, *tail)} (T = len(actions))")
        arrays[key] = arr
    if C.H5_EE_QUAT in obs:
        quat = np.asarray(obs[C.H5_EE_QUAT][()], dtype=np.float32)
        if quat.shape != (T, 4):
            raise _fail(path, f"{name}/obs/{C.H5_EE_QUAT}", f"shape {quat.shape}, expected {(T, 4)}")
    else:  # official LIBERO file: recover the quaternion from the stored axis-angle
        quat = axis_angle_to_quat(arrays[C.H5_EE_ORI])
    arrays["ee_pose"] = np.concatenate([arrays[C.H5_EE_POS], quat], axis=1).astype(np.float32)
    arrays[C.H5_ACTIONS] = actions
    return T, tuple(img.shape[1:]), arrays


def _read_generation(data) -> dict:
    """Our generation settings JSON, or {} (official LIBERO files have none; unreadable JSON counts as none)."""
    raw = data.attrs.get(C.H5_GENERATION, None)
    if raw is None:
        return {}
    try:
        gen = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return {}
    return gen if isinstance(gen, dict) else {}


def open_demo_file(path: str | Path, image_key: str = C.H5_AGENTVIEW) -> DemoFile:
    """Open and validate one HDF5 file; raise ``DatasetError`` naming file, demo and key on any problem."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}. Generate one with `vla-flow demos --out DIR` "
                           "or pass an existing file with --data FILE.hdf5")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc}); it may be truncated, regenerate it") from None
    with fh:
        if C.H5_DATA not in fh:
            raise _fail(path, f"/{C.H5_DATA}", "missing group")
        data = fh[C.H5_DATA]
        names = sorted((k for k in data.keys() if _demo_number(k) >= 0), key=_demo_number)
        if not names:
            raise _fail(path, f"/{C.H5_DATA}", f"no {C.H5_DEMO_PREFIX}K groups")
        instruction = _read_instruction(path, data)
        bddl = data.attrs.get("bddl_file_name", "")
        out = DemoFile(path=path, image_key=image_key, instruction=instruction, demos=names, lengths=[],
                       actions=[], joints=[], ee_pose=[], gripper=[],
                       bddl_file_name=bddl.decode() if isinstance(bddl, bytes) else str(bddl),
                       generation=_read_generation(data))
        for name in names:
            with _damaged(path, name):
                T, shape, arrays = _read_demo(path, data[name], name, image_key)
            if out.image_shape and shape != out.image_shape:
                raise _fail(path, f"{name}/obs/{image_key}", f"frame shape {shape} differs from {out.image_shape}")
            out.image_shape = shape
            out.lengths.append(T)
            out.actions.append(arrays[C.H5_ACTIONS])
            out.joints.append(arrays[C.H5_JOINTS])
            out.ee_pose.append(arrays["ee_pose"])
            out.gripper.append(arrays[C.H5_GRIPPER])
    return out


def split_demos(files: list[DemoFile], val_fraction: float, seed: int) -> tuple[list, list]:
    """Split whole episodes into train/val: lists of (file_idx, demo_idx). Deterministic in ``seed``.

    At least one demo stays in train; val is empty when ``val_fraction`` is 0 or there is one demo.
    """
    all_demos = [(f, d) for f, df in enumerate(files) for d in range(len(df.demos))]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(all_demos))
    n_val = min(int(round(val_fraction * len(all_demos))), len(all_demos) - 1)
    val = sorted(all_demos[i] for i in order[:n_val])
    train = sorted(all_demos[i] for i in order[n_val:])
    return train, val


@dataclass
class FrameTable:
    """All frames of one split as flat arrays; row i is one training sample (a frame and its chunk).

    ``frame_id`` (F,) indexes the file-level feature arrays: file ``file_idx[i]``, row ``frame_in_file[i]``
    (frames of a file ordered demo by demo, sorted numerically). ``chunk_rows`` (F, H) are rows of this
    table whose actions form the chunk; ``action_mask`` (F, H) is 0 on the padding past episode end.
    """

    files: list[DemoFile]
    file_idx: np.ndarray  # (F,) int64
    demo_idx: np.ndarray  # (F,) int64
    t: np.ndarray  # (F,) int64 time step within the demo
    frame_in_file: np.ndarray  # (F,) int64
    joints: np.ndarray  # (F, 7) f32
    ee_pose: np.ndarray  # (F, 7) f32
    gripper: np.ndarray  # (F, 2) f32
    actions: np.ndarray  # (F, 7) f32 action at this frame
    chunk_rows: np.ndarray  # (F, H) int64
    action_mask: np.ndarray  # (F, H) f32

    def __len__(self) -> int:
        return int(self.file_idx.shape[0])

    def sample_ids(self, rows) -> list[str]:
        """Human-readable ids ``file.hdf5:demo_K:t`` (for error messages)."""
        return [f"{self.files[self.file_idx[r]].path.name}:{self.files[self.file_idx[r]].demos[self.demo_idx[r]]}"
                f":{self.t[r]}" for r in np.asarray(rows).tolist()]

    def chunk(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Action chunks (B, H, 7) and mask (B, H) for table rows (B,)."""
        return self.actions[self.chunk_rows[rows]], self.action_mask[rows]


def build_frames(files: list[DemoFile], demos: list[tuple[int, int]], horizon: int) -> FrameTable:
    """Flatten the given (file_idx, demo_idx) episodes into a ``FrameTable`` with chunk windows of ``horizon``."""
    if horizon < 1:
        raise ValueError(f"horizon: {horizon} must be >= 1")
    offsets = [np.concatenate([[0], np.cumsum(df.lengths)]) for df in files]
    cols = {k: [] for k in ("file_idx", "demo_idx", "t", "frame_in_file", "joints", "ee_pose", "gripper",
                            "actions", "chunk_rows", "action_mask")}
    start = 0
    for f, d in demos:
        df, T = files[f], files[f].lengths[d]
        t = np.arange(T)
        cols["file_idx"].append(np.full(T, f))
        cols["demo_idx"].append(np.full(T, d))
        cols["t"].append(t)
        cols["frame_in_file"].append(offsets[f][d] + t)
        cols["joints"].append(df.joints[d])
        cols["ee_pose"].append(df.ee_pose[d])
        cols["gripper"].append(df.gripper[d])
        cols["actions"].append(df.actions[d])
        future = t[:, None] + np.arange(horizon)[None, :]  # (T, H)
        cols["chunk_rows"].append(start + np.minimum(future, T - 1))  # repeat the last action past the end
        cols["action_mask"].append((future < T).astype(np.float32))
        start += T
    if not demos:
        empty = {k: np.zeros((0,), np.int64) for k in cols}
        for k, width in (("joints", 7), ("ee_pose", 7), ("gripper", 2), ("actions", 7)):
            empty[k] = np.zeros((0, width), np.float32)
        empty["chunk_rows"] = np.zeros((0, horizon), np.int64)
        empty["action_mask"] = np.zeros((0, horizon), np.float32)
        return FrameTable(files=files, **empty)
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    for k in ("file_idx", "demo_idx", "t", "frame_in_file", "chunk_rows"):
        arrays[k] = arrays[k].astype(np.int64)
    return FrameTable(files=files, **arrays)


def policy_image(df: DemoFile, demo_idx: int, t: int, size: int = C.POLICY_IMAGE_SIZE) -> np.ndarray:
    """Frame as the policy sees it: (size, size, 3) uint8, right side up (``envs.conventions``)."""
    return C.to_policy_image(df.read_image(demo_idx, t), size)


def describe_file(path: str | Path, image_key: str = C.H5_AGENTVIEW) -> str:
    """Validated summary for ``vla-flow demos --inspect FILE``: demos, transitions, lengths, action ranges,
    instruction (raises ``DatasetError`` like the trainer would)."""
    df = open_demo_file(path, image_key)
    lengths = np.array(df.lengths)
    actions = np.concatenate(df.actions)
    names = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    lines = [f"file:         {df.path}",
             f"instruction:  {df.instruction}",
             f"bddl:         {df.bddl_file_name or '(not recorded)'}",
             f"demos:        {len(df.demos)} ({df.demos[0]} .. {df.demos[-1]})",
             f"transitions:  {int(lengths.sum())}",
             f"length:       min {lengths.min()}  mean {lengths.mean():.1f}  max {lengths.max()}",
             f"{image_key}: {df.image_shape} uint8 per frame (stored upside down, flipped on read)",
             "action ranges (min / mean / max):"]
    for i, name in enumerate(names):
        lines.append(f"  {name:8s} {actions[:, i].min():+.3f} / {actions[:, i].mean():+.3f} / {actions[:, i].max():+.3f}")
    return "\n".join(lines)
