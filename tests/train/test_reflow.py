"""Reflow (train/reflow.py, `vla-flow reflow`): on a toy 2-D two-mode conditional distribution it must
straighten the flow (N=1 lands near the fine solution), and on a real tiny checkpoint it must write a checkpoint
that `load_policy` / `vla-flow eval` run unchanged. Bad input: one-line errors that name the fix."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policy import flow
from policy.modeling import VelocityHead
from train.reflow import ReflowConfig, fit_head, integrate_pairs, reflow
from train.synthetic import write_demo_file
from vla_flow.cli import main as cli_main


@pytest.fixture(autouse=True)
def one_thread():
    """The heads here are tiny: with 2 threads on a shared CPU a step costs ~15x more (thread sync)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ toy: two modes per condition, 2-D actions
def toy_data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """cond one-hot of c in {0, 1} (n, 2); x1 (n, 1, 2): c=0 -> modes (+-2, 0), c=1 -> modes (0, +-2)."""
    c = torch.randint(0, 2, (n,), generator=g)
    sign = torch.randint(0, 2, (n,), generator=g) * 2.0 - 1.0
    centre = torch.stack([torch.where(c == 0, 2 * sign, 0.0), torch.where(c == 1, 2 * sign, 0.0)], dim=-1)
    return torch.nn.functional.one_hot(c, 2).float(), (centre + 0.1 * torch.randn(n, 2, generator=g))[:, None]


def n1_error(head, cond, x0) -> float:
    """Mean squared distance between the N=1 and the fine (midpoint, 32 steps) solutions from the same noise."""
    with torch.no_grad():
        one = flow.integrate(head.sampler(cond, 1), x0, 1)
        fine = flow.integrate(head.sampler(cond, 32, "midpoint"), x0, 32, "midpoint")
    return float((one - fine).pow(2).sum(-1).mean())


def test_reflow_straightens_a_two_mode_toy_flow():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cond, x1 = toy_data(4096, g)
    frame = torch.arange(len(cond))
    head = VelocityHead(1, 2, 2, 16, 64, 2)
    # 1-rectified flow: independent (noise, data) pairs
    fit_head(head, cond, frame, torch.randn(x1.shape, generator=g), x1, steps=600, batch_size=256, lr=3e-3,
             progress=False)
    test_cond, _ = toy_data(1024, g)
    test_x0 = torch.randn(1024, 1, 2, generator=g)
    before = n1_error(head, test_cond, test_x0)
    # 2-rectified flow: pairs from the trained flow, student initialised from the teacher
    x0 = torch.randn(x1.shape, generator=g)
    pairs = integrate_pairs(head, cond, frame, x0, 16, "midpoint", progress=False)
    student = copy.deepcopy(head)
    fit_head(student, cond, frame, x0, pairs, steps=600, batch_size=256, lr=1e-3, progress=False)
    after = n1_error(student, test_cond, test_x0)
    # measured (seeds 0 and 1): 3.23 -> 0.25 and 3.20 -> 0.24
    assert before > 1.0  # N=1 of the 1-rectified flow lands between the modes
    assert after < 0.3 * before, (before, after)
    with torch.no_grad():  # the reflowed flow still samples the two modes of each condition
        ends = flow.integrate(student.sampler(test_cond, 32, "midpoint"), test_x0, 32, "midpoint")[:, 0]
    c = test_cond.argmax(-1)
    along = torch.where(c == 0, ends[:, 0], ends[:, 1]).abs()
    across = torch.where(c == 0, ends[:, 1], ends[:, 0]).abs()
    assert float((along - 2).abs().median()) < 0.3 and float(across.median()) < 0.3


