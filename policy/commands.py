"""``vla-flow predict``: one observation -> one 7-D action from a checkpoint (the seed design's single use).

    vla-flow predict --checkpoint C --image obs.png --instruction "put the bowl on the plate" \\
        --proprio 7 numbers --ee-pose 7 numbers [--gripper 2 numbers] [--num-flow-steps 50] [--seed 0]

The image must be right side up RGB; it is resized to 224x224 if needed (no LIBERO flip is applied here).
Nothing heavy is imported at module level.
"""
from __future__ import annotations

import argparse

from vla_flow.errors import UserError


def register(subparsers) -> None:
    register_predict(subparsers)
    e = subparsers.add_parser(
        "export", help="a checkpoint without its training state, to publish or share (~1/3 the size)",
        description="Write CHECKPOINT to OUT without the optimizer, scheduler, RNG and metrics window that "
                    "only resuming training needs. Weights, config, normalization statistics and provenance are "
                    "kept bit for bit: OUT evaluates and predicts exactly as CHECKPOINT (vla-flow eval / predict, "
                    "load_policy), but cannot resume training.")
    e.add_argument("--checkpoint", required=True, help="policy checkpoint (.pt), e.g. RUN/checkpoints/last.pt")
    e.add_argument("--out", required=True, help="file to write (.pt)")
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from policy.checkpoint import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    mb = lambda p: Path(p).stat().st_size / 1e6  # noqa: E731
    print(f"wrote {out} ({mb(out):.1f} MB; {args.checkpoint}: {mb(args.checkpoint):.1f} MB)")
    return 0


def register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict one action from an image + instruction + proprio",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="policy checkpoint (.pt)")
    p.add_argument("--image", required=True, help="RGB image file (png/jpg), right side up")
    p.add_argument("--instruction", required=True, help="language instruction")
    p.add_argument("--proprio", type=float, nargs=7, required=True, metavar="Q", help="7 joint positions")
    p.add_argument("--ee-pose", type=float, nargs=7, required=True, metavar="P",
                   help="end-effector pose x y z qx qy qz qw (quaternion xyzw)")
    p.add_argument("--gripper", type=float, nargs=2, default=None, metavar="G",
                   help="2 gripper finger positions (needed if the policy uses gripper state)")
    p.add_argument("--num-flow-steps", type=int, default=None, help="Euler steps N (default: the policy's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def read_image(path: str, size: int = 224):
    """(size, size, 3) uint8 RGB from an image file, resized (bilinear) when needed."""
    import numpy as np
    from PIL import Image

    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as exc:
        raise UserError(f"--image: cannot read {path}: {exc}") from exc
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def predict_one(policy, image, instruction: str, proprio, ee_pose, gripper=None, num_flow_steps: int | None = None,
                seed: int = 0):
    """The Python twin of the command: one observation -> (7,) action (the first of the chunk)."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = policy.predict(np.asarray(image)[None], [instruction], np.asarray(proprio, np.float32)[None],
                         np.asarray(ee_pose, np.float32)[None],
                         gripper=None if gripper is None else np.asarray(gripper, np.float32)[None],
                         num_flow_steps=num_flow_steps, generator=gen)
    return out[0, 0]


def run(args: argparse.Namespace) -> int:
    from policy.checkpoint import load_policy

    policy = load_policy(args.checkpoint, args.device)
    if policy.cfg.use_gripper_state and args.gripper is None:
        raise UserError("this policy uses the gripper state: pass --gripper G1 G2")
    action = predict_one(policy, read_image(args.image), args.instruction, args.proprio, args.ee_pose,
                         args.gripper, args.num_flow_steps, args.seed)
    print(" ".join(f"{a:.6f}" for a in action))
    return 0
