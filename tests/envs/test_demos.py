"""Demo generation: the written file passes the reader, replays open loop to the same end state, resumes
without duplicating or losing demos, and bad files give clear errors.

One real generation run (2 episodes of libero_spatial task 0 in a spawn-started worker, cameras on, fast
render) is shared by every test through a module fixture.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from envs.config import DemoConfig, EnvConfig, RenderConfig
    from envs.demos import generate_demos

    out = tmp_path_factory.mktemp("demos")
    env_cfg = EnvConfig(task=0, reset="soft", render=RenderConfig(fast=True))
    cfg = DemoConfig(episodes=2, workers=1, first_init_state=3)
    report = generate_demos(cfg, env_cfg, out)
    return out, Path(report.path), report, cfg, env_cfg


@pytest.fixture(scope="module")
def replay_env():
    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv

    env = LiberoEnv(cfg=EnvConfig(task=0, reset="soft", render=RenderConfig(cameras=[])))
    yield env
    env.close()


def test_file_passes_the_reader_with_the_official_layout(generated):
    import h5py

    from train.dataset import open_demo_file

    _, path, report, _, _ = generated
    assert report.succeeded == report.num_demos == 2
    df = open_demo_file(path)
    assert df.demos == ["demo_0", "demo_1"] and df.image_shape == (128, 128, 3)
    assert "black bowl" in df.instruction
    with h5py.File(path, "r") as fh:
        data = fh["data"]
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == sum(df.lengths)
        json.loads(data.attrs["env_args"])
        demo = data["demo_0"]
        T = demo.attrs["num_samples"]
        for key in ("actions", "states", "robot_states", "rewards", "dones"):
            assert demo[key].shape[0] == T, key
        assert demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
        assert demo["obs/eye_in_hand_rgb"].shape == (T, 128, 128, 3)
        assert [data[f"demo_{k}"].attrs["init_state_index"] for k in (0, 1)] == [3, 4]
        assert json.loads(demo.attrs["render"])["fast"] is True
        # LIBERO's ee_ori is the axis-angle of the stored quaternion
        from train.dataset import axis_angle_to_quat

        q = axis_angle_to_quat(demo["obs/ee_ori"][()])
        q_ref = demo["obs/ee_quat"][()]
        assert np.allclose(np.abs(np.sum(q * q_ref, axis=1)), 1.0, atol=1e-4)


def test_actions_replay_open_loop_to_the_same_end(generated, replay_env):
    import h5py

    _, path, _, _, _ = generated
    with h5py.File(path, "r") as fh:
        demo = fh["data/demo_1"]
        k = int(demo.attrs["init_state_index"])
        actions, states = demo["actions"][()], demo["states"][()]
    replay_env.reset(init_state=k)
    assert np.allclose(replay_env.get_sim_state(), states[0], atol=1e-9)  # same start (settled)
    for a in actions:
        _, success, _ = replay_env.step(a)
    bowl = replay_env.object_pose("akita_black_bowl_1")
    plate = replay_env.object_pose("plate_1")
    assert success and replay_env.check_success()
    assert np.linalg.norm(bowl[:2] - plate[:2]) < 0.03


def test_rerun_resumes_without_duplicates_or_losses(generated):
    import h5py

    from envs.demos import generate_demos

    out, path, _, cfg, env_cfg = generated
    work = out.parent / "resume"
    shutil.copytree(out, work)
    wpath = work / path.name
    parts = work / f".{path.name[:-len('_demo.hdf5')]}_parts"
    parts.mkdir()
    # an interrupted run: episode 2 finished (its part file was written) but was not assembled yet,
    # episode 3 failed; a stale part of episode 1 (already in the dataset) must not be duplicated
    with h5py.File(wpath, "r") as src:
        for ep, name in ((2, "demo_1"), (1, "demo_1")):
            with h5py.File(parts / f"ep_{ep:06d}.hdf5", "w") as dst:
                src.copy(src[f"data/{name}"], dst, name="demo")
                dst["demo"].attrs["episode"] = ep
    (parts / "ep_000003.json").write_text(json.dumps({"index": 3, "init_state": 6, "seed": 6,
                                                      "success": False, "steps": 220}))
    cfg4 = type(cfg)(**{**cfg.__dict__, "episodes": 4})
    report = generate_demos(cfg4, env_cfg, work)  # nothing left to run: no worker starts
    assert report.tried == 0 and report.skipped == 4 and report.num_demos == 3
    with h5py.File(wpath, "r") as fh:
        episodes = [int(fh[f"data/demo_{k}"].attrs["episode"]) for k in range(3)]
        ledger = json.loads(fh["data"].attrs["vla_flow"])["failed"]
        assert "demo_3" not in fh["data"]
    assert episodes == [0, 1, 2] and ledger == {"3": 220}
    assert not parts.exists()  # parts folded into the dataset


def test_other_settings_in_the_same_folder_are_refused(generated):
    from envs.demos import generate_demos
    from vla_flow.errors import UserError

    out, _, _, cfg, env_cfg = generated
    other = type(cfg)(**{**cfg.__dict__, "layouts": "random"})
    with pytest.raises(UserError, match="other settings"):
        generate_demos(other, env_cfg, out)
    noisy = type(env_cfg)(**{**env_cfg.__dict__, "robot_init_noise": 0.02})  # another start distribution
    with pytest.raises(UserError, match="robot_init_noise"):
        generate_demos(cfg, noisy, out)


def test_truncated_and_incomplete_files_give_clear_errors(generated, tmp_path):
    import h5py

    from train.dataset import DatasetError, open_demo_file
    from vla_flow.cli import main

    _, path, _, _, _ = generated
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DatasetError, match="truncated"):
        open_demo_file(truncated)
    missing = tmp_path / "missing.hdf5"
    shutil.copy(path, missing)
    with h5py.File(missing, "a") as fh:
        del fh["data/demo_1/obs/joint_states"]
    with pytest.raises(DatasetError, match="demo_1/obs/joint_states"):
        open_demo_file(missing)
    assert main(["demos", "--inspect", str(truncated)]) == 2
    assert main(["demos", "--inspect", str(path)]) == 0


def test_an_exception_inside_an_episode_is_an_error_not_a_crash():
    """A simulator/expert exception ends that episode only (in a real worker of the evaluation's pool),
    comes back with its traceback, and is not recorded as a failure (so a rerun retries it); the worker is
    restarted and the next episode runs."""
    from envs import demos
    from envs.config import EnvConfig, RenderConfig

    env_cfg = EnvConfig(suite="libero_spatial", task=0, reset="soft", render=RenderConfig(cameras=[]))
    plans = [demos.EpisodePlan(index=3, init_state=999, seed=999),  # out of range: LiberoEnv.reset raises
             demos.EpisodePlan(index=4, init_state=0, seed=0)]
    results = []
    demos._run_pool(plans, env_cfg, workers=1, record=False, on_result=results.append)
    bad, good = sorted(results, key=lambda r: r["index"])
    assert bad["success"] is False and bad["steps"] == 0
    assert "init_state 999 out of range" in bad["error"] and "Traceback" in bad["error"]
    assert not good.get("error") and good["success"] is True and good["steps"] > 0


def test_table_counts_errors_apart_from_failures():
    from envs.demos import GenerationReport

    rep = GenerationReport(task="t", tried=5, succeeded=3, mean_steps=90.0, max_steps=100, wall_s=10.0, steps=450,
                           num_demos=3, path="p", failures=[(1, 1, 1)], errors=[(4, 4, 4)])
    head, row = rep.table().splitlines()[:2]
    assert head.split()[:5] == ["task", "tried", "ok", "errors", "rate"]
    assert row.split()[1:5] == ["5", "3", "1", "75.0%"]  # 3 of the 4 finished episodes
    assert "errors, rerun to retry (episode, init state, seed): (4, 4, 4)" in rep.table()
