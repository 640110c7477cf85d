"""`vla-flow eval` argument errors exit 2 with a clear message before any simulator worker starts."""
import numpy as np
import pytest

from vla_flow.cli import main


def make_checkpoint(path, action_dim: int = 7, chunk_size: int = 8, n_action_steps: int = 5):
    """A tiny random-weight policy (open_clip 'tiny' towers, random init) saved with policy.checkpoint."""
    import torch

    from policy.checkpoint import save_checkpoint
    from policy.configuration import PolicyConfig, VisionConfig
    from policy.modeling import FlowPolicy
    from policy.normalize import compute_stats

    cfg = PolicyConfig(vision=VisionConfig(model="tiny", pretrained="none"), action_dim=action_dim,
                       gripper_action_index=action_dim - 1, chunk_size=chunk_size, n_action_steps=n_action_steps,
                       embed_dim=64, head_hidden_dim=64, head_layers=2, time_embed_dim=16, attn_pool_heads=4)
    rng = np.random.default_rng(0)
    stats = compute_stats(rng.normal(0, 0.3, (64, action_dim)).clip(-1, 1), rng.normal(size=(64, 7)),
                          rng.normal(size=(64, 7)))
    torch.manual_seed(0)
    save_checkpoint(path, FlowPolicy(cfg, stats))
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return make_checkpoint(d / "tiny.pt"), make_checkpoint(d / "six.pt", action_dim=6)


@pytest.fixture
def no_workers(monkeypatch):
    """Any attempt to start a simulator worker fails the test."""
    import envs.workers

    def refuse(*a, **k):
        raise AssertionError("a simulator worker was started")

    monkeypatch.setattr(envs.workers.EnvWorker, "__init__", refuse)


@pytest.mark.parametrize("flags, message", [
    (["--tasks", "12"], "unknown task index [12]"),
    (["--flow-steps", "0"], "every N must be > 0"),
    (["--flow-steps", "1,-2"], "every N must be > 0"),
    (["--init-states", "0-60"], "out of range"),
    (["--videos", "some"], "videos"),
    (["--suite", "libero_nope"], "suite"),
])
def test_bad_arguments_exit_2_before_any_env(flags, message, ckpts, tmp_path, capsys, no_workers):
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(ckpts[0]), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "run.json").exists()


@pytest.mark.parametrize("override, message", [
    ("eval.noise_scale=-1", "eval: noise_scale: -1.0; expected a number in [0, 10]"),
    ("eval.noise_scale=abc", "eval.noise_scale: expected a number, got 'abc' (or null)"),
    ("eval.solver=rk4", "solver: 'rk4' does not exist"),
])
def test_bad_settings_leave_no_out_folder(override, message, ckpts, tmp_path, capsys, no_workers):
    out = tmp_path / "out"
    assert main(["eval", "--checkpoint", str(ckpts[0]), "--out", str(out), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()  # the settings are checked before --out is created and locked


def test_missing_checkpoint_and_wrong_action_size(ckpts, tmp_path, capsys, no_workers):
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpts[1]), "--out", str(tmp_path / "o")]) == 2
    assert "predicts 6-D actions" in capsys.readouterr().err


@pytest.mark.parametrize("record", [
    {"teacher": "/x/last.pt", "pairs": 10, "data": ["d.hdf5"]},  # a reflow folder
    {"total_steps": 100, "train_frames": 10, "data": ["d.hdf5"]},  # a training folder
])
def test_an_out_folder_of_another_command_is_refused_and_kept(record, ckpts, tmp_path, capsys, no_workers):
    """`--out` pointed at a reflow or training run folder used to merge the eval record into its run.json
    (the reflow's record was lost that way); now: one error line, exit 2, the folder untouched."""
    import json

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps(record))
    assert main(["eval", "--checkpoint", str(ckpts[0]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "pick a new --out folder" in err and "Traceback" not in err
    assert json.loads((out / "run.json").read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]
