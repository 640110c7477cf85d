"""``vla-flow eval``: closed-loop evaluation of a checkpoint in LIBERO (see eval/evaluate.py).

Imports nothing heavy at module level. Flags override the YAML config (``--config``: an experiment file
with ``eval:`` and ``env:`` sections, or a file holding only EvalConfig keys) and its dotted ``KEY=VALUE``
overrides. With an experiment file and no task list, the experiment's own ``env.task`` is evaluated. Every argument is checked before any
simulator worker starts; a bad one exits 2 with a message that names it.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint closed loop in LIBERO (episodes table, videos, resume)",
        description="Run every episode (task, init state, N flow steps, seed) of the grid in W simulator "
                    "workers with one batched policy; rerun the same command to resume.")
    p.add_argument("--checkpoint", required=True, help="policy checkpoint (.pt) from `vla-flow train`")
    p.add_argument("--out", required=True, help="output folder: episodes.parquet, run.json, videos/")
    p.add_argument("--config", help="YAML: experiment file (eval: and env: sections) or EvalConfig keys")
    p.add_argument("--suite", help="LIBERO suite (default libero_spatial; any working suite of the benchmark)")
    p.add_argument("--suites", help="robustness run: a base suite and its LIBERO-PRO variants, e.g. "
                   "libero_spatial,libero_spatial_swap, or a preset robustness_spatial; one folder per "
                   "suite under --out, tasks paired with the base (eval/robustness.py)")
    p.add_argument("--tasks", help="task indices, e.g. 0,3 or 0-4, or all")
    p.add_argument("--init-states", dest="init_states", help="init state indices, e.g. 0-49")
    p.add_argument("--flow-steps", dest="flow_steps", help="flow steps N to sweep, e.g. 1,2,5,10")
    p.add_argument("--seeds", help="seeds, e.g. 0 or 0-2")
    p.add_argument("--workers", type=int, help="simulator worker processes (default 2)")
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="rows per policy call, padded to this fixed shape (default 1; GPU: = workers)")
    p.add_argument("--max-steps", dest="max_steps", type=int, help="step limit (default: the suite's)")
    p.add_argument("--videos", help="all | failures | first:K | none (default failures)")
    p.add_argument("--latency-budget", dest="latency_budget", action="store_true", default=None,
                   help="inference time costs sim time: the previous action is held ceil(latency/50 ms) steps")
    p.add_argument("--latency-ms", dest="latency_ms", type=float,
                   help="with --latency-budget: a fixed latency instead of the measured one")
    p.add_argument("--device", choices=("cpu", "cuda"), help="policy device (default cpu)")
    p.add_argument("--save-actions", dest="save_actions", action="store_true", default=None,
                   help="also save each episode's executed actions (DIR/actions/*.npy)")
    p.add_argument("--allow-task-transfer", dest="allow_task_transfer", action="store_true", default=None,
                   help="evaluate tasks the checkpoint was not trained on (deliberate transfer tests)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar / summary")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides of the --config file, e.g. eval.workers=1 env.render.fast=true")
    p.set_defaults(func=run)


FLAG_KEYS = ("suite", "tasks", "init_states", "flow_steps", "seeds", "workers", "batch_size", "max_steps",
             "videos", "latency_budget", "latency_ms", "device", "save_actions", "allow_task_transfer")


def build_configs(args: argparse.Namespace):
    """(EvalConfig, EnvConfig) from the parsed ``vla-flow eval`` arguments (see ``eval_configs``)."""
    flags = {key: getattr(args, key, None) for key in FLAG_KEYS}
    return eval_configs(args.config, list(getattr(args, "overrides", None) or []), flags)


def eval_configs(config: str | None, overrides: list[str] = (), flags: dict | None = None):
    """(EvalConfig, EnvConfig) from a config (file or preset), dotted overrides and flag values.

    The one way into evaluation for every command (``eval``, ``quickstart``, ``dagger``): ``config`` is an
    experiment file (its ``eval:`` and ``env:`` sections) or a file of EvalConfig keys; ``flags`` maps
    EvalConfig keys to values that win over the file (None: not given). With an experiment file and no task
    list, the experiment's own ``env.task`` is evaluated. Bad values raise UserError (exit 2).
    """
    from envs.config import EnvConfig
    from eval.config import EvalConfig
    from vla_flow import config as cfgmod

    data, env_data = {}, {}
    raw = cfgmod.read_yaml(cfgmod.resolve_config_path(config)) if config else {}
    experiment = "eval" in raw or "env" in raw or not config
    raw = cfgmod.apply_overrides(raw, list(overrides or []))
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - set(FLAG_KEYS))
    if unknown:
        raise ValueError(f"eval_configs: unknown flag keys {unknown}; expected some of {FLAG_KEYS}")
    if experiment:  # an experiment file: its eval and env sections (other sections are other stages')
        data, env_data = dict(raw.get("eval") or {}), dict(raw.get("env") or {})
        if "tasks" not in data and "task" in env_data and "tasks" not in flags:
            data["tasks"] = _task_index(env_data.get("suite", data.get("suite", "libero_spatial")), env_data["task"])
    else:
        data = raw
    data.update(flags)  # list fields ("1,2,5", "0-49") are parsed by the loader (vla_flow.config.IntList)
    cfg = cfgmod.from_dict(EvalConfig, data, prefix="eval")
    env_data.update({"suite": cfg.suite, "task": 0})
    env_cfg = cfgmod.from_dict(EnvConfig, env_data, prefix="env")
    return cfg, env_cfg


def _task_index(suite: str, task) -> list[int]:
    """The experiment's training task(s) (index, name, list or ``all``) as the default task list to evaluate."""
    if isinstance(task, int):
        return [task]
    from envs.libero import resolve_tasks

    return [t.index for t in resolve_tasks(suite, task)]


