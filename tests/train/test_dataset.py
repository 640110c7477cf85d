"""HDF5 reader: validation errors, numeric demo order, quaternions, flips, chunk windows, split."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from envs import conventions as C
from train.synthetic import write_demo_file
from train.dataset import DatasetError, build_frames, open_demo_file, policy_image, split_demos


def test_demos_sorted_numerically_and_lengths(tmp_path):
    df = open_demo_file(write_demo_file(tmp_path / "a.hdf5", n_demos=12, length=3))
    assert df.demos[:3] == ["demo_0", "demo_1", "demo_2"] and df.demos[-2:] == ["demo_10", "demo_11"]
    assert df.lengths == [3 + k for k in range(12)]
    assert df.instruction.startswith("pick up the black bowl")


def test_official_file_without_quat_recovers_the_same_pose(tmp_path):
    ours = open_demo_file(write_demo_file(tmp_path / "ours.hdf5", with_quat=True))
    official = open_demo_file(write_demo_file(tmp_path / "official.hdf5", with_quat=False))
    for a, b in zip(ours.ee_pose, official.ee_pose):
        np.testing.assert_allclose(a, b, atol=1e-5)  # same sign too: rotvec round-trips the stored quat


def test_image_is_flipped_right_side_up_and_resized(demo_file):
    df = open_demo_file(demo_file)
    with h5py.File(demo_file) as fh:
        raw = fh["data/demo_1/obs/agentview_rgb"][2]
    img = policy_image(df, 1, 2)
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, C.resize_image(raw[::-1]))


@pytest.mark.parametrize("drop,where", [("demo_1/obs/joint_states", "demo_1/obs/joint_states"),
                                        ("demo_2/actions", "demo_2/actions"),
                                        ("demo_0/obs/agentview_rgb", "demo_0/obs/agentview_rgb")])
def test_missing_key_names_file_demo_and_key(tmp_path, drop, where):
    path = write_demo_file(tmp_path / "bad.hdf5", drop=drop)
    with pytest.raises(DatasetError, match=f"bad.hdf5: {where}: missing"):
        open_demo_file(path)


def test_wrong_length_and_missing_instruction(tmp_path):
    path = write_demo_file(tmp_path / "len.hdf5")
    with h5py.File(path, "a") as fh:
        del fh["data/demo_3/obs/ee_pos"]
        fh["data/demo_3/obs/ee_pos"] = np.zeros((5, 3))
    with pytest.raises(DatasetError, match=r"demo_3/obs/ee_pos: shape \(5, 3\)"):
        open_demo_file(path)
    path = write_demo_file(tmp_path / "noinstr.hdf5")
    with h5py.File(path, "a") as fh:
        del fh["data"].attrs["problem_info"]
    with pytest.raises(DatasetError, match="problem_info"):
        open_demo_file(path)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(DatasetError, match="dataset not found"):
        open_demo_file(tmp_path / "nope.hdf5")
    path = write_demo_file(tmp_path / "t.hdf5")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        open_demo_file(path)


def test_chunks_are_padded_with_mask_at_episode_end(demo_file):
    df = open_demo_file(demo_file)
    table = build_frames([df], [(0, 0), (0, 1)], horizon=4)
    T0 = df.lengths[0]
    assert len(table) == T0 + df.lengths[1]
    actions, mask = table.chunk(np.array([0, T0 - 2, T0]))
    np.testing.assert_array_equal(actions[0], df.actions[0][:4])
    np.testing.assert_array_equal(mask[1], [1, 1, 0, 0])
    np.testing.assert_array_equal(actions[1][2:], np.repeat(df.actions[0][-1:], 2, 0))  # repeat last
    np.testing.assert_array_equal(actions[2], df.actions[1][:4])  # next episode starts fresh
    assert table.sample_ids([T0])[0] == "task_demo.hdf5:demo_1:0"


def test_split_is_by_whole_demo_and_deterministic(tmp_path):
    files = [open_demo_file(write_demo_file(tmp_path / f"{i}.hdf5", n_demos=10, length=2)) for i in range(2)]
    train, val = split_demos(files, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert split_demos(files, 0.2, seed=3) == (train, val)
    assert split_demos(files[:1], 0.0, 0)[1] == []


def test_describe_file_summarizes(demo_file):
    from train.dataset import describe_file

    text = describe_file(demo_file)
    assert "demos:        4 (demo_0 .. demo_3)" in text and f"transitions:  {12 + 13 + 14 + 15}" in text
    assert "gripper  -1.000" in text and "pick up the black bowl" in text
