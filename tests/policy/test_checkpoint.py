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


def test_export_drops_training_state_and_predicts_the_same(saved, tmp_path):
    from vla_flow.cli import main

    policy, path = saved
    out = tmp_path / "published.pt"
    assert main(["export", "--checkpoint", str(path), "--out", str(out)]) == 0
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert "optimizer" not in raw["extra"] and raw["extra"]["step"] == 7
    assert raw["extra"]["exported_from"] == {"path": str(path), "dropped": ["optimizer"]}
    assert out.stat().st_size < path.stat().st_size
    src = read_checkpoint(path)["state_dict"]
    assert all(torch.equal(src[k], v) for k, v in raw["state_dict"].items()) and src.keys() == raw["state_dict"].keys()
    x = inputs(2, gripper=True)
    noise = torch.randn(2, 2, 7)
    np.testing.assert_array_equal(policy.predict(**x, noise=noise, num_flow_steps=3),
                                  load_policy(out).predict(**x, noise=noise, num_flow_steps=3))


def test_export_onto_itself_and_a_damaged_source_are_refused(saved, tmp_path, capsys):
    from vla_flow.cli import main

    _, path = saved
    assert main(["export", "--checkpoint", str(path), "--out", str(path)]) == 2
    assert "is the checkpoint itself" in capsys.readouterr().err
    bad = _resave(path, tmp_path, lambda c: c["state_dict"].pop("head.net.0.weight"))
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "o.pt")]) == 2
    assert "missing key 'head.net.0.weight'" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
