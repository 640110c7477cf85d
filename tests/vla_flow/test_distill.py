"""`vla-flow distill-onpolicy`: conditions recorded in the student's own rollouts (real simulator), the
teacher's labels on them, the resume, and the checks that run before any simulator."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tests.eval.test_cli import make_checkpoint, no_workers  # noqa: F401 (a fixture)
from vla_flow.cli import main

os.environ.setdefault("MUJOCO_GL", "egl")


def test_sample_frames_weights_the_onpolicy_rows():
    from vla_flow.distill import sample_frames

    idx = sample_frames(100, 10, 0.5)  # each of the 10 on-policy rows 10 times: half the samples
    assert (idx < 100).sum() == 100 and (idx >= 100).sum() == 100
    assert sorted(set(idx[idx >= 100].tolist())) == list(range(100, 110))
    idx = sample_frames(100, 10, 0.8)
    assert int((idx >= 100).sum()) == 400 and len(idx) == 500
    assert sample_frames(100, 10, 0.0).tolist() == list(range(100))  # demo rows only
    assert sample_frames(0, 7, 0.5).tolist() == list(range(7))  # no demos: every state once


def test_cond_recorder_returns_each_rows_condition(tmp_path):
    """Rows of a padded batch (3 rows, batch 2: one full call, one padded) get the cond of their own input."""
    from eval.rollout import PolicyCaller
    from policy.checkpoint import load_policy
    from vla_flow.distill import CondRecorder

    policy = load_policy(make_checkpoint(tmp_path / "tiny.pt"))
    rng = np.random.default_rng(0)
    rows = [{"image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "joints": rng.standard_normal(7),
             "ee_pose": rng.standard_normal(7)} for _ in range(3)]
    texts = ["put the bowl on the plate", "open the drawer", "put the bowl on the plate"]
    noise = rng.standard_normal((3, policy.cfg.chunk_size, 7)).astype(np.float32)
    rec = CondRecorder(PolicyCaller(policy, batch_size=2))
    actions, timings = rec(rows, texts, noise, 2)
    assert actions.shape == (3, policy.cfg.chunk_size, 7) and len(timings) == 3
    assert all(t["cond"].ndim == 1 and t["cond"].shape == timings[0]["cond"].shape for t in timings)
    assert not np.allclose(timings[0]["cond"], timings[1]["cond"])  # other instruction -> other cond
    # the same row alone gives the same cond (to float32 rounding: other batch shape)
    _, alone = rec(rows[2:], texts[2:], noise[2:], 2)
    np.testing.assert_allclose(alone[0]["cond"], timings[2]["cond"], atol=1e-5)


@pytest.mark.sim
@pytest.mark.slow
def test_distill_onpolicy_records_states_labels_them_and_resumes(tmp_path, capsys):
    from policy.checkpoint import load_policy
    from policy import flow
    from vla_flow.dagger import load_rollout

    from policy.checkpoint import save_checkpoint

    teacher = make_checkpoint(tmp_path / "teacher.pt", chunk_size=4, n_action_steps=4)
    student = tmp_path / "student.pt"  # the teacher's weights, sampling from x0 = 0 (as `reflow --noise-scale 0`)
    p = load_policy(teacher)
    p.cfg.noise_scale = 0.0
    save_checkpoint(student, p)
    out = tmp_path / "d"
    argv = ["distill-onpolicy", "--student", str(student), "--teacher", str(teacher), "--config", "quickstart_tiny",
            "--out", str(out), "--rollouts", "1", "--workers", "1", "--steps", "300", "eval.max_steps=24",
            "reflow.lr=0.003", "reflow.pair_steps=8"]
    assert main(argv) == 0
    roll = load_rollout(out / "round_1" / "rollouts" / "t0_000.npz")
    assert roll["status"] == "ok" and roll["steps"] == 24
    assert roll["cond"].shape[0] == 6  # one state per policy call: 24 steps / 4 actions per chunk
    summary = json.loads((out / "distill.json").read_text())
    assert summary["rounds"][0]["states_total"] == 6 and summary["noise_scale"] == 0.0

    # the student's one step from 0 moved to the teacher's fine solution from 0 on exactly those states
    t_pol, s_pol = load_policy(teacher), load_policy(out / "checkpoints" / "last.pt")
    assert s_pol.cfg.noise_scale == 0.0
    cond = torch.from_numpy(roll["cond"])
    x0 = torch.zeros((6, 4, 7))
    with torch.no_grad():
        label = flow.integrate(t_pol.head.sampler(cond, 8, "midpoint"), x0, 8, "midpoint")
        before = (flow.integrate(t_pol.head.sampler(cond, 1), x0, 1) - label).pow(2).mean()
        after = (flow.integrate(s_pol.head.sampler(cond, 1), x0, 1) - label).pow(2).mean()
    assert after < 0.1 * before, (float(before), float(after))
    for name, w in t_pol.state_dict().items():  # only the head was trained
        assert torch.equal(w, s_pol.state_dict()[name]) != name.startswith("head."), name
    capsys.readouterr()

    ckpt = out / "round_1" / "checkpoints" / "last.pt"
    before_mtime = ckpt.stat().st_mtime_ns
    assert main(argv) == 0  # a rerun finds the rollout and the round's student done
    assert "continuing from it" in capsys.readouterr().err and ckpt.stat().st_mtime_ns == before_mtime


@pytest.mark.parametrize("flags, message", [
    (["--rollouts", "0"], "--rollouts 0: must be >= 1"),
    (["--onpolicy-weight", "1.5"], "--onpolicy-weight 1.5: must be in [0, 1]"),
    (["--teacher", "/no/such.pt"], "--teacher /no/such.pt: no such checkpoint"),
    (["--tasks", "12"], "unknown task index [12]"),
])
def test_bad_arguments_exit_2_before_any_simulator(flags, message, tmp_path, capsys, no_workers):
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    argv = ["distill-onpolicy", "--student", str(ckpt), "--teacher", str(ckpt), "--config", "quickstart_tiny",
            "--out", str(tmp_path / "d"), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_student_of_another_teacher_is_refused(tmp_path, capsys, no_workers):
    """The recorded cond is the teacher's only when the conditioning weights are the same."""
    student = make_checkpoint(tmp_path / "student.pt")
    other = tmp_path / "other.pt"
    torch.manual_seed(5)
    from policy.checkpoint import load_policy, save_checkpoint

    p = load_policy(student)
    with torch.no_grad():
        next(q for n, q in p.named_parameters() if not n.startswith(("head.", "encoder."))).add_(0.1)
    save_checkpoint(other, p)
    argv = ["distill-onpolicy", "--student", str(student), "--teacher", str(other), "--config", "quickstart_tiny",
            "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    assert "its conditioning" in capsys.readouterr().err and not (tmp_path / "d").exists()