def run(args: argparse.Namespace) -> int:
    import os

    from envs.gl import ensure_gl_backend
    from eval.evaluate import hold_out_dir

    ensure_gl_backend()
    if getattr(args, "suites", None):
        return _run_suites(args)
    cfg, env_cfg = build_configs(args)  # bad settings end here, before --out is created or locked
    with hold_out_dir(args.out):  # a writable folder and one writer, checked before anything slow
        df = evaluate_checked(cfg, env_cfg, args.checkpoint, args.out, progress=args.progress)
    if os.environ.get("RANK", "0") == "0":
        print(f"{len(df)} episodes in {args.out}/episodes.parquet")
    return 0


def evaluate_checked(cfg, env_cfg, checkpoint, out, progress: bool = True):
    """The evaluation stage for (EvalConfig, EnvConfig): the folder locked, every check made before the
    (slow) policy load and any worker (``eval.evaluate.validate``), then ``evaluate``; the episodes table."""
    from eval.evaluate import evaluate, hold_out_dir, validate

    with hold_out_dir(out):
        validate(cfg, checkpoint, env_cfg)
        return evaluate(cfg, checkpoint, out, env_cfg=env_cfg, progress=progress)


def _run_suites(args: argparse.Namespace) -> int:
    """``--suites``: the base suite's config from the flags, then one evaluation folder per suite."""
    from eval.robustness import expand_suites, run_suites
    from vla_flow.errors import UserError

    if args.suite:
        raise UserError("pass --suite or --suites, not both (--suites lists the base suite first)")
    suites = expand_suites(args.suites)
    args.suite = suites[0]
    cfg, env_cfg = build_configs(args)
    results = run_suites(cfg, env_cfg, suites, args.checkpoint, args.out, progress=args.progress)
    print(f"{sum(len(df) for df in results.values())} episodes in {len(results)} suites under {args.out}/; "
          f"`vla-flow report {args.out}` writes the robustness table")
    return 0
