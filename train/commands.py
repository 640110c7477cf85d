"""``vla-flow train``: train the flow policy from an experiment config (single process or under torchrun).

    vla-flow train --config configs/tiny.yaml --out runs/tiny --data demos/task_demo.hdf5 train.max_steps=50
    torchrun --nproc_per_node=2 -m vla_flow train --config ... --out ...   (DDP: gloo on CPU, nccl on CUDA)
    vla-flow train --config ... --out runs/tiny --resume auto             (continue RUN from last.pt)
"""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the policy (DDP under torchrun)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiment YAML (path or preset name in configs/)")
    p.add_argument("--out", required=True, help="run folder: metrics.csv, tb/, checkpoints/")
    p.add_argument("--data", nargs="+", action="extend", default=None, metavar="FILE",
                   help="HDF5 demo file(s) (repeatable); default: train.data from the config")
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="checkpoint to continue from, or 'auto' for RUN/checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.001")
    p.set_defaults(func=run)


def split_data_and_overrides(data: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--data A B train.lr=0.001`` : argparse gives every word to --data; words that look like
    ``section.key=value`` are overrides."""
    import re

    is_override = re.compile(r"^[A-Za-z_][\w.]*=")
    files = [d for d in data if not is_override.match(d)]
    return files, [d for d in data if is_override.match(d)] + list(overrides)


def run(args) -> int:
    """Checks that need no data come first (config values, the run folder, its writer lock, the resume
    checkpoint), so a bad value or a busy folder fails in seconds, not after the feature cache is built."""
    import json
    import os

    from vla_flow.experiment import load_experiment
    from vla_flow.io import check_output_dir

    data, overrides = split_data_and_overrides(args.data or [], args.overrides)
    check_output_dir(args.out)
    exp = load_experiment(args.config, overrides)
    summary = train_experiment(exp, args.out, data or None, args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 prints
        print(json.dumps(summary, indent=2, default=str))
    return 0


def train_experiment(exp, out, data=None, resume=None) -> dict:
    """The training stage for an experiment config: checks the run folder, holds its writer lock (rank 0),
    checks the resume checkpoint, then ``train.loop.train``; returns its summary."""
    from train.loop import train
    from vla_flow.io import check_output_dir, check_run_record, disk_errors
    from vla_flow.lock import hold_folder

    check_output_dir(out)
    check_run_record(out, "train")
    with hold_folder(out), disk_errors(out):  # rank 0 holds RUN's lock; only rank 0 writes there
        _check_resume(resume, out)
        from train.checkpoints import check_init_from

        check_init_from(exp.train.init_from, exp.policy)  # before hours of demos reading and feature caching
        return train(exp, out, data_paths=data or None, resume=resume)


def _check_resume(resume, out) -> None:
    """Refuse an existing run without --resume, and an unreadable or broken resume checkpoint, up front."""
    from pathlib import Path

    from train.checkpoints import find_resume

    path = find_resume(resume, Path(out))
    if path is not None:
        from policy.checkpoint import check_finite_state, read_checkpoint

        check_finite_state(path, read_checkpoint(path)["state_dict"])
