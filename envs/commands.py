"""CLI commands of the env stage: ``vla-flow tasks``. Imports LIBERO only inside the command."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tasks",
        help="list a LIBERO suite's tasks (index, name, instruction)",
        description="List the tasks of a LIBERO suite as the benchmark defines them: index, name, "
        "language instruction. Use the index or the name as env.task.",
    )
    p.add_argument("--suite", default="libero_spatial",
                   help="libero_spatial | libero_object | libero_goal | libero_10 | libero_90")
    p.add_argument("--json", action="store_true", help="one JSON object per task (with bddl file, init states)")
    p.set_defaults(func=run_tasks)


def run_tasks(args: argparse.Namespace) -> int:
    from envs.libero import list_tasks  # raises UserError (exit 2) listing valid suites

    tasks = list_tasks(args.suite)
    for t in tasks:
        if args.json:
            print(json.dumps({"suite": t.suite, "index": t.index, "name": t.name, "language": t.language,
                              "bddl_file": t.bddl_file, "n_init_states": t.n_init_states}))
        else:
            print(f"{t.index}\t{t.name}\t{t.language}")
    return 0
