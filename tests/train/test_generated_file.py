"""The reader and the trainer on a file written by the real demo generator (scripted expert in LIBERO)."""
from __future__ import annotations

import numpy as np
import pytest

from train.dataset import open_demo_file, policy_image
from train.logs import read_metrics
from train.loop import train
from vla_flow.experiment import load_experiment


@pytest.mark.sim
@pytest.mark.slow  # ~100 s here: simulator start + one expert episode on a loaded 2-core CPU
def test_generated_file_reads_and_trains(tmp_path):
    from envs.config import DemoConfig, EnvConfig
    from envs.demos import generate_demos

    generate_demos(DemoConfig(episodes=1, workers=1), EnvConfig(suite="libero_spatial", task=0), tmp_path)
    (path,) = tmp_path.glob("*_demo.hdf5")
    df = open_demo_file(path)
    assert len(df.demos) == 1 and df.lengths[0] > 20
    assert df.instruction == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    img = policy_image(df, 0, 0)
    assert img.shape == (224, 224, 3) and img.std() > 5  # a rendered scene, not a blank frame
    q = df.ee_pose[0][:, 3:]
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-3)  # unit xyzw quaternions
    exp = load_experiment("configs/tiny.yaml", ["train.max_steps=3", "train.val_fraction=0.0"])
    train(exp, tmp_path / "run", [str(path)])
    assert np.isfinite([r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.csv")]).all()
