"""``vla-flow reflow``: straighten a trained flow policy (2-rectified flow, optional one-step distillation).

    vla-flow reflow --checkpoint RUN/checkpoints/last.pt --out RUN_reflow [--data FILE ...] [--distill-steps 1000]
    vla-flow reflow --checkpoint C --out O --config FILE|PRESET [reflow.steps=2000 ...]

Settings come by the one config route: ``--config`` (a YAML file or preset whose ``reflow:`` section holds
``ReflowConfig`` keys; other sections are other stages') plus dotted ``reflow.KEY=VALUE`` overrides; each flag
is a shortcut rewritten into such an override.

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
    p.add_argument("--config", help="YAML file or preset with a reflow: section (ReflowConfig keys)")
    p.add_argument("--samples-per-frame", type=int, help=f"noise draws per training frame (default {d.samples_per_frame})")
    p.add_argument("--pair-steps", type=int, help=f"solver steps per pair (default {d.pair_steps})")
    p.add_argument("--pair-solver", help=f"euler | midpoint (default {d.pair_solver})")
    p.add_argument("--steps", type=int, help=f"reflow training steps (default {d.steps})")
    p.add_argument("--distill-steps", type=int,
                   help="then this many one-step distillation steps at t=0 (default 0: none)")
    p.add_argument("--batch-size", type=int, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"(default {d.lr})")
    p.add_argument("--time-sampling", help="uniform | logit_normal | beta (default: the teacher's)")
    p.add_argument("--noise-scale", type=float,
                   help="pairs start at x0 = this x N(0, I) (default 1); 0: the teacher's deterministic path from "
                        "x0 = 0, one pair per frame, and the student samples from 0")
    p.add_argument("--seed", type=int, help=f"(default {d.seed})")
    p.add_argument("--threads", type=int,
                   help=f"torch threads (default {d.threads}: the head is small; 0 = torch's default)")
    p.add_argument("--other-data", action="store_const", const=True, default=None,
                   help="allow --data that is not the teacher's training data (other demos of its suite and tasks)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. reflow.steps=2000")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from train.reflow import reflow

    cfg = reflow_config(args.config, args.overrides, {k: getattr(args, k, None) for k in FLAGS})
    info = reflow(args.checkpoint, args.data, args.out, cfg, progress=args.progress)
    print(json.dumps({"checkpoint": f"{args.out}/checkpoints/last.pt", "pairs": info["pairs"],
                      "seconds": {k: round(v, 1) for k, v in info["seconds"].items()}}, indent=2))
    return 0


FLAGS = ("samples_per_frame", "pair_steps", "pair_solver", "steps", "distill_steps", "batch_size", "lr",
         "time_sampling", "seed", "threads", "other_data", "noise_scale")


def reflow_config(config, overrides=(), flags: dict | None = None):
    """``ReflowConfig`` from a config file or preset (its ``reflow:`` section), dotted overrides and flag
    values (None: not given), in that order of precedence, lowest first. Bad values raise UserError."""
    import yaml

    from train.reflow_config import ReflowConfig
    from vla_flow import config as cfgmod

    raw = cfgmod.read_yaml(cfgmod.resolve_config_path(config)) if config else {}
    extra = [f"reflow.{k}={yaml.safe_dump(v, default_flow_style=True).splitlines()[0]}"
             for k, v in (flags or {}).items() if v is not None]
    raw = cfgmod.apply_overrides(raw, [*(overrides or []), *extra])
    stray = sorted(k for k in raw if k != "reflow") if not config else []
    if stray:
        raise cfgmod.ConfigError(f"override(s) {', '.join(stray)}: reflow settings are reflow.KEY=VALUE")
    return cfgmod.from_dict(ReflowConfig, raw.get("reflow") or {}, prefix="reflow")
