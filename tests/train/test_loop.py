"""Training loop on real tiny HDF5 files and the real (tiny, random-init) policy: cache, resume, errors,
loss decrease, atomic checkpoints."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from train.synthetic import write_demo_file
from train.logs import read_metrics
from train.loop import train
from vla_flow.cli import main as cli_main
from vla_flow.experiment import load_experiment


def tiny(*overrides):
    return load_experiment("configs/tiny.yaml", list(overrides))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_demo_file(tmp_path_factory.mktemp("data") / "task0_demo.hdf5", n_demos=6, length=20)


def losses(run):
    return np.array([r["loss"] for r in read_metrics(run / "metrics.csv")])


def test_cache_reused_then_rebuilt_on_data_or_encoder_change(tmp_path):
    path = write_demo_file(tmp_path / "d_demo.hdf5", n_demos=3, length=12)
    first = train(tiny("train.max_steps=2"), tmp_path / "r1", [str(path)])["cache"][0]
    again = train(tiny("train.max_steps=2"), tmp_path / "r2", [str(path)])["cache"][0]
    assert first["built"] and not again["built"] and again["key"] == first["key"]
    other_enc = train(tiny("train.max_steps=2", "policy.vision.init_seed=1"), tmp_path / "r3", [str(path)])["cache"][0]
    assert other_enc["built"] and other_enc["key"] != first["key"]
    write_demo_file(path, n_demos=3, length=12, seed=5)  # same shapes, other images
    other_data = train(tiny("train.max_steps=2"), tmp_path / "r4", [str(path)])["cache"][0]
    assert other_data["built"] and other_data["key"] not in (first["key"], other_enc["key"])


def test_loss_decreases_and_checkpoint_loads(tmp_path, data_file):
    out = tmp_path / "run"
    summary = train(tiny("train.max_steps=60", "train.lr=0.003"), out, [str(data_file)])
    curve = losses(out)
    assert curve[-3:].mean() < 0.7 * curve[:2].mean(), curve
    from policy.checkpoint import load_policy

    policy = load_policy(out / "checkpoints" / "last.pt")
    assert summary["last_checkpoint"].endswith("step_60.pt")
    a = policy.predict(np.zeros((2, 224, 224, 3), np.uint8), "x", np.zeros((2, 7)), np.zeros((2, 7)),
                       generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 4, 7) and np.isfinite(a).all()


def test_resume_reproduces_the_uninterrupted_curve(tmp_path, data_file):
    exp = tiny("train.max_steps=30", "train.save_every=10", "train.log_every=3", "train.val_every=15")
    train(exp, tmp_path / "full", [str(data_file)])

    def interrupt(step):
        if step == 17:  # after the step-10 checkpoint, mid-window
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(exp, tmp_path / "cut", [str(data_file)], on_step=interrupt)
    train(exp, tmp_path / "cut", [str(data_file)], resume="auto")
    full, cut = read_metrics(tmp_path / "full" / "metrics.csv"), read_metrics(tmp_path / "cut" / "metrics.csv")
    assert [r["step"] for r in full] == [r["step"] for r in cut]
    for key in ("loss", "val_loss", "val_mse_n1", "val_mse_n10", "lr", "grad_norm"):
        a = np.array([r[key] for r in full if r[key] is not None])
        b = np.array([r[key] for r in cut if r[key] is not None])
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=key)


def test_fresh_run_refuses_to_overwrite_a_run(tmp_path, data_file):
    train(tiny("train.max_steps=1"), tmp_path / "r", [str(data_file)])
    with pytest.raises(Exception, match="--resume auto"):
        train(tiny("train.max_steps=1"), tmp_path / "r", [str(data_file)])


def test_interrupted_save_keeps_previous_checkpoint_loadable(tmp_path, data_file, monkeypatch):
    from policy.checkpoint import load_policy
    from train import checkpoints

    out = tmp_path / "run"
    train(tiny("train.max_steps=10", "train.save_every=5"), out, [str(data_file)])
    before = (out / "checkpoints" / "last.pt").read_bytes()

    real_replace = os.replace

    def killed(src, dst, *a, **k):  # dies after the temp file is written, before it replaces last.pt
        if str(dst).endswith(".pt"):
            with open(src, "r+b") as fh:
                fh.truncate(16)  # and the temp file is cut short
            raise KeyboardInterrupt
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("train.max_steps=20", "train.save_every=5"), out, [str(data_file)], resume="auto")
    monkeypatch.undo()
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((out / "checkpoints").glob(".*tmp"))
    load_policy(out / "checkpoints" / "last.pt")


@pytest.mark.parametrize("args,message", [
    (["train.nonsense=1"], "unknown config key 'train.nonsense'"),
    (["--data", "/nonexistent/x_demo.hdf5"], "dataset not found: /nonexistent/x_demo.hdf5"),
    (["--data", "MISSING_KEY"], "demo_1/obs/ee_pos: missing key"),
])
def test_cli_errors_exit_nonzero_with_clear_message(tmp_path, capsys, args, message):
    if "MISSING_KEY" in args:
        args = ["--data", str(write_demo_file(tmp_path / "bad.hdf5", drop="demo_1/obs/ee_pos"))]
    elif "--data" not in args:
        args = ["--data", str(write_demo_file(tmp_path / "ok.hdf5"))] + args
    code = cli_main(["train", "--config", "configs/tiny.yaml", "--out", str(tmp_path / "run")] + args)
    assert code != 0
    assert message in capsys.readouterr().err


def test_non_finite_loss_names_step_demos_and_checkpoint(tmp_path, data_file, monkeypatch):
    from policy.modeling import FlowPolicy

    real = FlowPolicy.compute_loss
    calls = {"n": 0}

    def poisoned(self, batch, generator=None):
        loss, m = real(self, batch, generator)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 8 else loss), m

    monkeypatch.setattr(FlowPolicy, "compute_loss", poisoned)
    with pytest.raises(Exception) as info:
        train(tiny("train.max_steps=10", "train.save_every=5", "train.val_every=0"), tmp_path / "r", [str(data_file)])
    msg = str(info.value)
    assert "step 7" in msg and "task0_demo.hdf5:demo_" in msg and "step_5.pt" in msg


def test_on_the_fly_matches_cached_and_augmentation_runs(tmp_path, data_file):
    args = ("train.max_steps=4", "train.log_every=1", "train.val_every=0")
    train(tiny(*args), tmp_path / "cached", [str(data_file)])
    train(tiny(*args, "train.features=on_the_fly"), tmp_path / "fly", [str(data_file)])
    np.testing.assert_allclose(losses(tmp_path / "fly"), losses(tmp_path / "cached"), rtol=1e-5)
    train(tiny(*args, "train.features=on_the_fly", "train.augment=true"), tmp_path / "aug", [str(data_file)])
    aug = losses(tmp_path / "aug")
    assert np.isfinite(aug).all() and not np.allclose(aug, losses(tmp_path / "cached"), rtol=1e-5)


def test_two_files_each_get_a_cache_and_their_own_text_feature(tmp_path):
    from train.data import load_train_data
    from train.dataset import policy_image

    a = write_demo_file(tmp_path / "a_demo.hdf5", n_demos=2, length=10, seed=1)
    b = write_demo_file(tmp_path / "b_demo.hdf5", n_demos=2, length=10, seed=2, instruction="another wording")
    data = load_train_data(tiny(), [str(a), str(b)], torch.device("cpu"))
    assert len(data.cache_info) == 2 and data.image_feat.shape[0] == sum(df.num_frames for df in data.files)
    table = data.train
    batch = data.gather(table, np.arange(len(table)), 0, "cpu")
    images = np.stack([policy_image(data.files[f], d, t) for f, d, t in zip(table.file_idx, table.demo_idx, table.t)])
    expect = data.policy.encode_images(torch.from_numpy(images))
    # the cache stores float16 (train/features.py): right row of the right file, to float16 precision
    torch.testing.assert_close(batch["image_feat"].float(), expect.half().float(), rtol=1e-3, atol=1e-3)
    text = data.policy.encode_text([data.files[f].instruction for f in table.file_idx])
    torch.testing.assert_close(batch["text_feat"], text, rtol=1e-5, atol=1e-6)
    assert set(table.file_idx.tolist()) == {0, 1}


def test_wrist_camera_gets_its_own_cache_rows_and_matches_on_the_fly(tmp_path, data_file):
    from train.data import load_train_data
    from train.dataset import open_demo_file, policy_image

    data = load_train_data(tiny("policy.vision.use_wrist_image=true"), [str(data_file)], torch.device("cpu"))
    assert len(data.cache_info) == 2 and data.cache_info[0]["key"] != data.cache_info[1]["key"]
    table = data.train
    rows = np.arange(min(len(table), 8))
    batch = data.gather(table, rows, 0, "cpu")
    wrist = open_demo_file(data_file, "eye_in_hand_rgb")
    images = np.stack([policy_image(wrist, d, t) for d, t in zip(table.demo_idx[rows], table.t[rows])])
    expect = data.policy.encode_images(torch.from_numpy(images))
    torch.testing.assert_close(batch["wrist_feat"].float(), expect.half().float(), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(batch["wrist_feat"], batch["image_feat"])  # the other camera, not a copy
    args = ("policy.vision.use_wrist_image=true", "train.max_steps=3", "train.log_every=1", "train.val_every=0")
    train(tiny(*args), tmp_path / "cached", [str(data_file)])
    train(tiny(*args, "train.features=on_the_fly"), tmp_path / "fly", [str(data_file)])
    np.testing.assert_allclose(losses(tmp_path / "fly"), losses(tmp_path / "cached"), rtol=1e-5)


def test_sigkill_during_training_leaves_a_loadable_last_and_resumes(tmp_path, data_file):
    import signal
    import subprocess
    import sys
    import time

    from policy.checkpoint import load_policy

    out = tmp_path / "run"
    args = ["train", "--config", "configs/tiny.yaml", "--out", str(out), "--data", str(data_file),
            "train.max_steps=100000", "train.save_every=1", "train.log_every=1", "train.val_every=0",
            "train.keep_last=0"]
    proc = subprocess.Popen([sys.executable, "-m", "vla_flow", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 300  # process start can take a minute on a loaded machine
        while not (out / "checkpoints" / "step_5.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup at all, possibly mid-write
        proc.wait()
    assert (out / "checkpoints" / "step_5.pt").exists(), "the trainer never reached step 5"
    load_policy(out / "checkpoints" / "last.pt")

    class Stop(Exception):
        pass

    seen = []

    def stop_after_two(step):
        seen.append(step)
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        train(tiny("train.max_steps=100000", "train.save_every=1", "train.log_every=1", "train.val_every=0"),
              out, [str(data_file)], resume="auto", on_step=stop_after_two)
    steps = [int(r["step"]) for r in read_metrics(out / "metrics.csv")]
    assert seen[0] >= 6 and steps == list(range(1, seen[-1] + 1))  # resumed from last.pt, no gap, no duplicate
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_bf16_autocast_on_cpu_trains_and_saves_float32_weights(tmp_path, data_file, monkeypatch):
    """train.bf16 autocasts the head where bf16 is native (AMX / AVX512-BF16), else trains in float32."""
    from train.loop import use_bf16

    native = bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())  # independent of the code under test
    assert use_bf16(True, torch.device("cpu")) is native and use_bf16(False, torch.device("cpu")) is False
    seen = []
    real = torch.autocast.__init__

    def spy(self, device_type, *a, **kw):
        seen.append((device_type, kw.get("enabled")))
        real(self, device_type, *a, **kw)

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    out = tmp_path / "bf16"
    train(tiny("train.max_steps=60", "train.lr=0.003", "train.bf16=true"), out, [str(data_file)])
    assert ("cpu", native) in seen
    curve = losses(out)
    assert np.isfinite(curve).all() and curve[-3:].mean() < 0.7 * curve[:2].mean(), curve
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
