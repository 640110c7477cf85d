"""Checkpoints: weights_only round trip, extras, and errors that name the bad key."""
import numpy as np
import pytest
import torch

from policy.checkpoint import CheckpointError, load_policy, read_checkpoint, save_checkpoint
from tests.policy.test_modeling import inputs, make_policy

pytestmark = pytest.mark.filterwarnings("ignore:random-init CLIP encoders")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    policy = make_policy(chunk_size=2, n_action_steps=2, use_gripper_state=True)
    with torch.no_grad():
        for p in policy.head.parameters():
            p.add_(0.01)  # not the seeded init: the round trip must carry the weights
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad])
    path = tmp_path_factory.mktemp("ckpt") / "policy.pt"
    save_checkpoint(path, policy, optimizer=opt.state_dict(), step=7)
    return policy, path


def test_round_trip_weights_only(saved):
    policy, path = saved
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["extra"]["step"] == 7 and "optimizer" in raw["extra"]
    assert raw["provenance"]["random_init"] is True
    assert not any(k.startswith("encoder.") for k in raw["state_dict"])  # frozen encoder rebuilt, not stored
    loaded = load_policy(path, "cpu")
    x = inputs(2, gripper=True)
    noise = torch.randn(2, 2, 7)
    np.testing.assert_array_equal(policy.predict(**x, noise=noise, num_flow_steps=3),
                                  loaded.predict(**x, noise=noise, num_flow_steps=3))
    assert loaded.cfg == policy.cfg


def _resave(path, tmp_path, edit):
    ckpt = read_checkpoint(path)
    edit(ckpt)
    out = tmp_path / "edited.pt"
    torch.save(ckpt, out)
    return out


def test_missing_key_named(saved, tmp_path):
    _, path = saved
    bad = _resave(path, tmp_path, lambda c: c["state_dict"].pop("head.net.0.weight"))
    with pytest.raises(CheckpointError, match="missing key 'head.net.0.weight'"):
        load_policy(bad)
    bad = _resave(path, tmp_path, lambda c: c.pop("config"))
    with pytest.raises(CheckpointError, match="missing key 'config'"):
        load_policy(bad)


def test_mismatched_shape_and_unexpected_key_named(saved, tmp_path):
    _, path = saved
    bad = _resave(path, tmp_path, lambda c: c["state_dict"].update({"fusion.0.bias": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="'fusion.0.bias' has shape"):
        load_policy(bad)
    bad = _resave(path, tmp_path, lambda c: c["state_dict"].update({"extra_layer.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="unexpected key 'extra_layer.weight'"):
        load_policy(bad)


def test_different_encoder_is_refused(saved, tmp_path):
    _, path = saved
    bad = _resave(path, tmp_path, lambda c: c["config"]["vision"].update(init_seed=99))
    with pytest.raises(CheckpointError, match="frozen encoder differs"):
        load_policy(bad)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_policy(tmp_path / "junk.pt")
