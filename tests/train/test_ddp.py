"""DDP equivalence: 2 gloo processes under torchrun with the same global batch give the same losses as 1.

Why it can be exact: the sampler interleaves ranks so both setups see the same samples per step, the flow
noise/time are drawn per sample from (seed, step, row), and DDP averages the per-rank mean losses' gradients.
Chunk size 1 so every per-rank loss averages the same number of (unmasked) elements.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from train.synthetic import write_demo_file
from train.logs import read_metrics
from train.loop import train
from vla_flow.experiment import load_experiment

ARGS = ["train.max_steps=20", "train.log_every=1", "train.val_every=0", "train.batch_size=8",
        "train.device=cpu", "policy.chunk_size=1", "policy.n_action_steps=1"]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_gloo_processes_match_one_process(tmp_path):
    data = write_demo_file(tmp_path / "ddp_demo.hdf5", n_demos=6, length=20)
    common = ["train", "--config", "configs/tiny.yaml", "--data", str(data)]
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "vla_flow", *common, "--out", str(tmp_path / "ddp"), *ARGS])
    one = train(load_experiment("configs/tiny.yaml", ARGS), tmp_path / "one", [str(data)])  # in process
    assert '"world": 2' in ddp.stdout and one["world"] == 1
    assert '"built": true' in ddp.stdout and not one["cache"][0]["built"]  # cache built in rank shards, reused
    a = np.array([r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.csv")])
    b = np.array([r["loss"] for r in read_metrics(tmp_path / "ddp" / "metrics.csv")])
    assert len(a) == len(b) == 20
    np.testing.assert_allclose(b, a, rtol=1e-4)
    assert not list(tmp_path.glob("ddp_demo.features/*rank*"))  # shard files cleaned up