def test_fixed_t_zero_distils_the_one_step_map():
    g = torch.Generator().manual_seed(1)
    cond, _ = toy_data(2048, g)
    x0 = torch.randn(2048, 1, 2, generator=g)
    # a deterministic coupling (as reflow pairs are): the mode is the sign of x0's first coordinate
    c, sign = cond.argmax(-1), torch.sign(x0[:, 0, 0])
    x1 = torch.stack([torch.where(c == 0, 2 * sign, 0.0), torch.where(c == 1, 2 * sign, 0.0)], dim=-1)[:, None]
    head = VelocityHead(1, 2, 2, 16, 64, 2)
    fit_head(head, cond, torch.arange(2048), x0, x1, steps=600, batch_size=256, lr=3e-3, fixed_t=0.0, progress=False)
    with torch.no_grad():
        one = flow.integrate(head.sampler(cond[:512], 1), x0[:512], 1)
    # learnt at t=0 only, N=1 reproduces the paired x1 (|x1|^2 = 4): far better than any mean could
    assert float((one - x1[:512]).pow(2).sum(-1).mean()) < 0.5


# ------------------------------------------------------------------ a real tiny checkpoint
def train_tiny(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(checkpoint, demo file): the tiny config trained a few steps on a synthetic 6-demo file."""
    from train.loop import train
    from vla_flow.experiment import load_experiment

    data = write_demo_file(root / "task_demo.hdf5", n_demos=6, seed=seed)
    exp = load_experiment("configs/tiny.yaml", ["train.max_steps=10", "train.val_every=0"])
    return Path(train(exp, root / "run", [str(data)])["last_checkpoint"]), data


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reflowed(tiny_run, tmp_path_factory):
    ckpt, _ = tiny_run
    out = tmp_path_factory.mktemp("rf") / "reflow"
    cfg = ReflowConfig(samples_per_frame=2, pair_steps=4, steps=20, distill_steps=5, batch_size=16)
    return out, reflow(ckpt, None, out, cfg, progress=False)  # data found through the run folder's run.json


def test_reflowed_checkpoint_loads_and_predicts_like_any_checkpoint(tiny_run, reflowed):
    from policy.checkpoint import load_policy

    ckpt, _ = tiny_run
    out, info = reflowed
    teacher, student = load_policy(ckpt), load_policy(out / "checkpoints" / "last.pt")
    assert student.cfg == teacher.cfg
    assert info["pairs"] == 2 * info["train_frames"] and info["pair_nfe"] == 8 and info["data_matches_teacher"]
    assert set(info["seconds"]) >= {"pairs", "train", "distill", "total"}
    assert json.loads((out / "run.json").read_text())["data"] == info["data"]
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,stage,loss" and len(lines) == 1 + 20 + 5
    ts, ss = teacher.state_dict(), student.state_dict()
    assert any(not torch.equal(ts[k], ss[k]) for k in ts if k.startswith("head."))  # the head was retrained
    assert all(torch.equal(ts[k], ss[k]) for k in ts if not k.startswith("head."))  # nothing else changed
    rng = np.random.default_rng(0)
    out_actions = student.predict(rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8), "pick", 
                                  rng.normal(size=(2, 7)), rng.normal(size=(2, 7)), num_flow_steps=1)
    assert out_actions.shape == (2, 4, 7) and np.isfinite(out_actions).all()


@pytest.mark.sim
def test_reflowed_checkpoint_runs_in_vla_flow_eval(reflowed, tmp_path):
    import pandas as pd

    out, _ = reflowed
    code = cli_main(["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--out", str(tmp_path / "ev"),
                     "--tasks", "0", "--init-states", "0", "--flow-steps", "1", "--max-steps", "3", "--workers", "1",
                     "--videos", "none", "--no-progress", "eval.solver=midpoint", "env.reset=soft"])
    assert code == 0
    df = pd.read_parquet(tmp_path / "ev" / "episodes.parquet")
    assert len(df) == 1 and df.status.iloc[0] == "ok" and df.steps.iloc[0] == 3


def test_bad_input_exits_2_with_the_fix(tiny_run, tmp_path, capsys):
    from tests.eval.test_cli import make_checkpoint

    ckpt, data = tiny_run
    cases = [
        (["--data", str(tmp_path / "missing.hdf5")], "is not accessible: no such file; pass --data"),
        (["--pair-solver", "rk4"], "solver: 'rk4' does not exist"),
        (["--pair-steps", "0"], "pair_steps: 0; expected a positive integer"),
        (["--data", str(write_demo_file(tmp_path / "other_demo.hdf5", n_demos=6, seed=5, action_offset=0.3))],
         "does not match"),
    ]
    for flags, message in cases:
        assert cli_main(["reflow", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress"] + flags) == 2
        err = capsys.readouterr().err  # (the random-init CLIP banner and progress bars may come first)
        assert err.strip().splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err, err
    # the mismatch was found before the feature cache of the other file was built
    assert not (tmp_path / "other_demo.features").exists()
    # other demos of the teacher's tasks are allowed on request, and recorded as such
    other = str(tmp_path / "other_demo.hdf5")
    assert cli_main(["reflow", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ok"), "--no-progress", "--data",
                     other, "--other-data", "--samples-per-frame", "1", "--pair-steps", "2", "--steps", "2"]) == 0
    assert f"--data is not {ckpt}'s training data (--other-data)" in capsys.readouterr().err
    info = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert info["data_matches_teacher"] is False and info["data"] == [other]
    # a checkpoint that does not record its training run (hand-made), and one whose run folder is gone
    bare = make_checkpoint(tmp_path / "bare.pt")
    assert cli_main(["reflow", "--checkpoint", str(bare), "--out", str(tmp_path / "o")]) == 2
    assert "holds no training config" in capsys.readouterr().err
    moved = tmp_path / "moved.pt"
    moved.write_bytes(Path(ckpt).read_bytes())
    assert cli_main(["reflow", "--checkpoint", str(moved), "--out", str(tmp_path / "o")]) == 2
    assert "its training data is unknown" in capsys.readouterr().err


def test_reflow_settings_come_by_the_one_config_route(tmp_path):
    """--config (its reflow: section) < KEY=VALUE overrides < flags; a bad or stray key names the fix."""
    import yaml

    from train.reflow_cli import reflow_config
    from vla_flow.config import ConfigError

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "train": {"lr": 1.0}, "reflow": {"steps": 7, "lr": 0.5}}))
    cfg = reflow_config(str(path), ["reflow.lr=0.25", "reflow.pair_solver=euler"], {"steps": 9, "seed": None})
    assert (cfg.steps, cfg.lr, cfg.pair_solver, cfg.seed) == (9, 0.25, "euler", 0)
    assert reflow_config(None, [], {"distill_steps": 3}).distill_steps == 3
    with pytest.raises(ConfigError, match="unknown config key 'reflow.stepz'.*Did you mean 'steps'"):
        reflow_config(str(path), ["reflow.stepz=3"])
    with pytest.raises(ConfigError, match="reflow settings are reflow.KEY=VALUE"):
        reflow_config(None, ["steps=3"])
    with pytest.raises(ConfigError, match="pair_steps: 0; expected a positive integer"):
        reflow_config(None, [], {"pair_steps": 0})


def test_a_stopped_reflow_reuses_its_pairs_and_other_inputs_do_not(tiny_run, tmp_path, capsys):
    """A reflow stopped after its pairs (no last.pt yet) is rerun: the pairs are loaded, not integrated again,
    and the student is the same; pairs of other settings (another seed) are not reused."""
    from policy.checkpoint import load_policy

    ckpt, _ = tiny_run
    out = tmp_path / "reflow"
    cfg = ReflowConfig(samples_per_frame=2, pair_steps=4, steps=10, batch_size=16)
    first = reflow(ckpt, None, out, cfg, progress=False)
    assert first["pairs_reused"] is False and (out / "pairs.pt").is_file()
    heads = [load_policy(out / "checkpoints" / "last.pt").head.state_dict()]
    (out / "checkpoints" / "last.pt").unlink()  # as if stopped during training
    again = reflow(ckpt, None, out, cfg, progress=False)
    assert again["pairs_reused"] is True
    heads.append(load_policy(out / "checkpoints" / "last.pt").head.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    (out / "checkpoints" / "last.pt").unlink()
    other = reflow(ckpt, None, out, ReflowConfig(samples_per_frame=2, pair_steps=4, steps=10, batch_size=16, seed=1),
                   progress=False)
    assert other["pairs_reused"] is False and "holds pairs of other inputs" in capsys.readouterr().err


def test_pairs_key_follows_the_frames_teacher_and_settings_not_the_thread_count(tiny_run):
    """The key hashes the frames' inputs and the teacher's weights, never cond's float bits (which moved with
    the torch thread count, so a rerun with another --threads integrated its pairs again)."""
    import hashlib

    from policy.checkpoint import load_policy
    from train.reflow import frame_conditions, load_checkpoint_data, pairs_key

    ckpt, _ = tiny_run
    _, data, _, _ = load_checkpoint_data(ckpt, None)
    teacher = load_policy(ckpt)
    assert any(k.startswith("encoder.") for k in teacher.state_dict())  # the prefix the key skips exists
    cfg = ReflowConfig(samples_per_frame=2, pair_steps=4)

    def key(policy, rows=None, threads=1, settings=cfg):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            h = hashlib.sha256()
            frame_conditions(policy, data, data.train, rows, hasher=h)
            return pairs_key(policy, h.hexdigest(), settings)
        finally:
            torch.set_num_threads(before)

    base = key(teacher)
    assert key(teacher, threads=2) == base
    assert key(teacher, rows=np.arange(len(data.train) - 1)) != base  # other frames
    assert key(teacher, settings=ReflowConfig(samples_per_frame=2, pair_steps=4, seed=1)) != base
    assert key(teacher, settings=ReflowConfig(samples_per_frame=2, pair_steps=4, noise_scale=0)) != base
    with torch.no_grad():  # the conditioning path counts, not only the head
        next(p for n, p in teacher.named_parameters() if not n.startswith(("encoder.", "head."))).add_(1e-3)
    assert key(teacher) != base


def test_reflow_from_x0_zero_pairs_each_frame_once_and_samples_from_zero(tiny_run, tmp_path, capsys):
    """reflow.noise_scale 0: one pair per frame (every draw would be x0 = 0), x1 the teacher's fine solution
    from 0, the student saved with policy.noise_scale 0 (eval starts where it was trained) and trained on
    exactly those pairs."""
    from policy.checkpoint import load_policy
    from train.reflow import frame_conditions, load_checkpoint_data

    ckpt, _ = tiny_run
    out = tmp_path / "reflow0"
    code = cli_main(["reflow", "--checkpoint", str(ckpt), "--out", str(out), "--samples-per-frame", "4",
                     "--pair-steps", "4", "--steps", "300", "--batch-size", "32", "--lr", "3e-3", "--noise-scale", "0",
                     "--no-progress"])
    assert code == 0 and "one draw per frame instead of 4" in capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["pairs"] == info["train_frames"] and info["noise_scale"] == 0.0
    pairs = torch.load(out / "pairs.pt", weights_only=True)["x1"]
    teacher, student = load_policy(ckpt), load_policy(out / "checkpoints" / "last.pt")
    assert student.cfg.noise_scale == 0.0 and teacher.cfg.noise_scale == 1.0
    _, data, _, _ = load_checkpoint_data(ckpt, None)
    cond, _ = frame_conditions(teacher, data, data.train)
    zero = torch.zeros_like(pairs)
    with torch.no_grad():
        fine = flow.integrate(teacher.head.sampler(cond, 4, "midpoint"), zero, 4, "midpoint")
        one_t = flow.integrate(teacher.head.sampler(cond, 1), zero, 1)
        one_s = flow.integrate(student.head.sampler(cond, 1), zero, 1)
    assert torch.allclose(pairs, fine, atol=1e-5)  # the pairs are the teacher's path from 0
    before, after = float((one_t - fine).pow(2).mean()), float((one_s - fine).pow(2).mean())
    assert after < 0.5 * before, (before, after)  # the student's one step from 0 learnt the fine solution
