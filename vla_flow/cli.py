"""The ``vla-flow`` command: one entry point, one subcommand per job.

Each stage registers its own subcommands from ``<stage>/commands.py`` (a ``register(subparsers)`` function
that adds parsers and sets ``func``). Those modules import nothing heavy at module level, so ``vla-flow
--help`` and argument errors are instant; torch/MuJoCo load only inside the chosen command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from vla_flow.errors import UserError

# Order is the order in --help. Each module must define register(subparsers).
COMMAND_MODULES = [
    "envs.commands",      # tasks
    "envs.demos_cli",     # demos
    "train.commands",     # train
    "policy.commands",    # predict, export
    "eval.commands",      # eval
    "reports.commands",   # report
    "vla_flow.quickstart",  # quickstart
    "vla_flow.dagger",    # dagger
    "vla_flow.distill",   # distill-onpolicy
    "vla_flow.bench",     # bench {all,env,demos,policy,train,eval}
    "eval.offline",       # sweep-offline
    "train.reflow_cli",   # reflow
    "eval.ceiling",       # ceiling
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-flow",
        description="Train a rectified-flow VLA policy on LIBERO and evaluate it closed loop.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `vla-flow report DIR | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
