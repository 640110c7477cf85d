"""Normalization statistics: computed from training arrays, stored as buffers, gripper kept as -1/+1."""
import numpy as np
import pytest
import torch

from policy.normalize import Normalizer, compute_stats


def _stats():
    rng = np.random.default_rng(0)
    acts = rng.normal(0.1, 0.3, (500, 7))
    acts[:, 6] = np.where(rng.random(500) < 0.7, -1.0, 1.0)
    return compute_stats(acts, rng.normal(2, 5, (500, 7)), rng.normal(size=(500, 7))), acts


@pytest.mark.parametrize("kind", ["mean_std", "min_max"])
def test_round_trip_and_gripper_identity(kind):
    stats, acts = _stats()
    norm = Normalizer({"actions": 7, "joints": 7, "ee_pose": 7}, kind, {"actions": [6]})
    norm.set_stats(stats)
    x = torch.from_numpy(acts).float()
    z = norm.normalize("actions", x)
    assert torch.equal(z[:, 6], x[:, 6])  # -1 open / +1 close survive untouched
    assert torch.allclose(norm.unnormalize("actions", z), x, atol=1e-5)
    if kind == "mean_std":
        assert torch.allclose(z[:, :6].mean(0), torch.zeros(6), atol=1e-4)
        assert torch.allclose(z[:, :6].std(0, unbiased=False), torch.ones(6), atol=1e-3)
    else:
        assert float(z[:, :6].min()) == pytest.approx(-1.0, abs=1e-5) and float(z[:, :6].max()) == pytest.approx(1.0, abs=1e-5)
    assert "actions_mean" in norm.state_dict()  # buffers travel in the checkpoint


def test_missing_and_unset_stats_are_errors():
    stats, _ = _stats()
    norm = Normalizer({"actions": 7, "joints": 7})
    with pytest.raises(RuntimeError, match="never set"):
        norm.normalize("actions", torch.zeros(1, 7))
    with pytest.raises(KeyError, match="joints"):
        norm.set_stats({"actions": stats["actions"]})
    with pytest.raises(ValueError, match="3 dims"):
        norm.set_stats({"actions": stats["actions"], "joints": {k: v[:3] for k, v in stats["joints"].items()}})
    with pytest.raises(ValueError, match="NaN"):
        compute_stats(np.full((3, 7), np.nan), np.zeros((3, 7)), np.zeros((3, 7)))


def test_constant_dimension_does_not_blow_up():
    acts = np.zeros((10, 7))
    stats = compute_stats(acts, np.ones((10, 7)), np.ones((10, 7)))
    norm = Normalizer({"joints": 7})
    norm.set_stats(stats)
    assert torch.isfinite(norm.normalize("joints", torch.full((1, 7), 2.0))).all()
