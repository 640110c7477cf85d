"""``vla-flow quickstart``: the whole mission on the real simulator, with no downloads.

demos (scripted expert) -> feature cache + training -> closed-loop evaluation over N -> report.

Each stage is one ``vla-flow`` subcommand run in this process, so the quickstart exercises exactly what users
run by hand. Each stage resumes on its own (demos keep finished episodes, training resumes from
``last.pt``, evaluation skips finished episodes), and a stage whose output is complete is skipped, so
rerunning the quickstart after an interruption continues where it stopped.

Outputs under ``--out`` (default ``runs/quickstart``)::

    demos/<task>_demo.hdf5   train/checkpoints/last.pt   eval/episodes.parquet   eval/report.html
"""
from __future__ import annotations

import argparse
import shlex
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


def _stage(title: str, argv: list[str]) -> float:
    """Run one vla-flow subcommand in-process; raise UserError if it fails."""
    from vla_flow.cli import main

    print(f"\n=== {title}: vla-flow {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise UserError(f"quickstart stage '{title}' failed (exit {code}); fix the error above and rerun "
                        "the same quickstart command: finished stages are kept")
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from vla_flow.config import resolve_config_path
    from vla_flow.experiment import load_experiment
    from envs.libero import resolve_tasks

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
    timings = {}
    demo_dir = out / "demos"
    # One demos command for every task of env.task (one file per task), reading the same config and
    # overrides as training and evaluation, so camera size, render mode and settle steps cannot drift.
    timings["demos"] = _stage("demos", ["demos", "--config", str(cfg_path), "--out", str(demo_dir), *overrides])
    data = [demo_dir / f"{task.name}_demo.hdf5" for task in tasks]
    missing = [str(p) for p in data if not p.is_file()]
    if missing:
        raise UserError(f"no demonstration file was written for {', '.join(missing)}; rerun the same "
                        "quickstart command (finished episodes are kept)")
    timings["train"] = _stage("train", [
        "train", "--config", str(cfg_path), "--out", str(out / "train"), "--resume", "auto",
        *[a for d in data for a in ("--data", str(d))], *overrides])
    ckpt = out / "train" / "checkpoints" / "last.pt"
    timings["eval"] = _stage("eval", [
        "eval", "--checkpoint", str(ckpt), "--config", str(cfg_path), "--out", str(out / "eval"),
        *overrides])
    timings["report"] = _stage("report", ["report", str(out / "eval")])
    total = sum(timings.values())
    print("\nquickstart finished in {:.1f} min ({})".format(
        total / 60, ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())))
    print(f"report: {(out / 'eval' / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(config=DEFAULT_CONFIG, out="runs/quickstart", overrides=[])))
