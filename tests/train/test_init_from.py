"""Fine-tuning (``train.init_from``) on real tiny HDF5 files and the real tiny policy: the run starts from the
checkpoint's weights and normalization statistics, and a checkpoint that cannot start it is refused up front."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy.checkpoint import load_policy
from train.data import load_train_data
from train.logs import read_metrics
from train.loop import train
from train.synthetic import write_demo_file
from vla_flow.cli import main as cli_main
from vla_flow.experiment import load_experiment


def tiny(*overrides):
    return load_experiment("configs/tiny.yaml", list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained on one file, and a second file of other demos (other statistics)."""
    root = tmp_path_factory.mktemp("init_from")
    first = write_demo_file(root / "a_demo.hdf5", n_demos=6, length=20)
    other = write_demo_file(root / "b_demo.hdf5", n_demos=6, length=20, seed=7, action_offset=0.05)
    train(tiny("train.max_steps=60", "train.lr=0.003"), root / "base", [str(first)])
    return root / "base" / "checkpoints" / "last.pt", other


def test_fine_tuning_starts_from_the_checkpoint_weights_and_statistics(tmp_path, trained):
    ckpt, other = trained
    base = load_policy(ckpt).state_dict()
    scratch = load_train_data(tiny(), [str(other)], torch.device("cpu")).policy.state_dict()
    tuned = load_train_data(tiny(f"train.init_from={ckpt}"), [str(other)], torch.device("cpu")).policy.state_dict()
    stats = [k for k in base if k.startswith("normalizer.")]
    assert stats and any(not torch.equal(base[k], scratch[k]) for k in stats)  # the two files differ
    for key, value in base.items():
        assert torch.equal(tuned[key], value), key

    train(tiny("train.max_steps=4", "train.log_every=1"), tmp_path / "scratch", [str(other)])
    train(tiny("train.max_steps=4", "train.log_every=1", f"train.init_from={ckpt}"), tmp_path / "tuned",
          [str(other)])
    first = {run: read_metrics(tmp_path / run / "metrics.csv")[0]["loss"] for run in ("scratch", "tuned")}
    assert first["tuned"] < 0.7 * first["scratch"], first  # trained weights fit the same kind of data
    assert np.isfinite(first["tuned"])


@pytest.mark.parametrize("override,message", [
    ("policy.chunk_size=2", "policy.chunk_size=4 there, 2 here"),
    (None, "train.init_from: checkpoint not found"),
])
def test_a_checkpoint_that_cannot_start_the_run_is_refused_before_any_data(tmp_path, capsys, trained,
                                                                             override, message):
    ckpt, _ = trained
    init = ckpt if override else tmp_path / "missing.pt"
    args = [f"train.init_from={init}"] + ([override] if override else [])
    code = cli_main(["train", "--config", "configs/tiny.yaml", "--out", str(tmp_path / "run"),
                     "--data", str(tmp_path / "not_read_demo.hdf5")] + args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_checkpoint_saved_before_a_policy_key_existed_still_starts_the_run(tmp_path, trained):
    """Configs are compared as load_policy reads them: a key the checkpoint predates takes its default."""
    from train.checkpoints import check_init_from

    ckpt, _ = trained
    old = torch.load(ckpt, weights_only=True)
    assert old["config"].pop("noise_scale", "absent") != "absent"
    torch.save(old, tmp_path / "old.pt")
    assert check_init_from(str(tmp_path / "old.pt"), tiny().policy) is not None
    with pytest.raises(Exception, match="policy.noise_scale=1.0 there, 0.5 here"):
        check_init_from(str(tmp_path / "old.pt"), tiny("policy.noise_scale=0.5").policy)
