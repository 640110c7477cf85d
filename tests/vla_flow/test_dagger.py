"""`vla-flow dagger` on the real simulator: policy rollouts with snapshots, expert takeovers, resume."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.eval.test_cli import make_checkpoint
from vla_flow.cli import main

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.mark.sim
@pytest.mark.slow
def test_dagger_round_takes_over_from_the_policys_states_and_resumes(tmp_path, capsys):
    import h5py

    from vla_flow.dagger import load_rollout

    ckpt = make_checkpoint(tmp_path / "tiny.pt", chunk_size=4, n_action_steps=4)
    argv = ["dagger", "--checkpoint", str(ckpt), "--config", "quickstart_tiny", "--out", str(tmp_path / "d"),
            "--rollouts", "1", "--per-failure", "1", "--workers", "1", "eval.max_steps=24"]
    assert main(argv) == 0
    roll = load_rollout(tmp_path / "d" / "rollouts" / "r_0000.npz")
    assert roll["status"] == "ok" and not roll["success"] and roll["steps"] == 24
    np.testing.assert_array_equal(roll["step"], np.arange(0, 25, 4))  # a snapshot at every query
    [path] = (tmp_path / "d" / "demos").glob("*_demo.hdf5")
    with h5py.File(path, "r") as fh:
        demos = list(fh["data"].values())
        assert len(demos) == 1 and json.loads(fh["data"].attrs["vla_flow"])["layouts"] == "takeover"
        demo = demos[0]
        assert demo.attrs["start_step"] == 20 and demo.attrs["seed"] == roll["seed"]  # the last query
        j = int(np.flatnonzero(roll["step"] == 20)[0])
        # the demo starts exactly at the policy's state, and the expert got the bowl onto the plate
        np.testing.assert_array_equal(demo["states"][0], roll["state"][j])
        assert demo.attrs["success"] and demo["actions"].shape[0] < 220
    summary = json.loads((tmp_path / "d" / "dagger.json").read_text())
    assert summary["takeovers"] == 1 and summary["num_demos"] == 1 and summary["policy_success"] == 0
    capsys.readouterr()

    before = path.stat().st_mtime_ns
    assert main(argv) == 0  # a rerun finds everything done
    assert "1 episodes were already done" in capsys.readouterr().out and path.stat().st_mtime_ns == before
    assert main(argv[:-3] + ["--per-failure", "2"] + argv[-3:]) == 2  # other takeover settings, same folder
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--rollouts", "0"], "--rollouts 0: must be >= 1"),
    (["--per-failure", "-1"], "--per-failure -1: must be >= 0"),
    (["--checkpoint", "/no/such.pt"], "checkpoint /no/such.pt not found"),
])
def test_bad_arguments_exit_2_before_any_simulator(flags, message, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    argv = ["dagger", "--checkpoint", str(ckpt), "--out", str(tmp_path / "d"), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
