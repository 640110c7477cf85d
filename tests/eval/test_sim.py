"""Closed-loop evaluation in the real LIBERO simulator with a tiny random-weight policy and 6-step episodes.

One module-scoped 2-worker run feeds several checks; a 1-worker run (with every camera rendered) must
give bitwise the same action traces (worker count and render skipping change nothing). Faults are
injected through the worker test hook. Soft resets keep each episode start to ~1 s.
"""
import json
import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import yaml

from envs.config import EnvConfig
from envs.workers import FaultInjection
from eval.config import EvalConfig
from eval.evaluate import evaluate
from tests.eval.test_cli import make_checkpoint

pytestmark = pytest.mark.sim
ENV = EnvConfig(reset="soft")
STEPS = 6


def small(**kw) -> EvalConfig:
    base = dict(tasks="0", init_states="0-1", flow_steps=[1, 2], max_steps=STEPS, workers=2, batch_size=2,
                videos="all", save_actions=True, call_timeout_s=240)
    return EvalConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def run2(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("run2")
    return out, evaluate(small(), ckpt, out, env_cfg=ENV, progress=False)


def actions(out):
    return {p.name: np.load(p) for p in sorted((out / "actions").glob("*.npy"))}


def test_rows_timings_and_metadata(run2):
    out, df = run2
    assert len(df) == 4 and set(df.status) == {"ok"}
    assert sorted(zip(df.init_state, df.flow_steps)) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert (df.steps == STEPS).all() and (df.policy_calls == 2).all()  # chunk of 5: queries at steps 0, 5
    assert (df.policy_ms_p50 > 0).all() and (df.env_ms_mean > 0).all() and (df.encode_ms_mean > 0).all()
    meta = yaml.safe_load((out / "run.json").read_text())
    assert meta["encoder"]["random_init"] is True and meta["max_steps"] == STEPS
    from tests.eval.kernels import gemm_row_invariant

    # verified where this machine's kernels are row-invariant; elsewhere the run says so (and falls back)
    assert meta["inference"] == {"batch_size": 2, "batch_invariant_verified": gemm_row_invariant(),
                                 "solver": "euler", "time_grid": "uniform",
                                 "noise_scale": 1.0}  # what ran: the checkpoint's own
    assert meta["versions"]["mujoco"] and len(meta["checkpoint_sha256"]) == 64
    first = actions(out)["t00_init00_N1_seed0.npy"]
    assert first.shape == (STEPS, 7) and np.abs(first).max() <= 1.0


def test_noise_scale_override_reaches_the_policy_and_is_recorded(ckpt, tmp_path):
    # eval.noise_scale=0: every call integrates from x0 = 0, so two seeds (two noise streams) act alike; with
    # the override lost, the seeds' different noise gives different actions and this fails
    out = tmp_path / "zero"
    df = evaluate(small(init_states="0", flow_steps=[1], seeds=[0, 1], workers=1, batch_size=1, videos="none",
                        noise_scale=0), ckpt, out, env_cfg=ENV, progress=False)
    assert len(df) == 2 and set(df.status) == {"ok"}
    acts = actions(out)
    assert np.array_equal(acts["t00_init00_N1_seed0.npy"], acts["t00_init00_N1_seed1.npy"])
    assert yaml.safe_load((out / "run.json").read_text())["inference"]["noise_scale"] == 0.0


def test_home_arm_homes_before_the_first_call_and_is_part_of_the_run(ckpt, tmp_path):
    """eval.home_arm: the first actions are the homing controller's (computed here from the same start), they
    count as steps, the policy takes over after them, and a folder never mixes runs with and without it."""
    from envs.homing import MAX_HOME_STEPS, home_action, rest_ee_pose
    from envs.libero import LiberoEnv
    from vla_flow.errors import UserError

    out = tmp_path / "home"
    cfg = small(init_states="0", flow_steps=[1], workers=1, batch_size=1, videos="none", max_steps=20,
                home_arm=True)
    df = evaluate(cfg, ckpt, out, env_cfg=ENV, progress=False)
    row = df.iloc[0]
    assert row.status == "ok" and row.steps == 20 and 1 <= row.home_steps <= MAX_HOME_STEPS
    assert row.policy_calls == -(-(20 - row.home_steps) // 5)  # chunks of 5 after the homing steps
    acts = actions(out)["t00_init00_N1_seed0.npy"]
    env = LiberoEnv(cfg=EnvConfig(suite="libero_spatial", task=0, reset="soft"))
    try:
        obs = env.policy_inputs(env.reset(init_state=0))
        rest = rest_ee_pose(env)
        for i in range(int(row.home_steps)):
            a = home_action(obs["ee_pose"], rest)
            np.testing.assert_allclose(acts[i], a, atol=1e-6)
            obs = env.policy_inputs(env.step(a)[0])
        assert home_action(obs["ee_pose"], rest) is None or row.home_steps == MAX_HOME_STEPS
    finally:
        env.close()
    assert json.loads((out / "run.json").read_text())["home_arm"] is True
    with pytest.raises(UserError, match="home_arm=True"):
        evaluate(small(init_states="0-1", flow_steps=[1], workers=1, batch_size=1, videos="none", max_steps=20),
                 ckpt, out, env_cfg=ENV, progress=False)
    plain = evaluate(small(init_states="0", flow_steps=[1], workers=1, batch_size=1, videos="none", max_steps=20),
                     ckpt, tmp_path / "plain", env_cfg=ENV, progress=False)
    assert plain.home_steps.tolist() == [0]


def test_videos_have_one_frame_per_step_and_are_right_side_up(run2):
    out, df = run2
    assert (df.video != "").all()
    video = iio.imread(out / df.video.iloc[0])
    assert video.shape[0] == STEPS + 1  # the frame after reset + one per step
    image = video[0, :224].astype(float)
    # LIBERO agentview right side up: the table (bright wood) fills the bottom, the wall the top.
    assert image[-60:].mean() > image[:40].mean() + 15


def test_same_actions_with_one_worker_and_all_renders(run2, ckpt, tmp_path):
    out2, df2 = run2
    df1 = evaluate(small(workers=1, videos="none", skip_renders=False), ckpt, tmp_path, env_cfg=ENV,
                   progress=False)
    a1, a2 = actions(tmp_path), actions(out2)
    assert a1.keys() == a2.keys() and len(a1) == 4
    for name in a1:
        assert np.array_equal(a1[name], a2[name]), name
    cols = ["init_state", "flow_steps", "success", "steps"]
    assert df1[cols].equals(df2[cols])


def test_env_exception_is_recorded_and_dead_worker_is_retried(ckpt, tmp_path, capsys):
    faults = (FaultInjection("raise", at_step=2, attempts=(0, 1, 2), init_states=(0,)),
              FaultInjection("exit", at_step=3, attempts=(0,), init_states=(1,)))
    df = evaluate(small(flow_steps=[1], videos="none", max_error_fraction=1.0), ckpt, tmp_path, env_cfg=ENV,
                  faults=faults, progress=False)
    by_init = df.set_index("init_state")
    assert by_init.loc[0, "status"] == "error" and "injected fault at step 2" in by_init.loc[0, "error"]
    assert by_init.loc[1, "status"] == "ok" and by_init.loc[1, "steps"] == STEPS  # retried on a new worker
    # the retry is visible: in the table (attempts, last_worker_error) and in the log
    assert by_init.loc[1, "attempts"] == 2 and by_init.loc[1, "last_worker_error"].startswith("died: ")
    assert by_init.loc[0, "attempts"] == 1 and by_init.loc[0, "last_worker_error"].startswith("error: ")
    assert "retrying episode task 0 init 1 N=1 seed 0 on a fresh worker (attempt 2 of 3)" in capsys.readouterr().err
    on_disk = pd.read_parquet(tmp_path / "episodes.parquet").set_index("init_state")
    assert on_disk.loc[1, "attempts"] == 2


def test_resume_after_sigkill_keeps_finished_rows_and_runs_the_rest(ckpt, tmp_path):
    """A two-task (suite-style) run killed mid-way and rerun: every (task, init state) once, none rerun."""
    out = tmp_path / "out"
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(yaml.safe_dump({"env": {"reset": "soft"}, "eval": {"call_timeout_s": 240}}))
    cmd = [sys.executable, "-m", "vla_flow", "eval", "--checkpoint", str(ckpt), "--out", str(out), "--config",
           str(cfg_file), "--tasks", "0,1", "--init-states", "0-1", "--flow-steps", "1", "--max-steps", str(STEPS),
           "--workers", "1", "--videos", "none", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = out / "episodes.parquet"
    deadline = time.time() + 240
    while time.time() < deadline and not (table.exists() and len(pd.read_parquet(table)) >= 1):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = pd.read_parquet(table)
    assert 1 <= len(before) < 4
    # the killed call's wall time up to its last finished episode is kept (the throughput denominator)
    killed_s = json.loads((out / "run.json").read_text()).get("elapsed_s") or 0.0
    assert killed_s >= before.wall_s.max() * 0.5
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=400)
    assert json.loads((out / "run.json").read_text())["elapsed_s"] > killed_s  # summed over the resume
    after = pd.read_parquet(table)
    keys = list(zip(after.task_index, after.init_state))
    assert sorted(keys) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # no duplicates, nothing lost
    kept = after.set_index(["task_index", "init_state"]).loc[list(zip(before.task_index, before.init_state)), "wall_s"]
    assert np.array_equal(kept.to_numpy(), before.wall_s.to_numpy())  # finished episodes were not rerun


def test_two_torchrun_ranks_give_the_same_table_and_actions(run2, ckpt, tmp_path):
    out2, df2 = run2
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(yaml.safe_dump({"env": {"reset": "soft"}, "eval": {"call_timeout_s": 240}}))
    out = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vla_flow", "eval", "--checkpoint", str(ckpt), "--out", str(out), "--config", str(cfg_file),
           "--tasks", "0", "--init-states", "0-1", "--flow-steps", "1,2", "--max-steps", str(STEPS),
           "--workers", "1", "--batch-size", "2", "--videos", "none", "--save-actions", "--no-progress"]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=400)
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}; its stderr ends:\n{proc.stderr[-4000:]}"
    merged = pd.read_parquet(out / "episodes.parquet")
    assert not (out / "shards").exists()  # rank 0 merged the shards
    cols = ["init_state", "flow_steps", "success", "steps", "policy_calls"]
    assert merged[cols].equals(df2[cols])
    a_ranks, a_single = actions(out), actions(out2)
    assert a_ranks.keys() == a_single.keys()
    assert all(np.array_equal(a_ranks[k], a_single[k]) for k in a_ranks)
