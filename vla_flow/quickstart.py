"""``vla-flow quickstart``: the whole mission on the real simulator, with no downloads.

demos (scripted expert) -> feature cache + training -> closed-loop evaluation over N -> report.

The experiment config is loaded once (``--config`` plus overrides) and each stage's function is called with
it: the same functions the ``demos``, ``train``, ``eval`` and ``report`` commands call after parsing their
flags (``envs.demos_cli.demos_for_experiment``, ``train.commands.train_experiment``,
``eval.commands.eval_configs`` + ``evaluate_checked``, ``reports.commands.make_report``), so nothing is turned
back into a command line and no setting can drift between stages. Each stage resumes on its own (demos keep finished episodes, training resumes from
``last.pt``, evaluation skips finished episodes), and a stage whose output is complete is skipped, so
rerunning the quickstart after an interruption continues where it stopped.

Outputs under ``--out`` (default ``runs/quickstart``)::

    demos/<task>_demo.hdf5   train/checkpoints/last.pt   eval/episodes.parquet   eval/report.html
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vla_flow.errors import UserError

DEFAULT_CONFIG = "quickstart"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="generate demos, train, evaluate over flow steps and write the report (the main job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="experiment YAML or preset name in configs/ (default: quickstart)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100")
    p.set_defaults(func=run)


def _stage(title: str, what: str, fn, *args, **kwargs):
    """Run one stage function, print its header and time it; returns (result, seconds). A stage's UserError
    says which stage failed and that finished stages are kept."""
    print(f"\n=== {title}: {what}", flush=True)
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except UserError as exc:
        raise UserError(f"quickstart stage '{title}' failed: {exc} (fix it and rerun the same quickstart "
                        "command: finished stages are kept)") from None
    return result, time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from envs.gl import ensure_gl_backend
    from vla_flow.config import resolve_config_path
    from vla_flow.experiment import load_experiment
    from envs.libero import resolve_tasks

    ensure_gl_backend()
    cfg_path = resolve_config_path(args.config)
    cfg = load_experiment(cfg_path, args.overrides)
    tasks = resolve_tasks(cfg.env.suite, cfg.env.task)
    out = Path(args.out)
    overrides = list(args.overrides)
    what = (f"task {tasks[0].index} '{tasks[0].name}'" if len(tasks) == 1
            else f"{len(tasks)} tasks ({', '.join(str(t.index) for t in tasks)})")
    print(f"vla-flow quickstart: {cfg.name} on {cfg.env.suite} {what}")
    print(f"  config {cfg_path}; outputs under {out}")
    if cfg.policy.vision.pretrained == "none":
        print("  WARNING: CLIP encoders are RANDOM-INIT (no weights can be downloaded here); "
              "results are recorded as such in the checkpoint and the report.")
    from envs.demos_cli import demos_for_experiment
    from eval.commands import eval_configs, evaluate_checked
    from reports.commands import OUTPUTS, format_table, make_report
    from train.commands import train_experiment
    from vla_flow.io import disk_errors

    timings = {}
    demo_dir = out / "demos"
    # One demos stage for every task of env.task (one file per task), from the same config object as
    # training and evaluation, so camera size, render mode and settle steps cannot drift.
    reports, timings["demos"] = _stage("demos", f"{len(tasks)} task(s) -> {demo_dir}", demos_for_experiment,
                                       cfg, demo_dir)
    for i, rep in enumerate(reports):
        print(rep.table() if i == 0 else "\n".join(rep.table().splitlines()[1:]))
    data = [demo_dir / f"{task.name}_demo.hdf5" for task in tasks]
    missing = [str(p) for p in data if not p.is_file()]
    if missing:
        raise UserError(f"no demonstration file was written for {', '.join(missing)}; rerun the same "
                        "quickstart command (finished episodes are kept)")
    _, timings["train"] = _stage("train", f"-> {out / 'train'} (resumes from last.pt)", train_experiment, cfg,
                                 out / "train", data, "auto")
    ckpt = out / "train" / "checkpoints" / "last.pt"
    eval_cfg, env_cfg = eval_configs(str(cfg_path), overrides)
    _, timings["eval"] = _stage("eval", f"{ckpt} -> {out / 'eval'}", evaluate_checked, eval_cfg, env_cfg,
                                str(ckpt), out / "eval")
    with disk_errors(out / "eval"):
        table, timings["report"] = _stage("report", f"-> {out / 'eval'}", make_report, [out / "eval"],
                                          out / "eval")
    print(format_table(table))
    print("wrote " + ", ".join(str(out / "eval" / name) for name in OUTPUTS))
    total = sum(timings.values())
    print("\nquickstart finished in {:.1f} min ({})".format(
        total / 60, ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())))
    print(f"report: {(out / 'eval' / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(config=DEFAULT_CONFIG, out="runs/quickstart", overrides=[])))
