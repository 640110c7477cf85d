"""``vla-flow reflow``: straighten a trained flow policy (2-rectified flow, optional one-step distillation).

    vla-flow reflow --checkpoint RUN/checkpoints/last.pt --out RUN_reflow [--data FILE ...] [--distill-steps 1000]

The new checkpoint (OUT/checkpoints/last.pt) has the teacher's format and runs in ``vla-flow eval`` unchanged.
Imports nothing heavy at module level (see train/reflow.py for the method and its cost).
"""
from __future__ import annotations


def register(subparsers) -> None:
    import dataclasses

    from train.reflow_config import ReflowConfig

    d = ReflowConfig.__new__(ReflowConfig)  # the defaults, unvalidated: validation imports torch
    d.__dict__.update({f.name: f.default for f in dataclasses.fields(ReflowConfig)})
    p = subparsers.add_parser("reflow", help="reflow a trained flow policy so that few steps suffice",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint from `vla-flow train` (the teacher)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/last.pt, run.json, metrics.csv")
    p.add_argument("--data", nargs="+", action="extend", default=None, metavar="FILE",
                   help="the demo file(s) the teacher was trained on (default: from its run folder)")
    p.add_argument("--samples-per-frame", type=int, default=d.samples_per_frame,
                   help=f"noise draws per training frame (default {d.samples_per_frame})")
    p.add_argument("--pair-steps", type=int, default=d.pair_steps, help=f"solver steps per pair (default {d.pair_steps})")
    p.add_argument("--pair-solver", default=d.pair_solver, help=f"euler | midpoint (default {d.pair_solver})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"reflow training steps (default {d.steps})")
    p.add_argument("--distill-steps", type=int, default=d.distill_steps,
                   help="then this many one-step distillation steps at t=0 (default 0: none)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--time-sampling", default=None, help="uniform | logit_normal | beta (default: the teacher's)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch threads (default {d.threads}: the head is small; 0 = torch's default)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from train.reflow import ReflowConfig, reflow
    from vla_flow.errors import UserError

    try:
        cfg = ReflowConfig(samples_per_frame=args.samples_per_frame, pair_steps=args.pair_steps,
                           pair_solver=args.pair_solver, steps=args.steps, distill_steps=args.distill_steps,
                           batch_size=args.batch_size, lr=args.lr, time_sampling=args.time_sampling, seed=args.seed,
                           threads=args.threads)
    except ValueError as exc:
        raise UserError(f"reflow: {exc}") from None
    info = reflow(args.checkpoint, args.data, args.out, cfg, progress=args.progress)
    print(json.dumps({"checkpoint": f"{args.out}/checkpoints/last.pt", "pairs": info["pairs"],
                      "seconds": {k: round(v, 1) for k, v in info["seconds"].items()}}, indent=2))
    return 0
