"""``vla-flow demos``: generate scripted-expert demonstrations, or inspect a demo file.

    vla-flow demos --suite libero_spatial --task 0 --episodes 50 --out data/demos [--workers 2]
                   [--layouts official|random --seed S] [--first-init-state K] [--fast-render] [--dry-run]
    vla-flow demos --inspect data/demos/<task>_demo.hdf5

Imports nothing heavy at module level (the simulator loads inside the command).
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demos",
        help="generate scripted-expert demonstrations (LIBERO HDF5 layout), or --inspect a file",
        description="Run the scripted pick-and-place expert in worker processes and keep the successful "
        "episodes in DIR/<task>_demo.hdf5 (official LIBERO/robomimic layout). Rerunning the same command "
        "resumes: finished episodes are kept and only missing ones run.",
    )
    p.add_argument("--inspect", metavar="FILE", help="validate FILE and print its summary, then exit")
    p.add_argument("--suite", default="libero_spatial", help="LIBERO suite (the expert targets libero_spatial)")
    p.add_argument("--task", default="0", help="task index or benchmark name (see `vla-flow tasks`)")
    p.add_argument("--episodes", type=int, default=50, help="episodes to run (failures are not kept)")
    p.add_argument("--out", default="data/demos", help="output folder (default: data/demos)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one env each (default 2)")
    p.add_argument("--layouts", choices=["official", "random"], default="official",
                   help="official: episode i starts from init state (K + i) %% 50; random: fresh layouts "
                   "sampled by LIBERO from the BDDL regions with --seed (keeps the 50 official ones held out)")
    p.add_argument("--seed", type=int, default=0, help="base seed of --layouts random (episode i: seed*1e6 + i)")
    p.add_argument("--first-init-state", type=int, default=0, help="K in the official init-state order")
    p.add_argument("--fast-render", action="store_true",
                   help="no MSAA/shadows/reflections (~2x faster on CPU; evaluate with the same setting)")
    p.add_argument("--dry-run", action="store_true",
                   help="measure the expert only: cameras off, nothing written, print the table")
    p.set_defaults(func=run_demos)


def run_demos(args: argparse.Namespace) -> int:
    import contextlib

    from vla_flow.errors import UserError

    if args.inspect:
        from train.dataset import describe_file

        print(describe_file(args.inspect))
        return 0
    with contextlib.ExitStack() as stack:
        if not args.dry_run:  # before anything slow: a bad or busy folder fails now, not after an episode
            from vla_flow.io import check_output_dir, disk_errors
            from vla_flow.lock import hold_folder

            check_output_dir(args.out)
            stack.enter_context(hold_folder(args.out))  # one writer per folder, for the whole run
            stack.enter_context(disk_errors(args.out))
        from envs.config import DemoConfig, EnvConfig, RenderConfig
        from envs.demos import generate_demos

        try:
            cfg = DemoConfig(episodes=args.episodes, layouts=args.layouts, seed=args.seed, workers=args.workers,
                             first_init_state=args.first_init_state)
            env_cfg = EnvConfig(suite=args.suite, task=int(args.task) if args.task.isdigit() else args.task,
                                reset="soft", render=RenderConfig(fast=args.fast_render))
        except ValueError as exc:
            raise UserError(f"demos: {exc}") from None
        report = generate_demos(cfg, env_cfg, args.out, record=not args.dry_run)
    print(report.table())
    return 0
