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
    p.add_argument("--config", help="experiment YAML or preset (its env: and demos: sections); flags override it")
    p.add_argument("--suite", help="LIBERO suite (default libero_spatial; the expert targets libero_spatial)")
    p.add_argument("--task", help="task index or benchmark name (see `vla-flow tasks`), a list such as 0-9, "
                   "or all: one file per task (default: the config's env.task, else 0)")
    p.add_argument("--episodes", type=int, help="episodes per task (failures are not kept; default 50)")
    p.add_argument("--out", default="data/demos", help="output folder (default: data/demos)")
    p.add_argument("--workers", type=int, help="worker processes, one env each (default 2)")
    p.add_argument("--layouts", choices=["official", "random"],
                   help="official (default): episode i starts from init state (K + i) %% 50; random: fresh "
                   "layouts sampled by LIBERO from the BDDL regions with --seed (keeps the 50 official ones held out)")
    p.add_argument("--seed", type=int, help="base seed of --layouts random (episode i: seed*1e6 + i; default 0)")
    p.add_argument("--first-init-state", dest="first_init_state", type=int,
                   help="K in the official init-state order (default 0)")
    p.add_argument("--fast-render", dest="fast_render", action="store_true", default=None,
                   help="no MSAA/shadows/reflections (~2x faster on CPU; evaluate with the same setting)")
    p.add_argument("--camera-size", dest="camera_size", type=int,
                   help="camera height = width in px (default 128, as LIBERO's datasets; evaluate with the same)")
    p.add_argument("--dry-run", action="store_true",
                   help="measure the expert only: cameras off, nothing written, print the table")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides of the config, e.g. demos.episodes=10 env.render.camera_size=96")
    p.set_defaults(func=run_demos)


def run_demos(args: argparse.Namespace) -> int:
    if args.inspect:
        from train.dataset import describe_file

        print(describe_file(args.inspect))
        return 0
    reports = demos_for_experiment(demo_experiment(args), args.out, dry_run=args.dry_run)
    for i, report in enumerate(reports):
        table = report.table()
        print(table if i == 0 else "\n".join(table.splitlines()[1:]))
    return 0


def demos_for_experiment(exp, out, dry_run: bool = False) -> list:
    """The demos stage for an experiment config: one file per task of ``exp.env.task`` under ``out``, each
    resumable; returns the ``GenerationReport``s. The folder is checked and locked before anything slow
    (``dry_run``: cameras off, nothing written, no folder needed)."""
    import contextlib
    from dataclasses import replace

    from envs.demos import generate_demos
    from envs.tasks import resolve_tasks

    with contextlib.ExitStack() as stack:
        if not dry_run:  # before anything slow: a bad or busy folder fails now, not after an episode
            from vla_flow.io import check_output_dir, disk_errors
            from vla_flow.lock import hold_folder

            check_output_dir(out)
            stack.enter_context(hold_folder(out))  # one writer per folder, for the whole run
            stack.enter_context(disk_errors(out))
        return [generate_demos(exp.demos, replace(exp.env, task=task.index), out, record=not dry_run)
                for task in resolve_tasks(exp.env.suite, exp.env.task)]  # one file per task, in config order


FLAG_OVERRIDES = {"suite": "env.suite", "task": "env.task", "episodes": "demos.episodes",
                  "workers": "demos.workers", "layouts": "demos.layouts", "seed": "demos.seed",
                  "first_init_state": "demos.first_init_state", "fast_render": "env.render.fast",
                  "camera_size": "env.render.camera_size"}


def demo_experiment(args: argparse.Namespace):
    """The experiment config of a demos run: ``--config`` (or the defaults, with soft resets) plus the
    KEY=VALUE overrides, then the flags, which are shortcuts for overrides. Bad values raise UserError."""
    import yaml

    from vla_flow.experiment import load_experiment

    overrides = [] if args.config else ["env.reset=soft"]
    overrides += list(getattr(args, "overrides", None) or [])
    for flag, key in FLAG_OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is not None:
            text = value if isinstance(value, str) else yaml.safe_dump(value).splitlines()[0]
            overrides.append(f"{key}={text}")
    return load_experiment(args.config, overrides)


