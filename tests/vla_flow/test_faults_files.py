"""Fault injection on the files a user hands us: checkpoints with NaN weights, unreadable checkpoints, damaged
demo files and bad config values. Real CLI processes and real files, as in test_faults.py (whose helpers
these tests share); each case ends with exit 2 and one ``error:`` line naming the file and the fix."""
from __future__ import annotations

import numpy as np
import pytest  # noqa: F401 (fixtures)
import torch

from tests.vla_flow.test_faults import (assert_user_error, cli, eval_args, files, snapshot,  # noqa: F401
                                          train_args)
from train.synthetic import write_demo_file


@pytest.fixture(scope="module")
def nan_ckpt(files):
    raw = torch.load(files["ckpt"], map_location="cpu", weights_only=True)
    key = next(k for k, v in raw["state_dict"].items() if v.is_floating_point() and not k.startswith("normalizer"))
    raw["state_dict"][key].view(-1)[0] = float("nan")
    path = files["dir"] / "nan.pt"
    torch.save(raw, path)
    return path, key


def predict_args(files, ckpt) -> list:
    from PIL import Image

    img = files["dir"] / "obs.png"
    if not img.exists():
        Image.fromarray(np.zeros((224, 224, 3), np.uint8)).save(img)
    return ["predict", "--checkpoint", ckpt, "--image", img, "--instruction", "put the bowl on the plate",
            "--proprio", *[0] * 7, "--ee-pose", 0, 0, 0, 0, 0, 0, 1]


def test_nan_weight_is_refused_by_predict_and_eval(files, nan_ckpt, tmp_path):
    path, key = nan_ckpt
    assert_user_error(cli(*predict_args(files, path)), str(path), key, "NaN or inf")
    assert_user_error(cli(*eval_args(files, tmp_path / "ev")[:2], path, *eval_args(files, tmp_path / "ev")[3:]),
                      str(path), "NaN or inf")
    assert not (tmp_path / "ev" / "episodes.parquet").exists()


def test_non_finite_outputs_never_leave_predict(files):
    """One check (policy/guard.py) behind every entry point: predict, evaluation and DAgger call predict."""
    from policy.checkpoint import load_policy
    from policy.guard import PolicyOutputError

    policy = load_policy(files["ckpt"])
    with torch.no_grad():
        next(p for p in policy.head.parameters()).fill_(float("nan"))
    with pytest.raises(PolicyOutputError, match=f"checkpoint {files['ckpt']} produced .*NaN"):
        policy.predict(np.zeros((1, 224, 224, 3), np.uint8), ["x"], np.zeros((1, 7), np.float32),
                       np.zeros((1, 7), np.float32), num_flow_steps=2)


def test_unreadable_checkpoints_say_why_and_what_to_use(files, tmp_path):
    text, empty = tmp_path / "notes.pt", tmp_path / "empty.pt"
    text.write_text("these are my notes, not a checkpoint\n")
    empty.write_bytes(b"")
    assert_user_error(cli(*predict_args(files, text)), str(text), "not a PyTorch checkpoint", "renamed")
    assert_user_error(cli(*predict_args(files, empty)), str(empty), "empty (0 bytes)")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    step = run / "checkpoints" / "step_2.pt"
    step.write_bytes(files["ckpt"].read_bytes())
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(files["ckpt"].read_bytes()[: 100_000])  # a torn copy
    before = snapshot(run)
    assert_user_error(cli(*train_args(files, run, "--resume", "auto")), str(last), "truncated",
                      f"--resume {step}")
    assert snapshot(run) == {**before, ".vla-flow.lock": (run / ".vla-flow.lock").read_bytes()}


# ------------------------------------------------------------------------------ data and config values

def test_damaged_demo_file_names_the_file(files, tmp_path):
    path = write_demo_file(tmp_path / "task_demo.hdf5")
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # a same-size copy with its middle zeroed
        fh.seek(size // 4)
        fh.write(b"\0" * (size // 2))
    assert_user_error(cli("demos", "--inspect", path), str(path), "damaged HDF5 file", "regenerate")
    assert_user_error(cli("train", "--config", "tiny", "--out", tmp_path / "run", "--data", path),
                      str(path), "damaged HDF5 file")


def test_bad_config_values_fail_at_config_load(files, tmp_path):
    proc = cli(*train_args(files, tmp_path / "a", "train.lr=nan"))
    assert_user_error(proc, "lr: nan is not a finite number")
    assert proc.work == []  # before the model and the feature cache (the issue: 30 s of caching first)
    assert_user_error(cli(*train_args(files, tmp_path / "b", "train.lerning_rate=0.001")),
                      "unknown config key 'train.lerning_rate'", "Did you mean 'lr'?")
