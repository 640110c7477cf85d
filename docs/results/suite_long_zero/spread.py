"""Where the one-step loss of the 40,000-step suite policy comes from, offline (README "N=1 on the suite policy"):

    python docs/results/suite_long_zero/spread.py [CHECKPOINT] > spread.txt

On 1,500 frames evenly spaced over the train split of the 20-per-task suite demos (runs/suite/demos, made by
`vla-flow demos --config suite_spatial --out runs/suite/demos --episodes 20`) x 4 noise draws each, per initial-noise
scale (1: N(0, I); 0: x0 = 0) and N: the arm (dims 0-5) and gripper (dim 6) MSE against the demonstrated chunk,
the arm spread across the 4 draws of one frame (variance, mean over frames, positions and dims), and for the
gripper the share of commands with |g| < 0.5 (non-committal) and of wrong sign. Raw actions, clipped as predict
clips them, chunk positions past an episode's end masked. Read-only; the frames are the teacher's training
demos or demos like them, not held out.
"""
import glob
import sys

import numpy as np
import torch

from policy.checkpoint import load_policy
from train.reflow import frame_conditions, load_checkpoint_data

CKPT = sys.argv[1] if len(sys.argv) > 1 else "docs/results/suite_long/policy.pt"
K, FRAMES = 4, 1500

torch.manual_seed(0)
_, data, _, _ = load_checkpoint_data(CKPT, sorted(glob.glob("runs/suite/demos/*_demo.hdf5")))
policy = load_policy(CKPT)
rows = np.unique(np.linspace(0, len(data.train) - 1, FRAMES).round().astype(np.int64))
with torch.no_grad():
    cond, arr = frame_conditions(policy, data, data.train, rows)
    frame = torch.arange(cond.shape[0]).repeat_interleave(K)
    noise = torch.randn((len(frame), policy.cfg.chunk_size, policy.cfg.action_dim),
                        generator=torch.Generator().manual_seed(0))
    c, demo, mask = cond[frame], arr["actions"][frame], arr["action_mask"][frame].bool()
    print(f"# {CKPT}: {len(rows)} frames x {K} noise draws")
    print("noise_scale  N  arm_mse_demo  grip_mse_demo  arm_spread  grip_soft  grip_wrong_sign")
    for scale in (1.0, 0.0):
        for n in (1, 2, 10, 100):
            a = policy.normalizer.unnormalize("actions", policy.sample_normalized(c, n, noise * scale)).clamp(-1, 1)
            arm = ((a[..., :6] - demo[..., :6]) ** 2)[mask].mean()
            g, dg = a[..., 6][mask], demo[..., 6][mask]
            spread = a.view(-1, K, *a.shape[1:])[..., :6].var(1).mean()
            print(f"{scale:11.1f} {n:3d} {arm:13.5f} {((g - dg) ** 2).mean():14.4f} {spread:11.5f} "
                  f"{(g.abs() < 0.5).float().mean():10.4f} {((g >= 0) != (dg >= 0)).float().mean():16.4f}")
