"""``vla-flow bench``: speed of each stage on this machine, each figure beside its baseline from the same run.

Speed targets live here, never in timed tests. Every subcommand prints its table and, with ``--csv``, writes
it. ``bench all`` runs every stage's benchmark and prints one table with a uniform layout::

    stage, measure, value, unit, baseline, baseline_value, ratio

The stage benchmarks themselves live beside the code they measure (``envs/bench.py``,
``policy/bench.py``, ``train/bench.py``, ``eval/bench.py``); this module only calls them
and formats their rows.
"""
from __future__ import annotations

import argparse
from pathlib import Path

STAGES = ("env", "demos", "policy", "flow", "train", "eval")


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure the pipeline's speed on this machine (prints a table)")
    p.add_argument("stage", choices=("all",) + STAGES, help="which benchmark to run")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--config", default=None,
                   help="experiment YAML or preset for the model/env (default: the stage's own default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device for policy/train benches")
    p.add_argument("--quick", action="store_true", help="fewest repetitions (tests, smoke runs)")
    p.set_defaults(func=run)


def _stage_rows(stage: str, args: argparse.Namespace):
    """Return the stage's rows as a DataFrame (stage-specific columns)."""
    import pandas as pd

    from vla_flow.experiment import load_experiment

    cfg = load_experiment(args.config) if args.config else None
    if stage == "env":
        from envs.bench import bench_env
        env = cfg.env if cfg is not None else None
        rows = bench_env(task=env.task if env else 0, suite=env.suite if env else "libero_spatial",
                         steps=20 if args.quick else 100, block=5 if args.quick else 10)
    elif stage == "demos":
        from envs.bench import bench_demos
        rows = bench_demos(cfg=cfg, quick=args.quick)
    elif stage == "policy":
        from policy.bench import bench_policy
        rows = bench_policy(cfg=cfg.policy if cfg is not None else None, device=args.device, quick=args.quick)
    elif stage == "flow":
        from policy.bench import bench_flow
        rows = bench_flow(cfg=cfg.policy if cfg is not None else None, quick=args.quick)
    elif stage == "train":
        from train.bench import bench_train
        rows = bench_train(cfg=cfg, device=args.device, quick=args.quick)
    else:
        from eval.bench import bench_eval
        rows = bench_eval(cfg=cfg, quick=args.quick)
    return pd.DataFrame(rows)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    stages = STAGES if args.stage == "all" else (args.stage,)
    tables = {}
    for stage in stages:
        print(f"== bench {stage}", flush=True)
        tables[stage] = _stage_rows(stage, args) if len(stages) == 1 else _stage_in_subprocess(stage, args)
        print(tables[stage].to_string(index=False), flush=True)
    table = tables[stages[0]] if len(stages) == 1 else pd.concat(
        [to_uniform(stage, df) for stage, df in tables.items()], ignore_index=True)
    if len(stages) > 1:
        print("\n== vla-flow bench all")
        print(table.to_string(index=False))
    if args.csv:
        from vla_flow.io import atomic_path

        with atomic_path(Path(args.csv)) as tmp:
            table.to_csv(tmp, index=False)
        print(f"wrote {args.csv}")
    return 0


def _stage_in_subprocess(stage: str, args: argparse.Namespace):
    """``bench all``: each stage in a fresh process, so one stage's GL contexts, threads and allocator
    state never touch the next one's figures (and a simulator crash names its stage)."""
    import subprocess
    import sys
    import tempfile

    import pandas as pd

    from vla_flow.errors import UserError

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / f"{stage}.csv"
        argv = [sys.executable, "-m", "vla_flow", "bench", stage, "--csv", str(csv), "--device", args.device]
        argv += (["--config", args.config] if args.config else []) + (["--quick"] if args.quick else [])
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL)
        if proc.returncode != 0 or not csv.is_file():
            raise UserError(f"bench {stage} failed (exit {proc.returncode}); run `vla-flow bench {stage}` "
                            "alone to see why")
        return pd.read_csv(csv)


def to_uniform(stage: str, df):
    """Map one stage's table to (stage, measure, value, unit, baseline, baseline_value, ratio) rows."""
    import pandas as pd

    rows = []

    def add(measure, value, unit, baseline="", baseline_value=float("nan")):
        ratio = value / baseline_value if baseline_value == baseline_value and baseline_value else float("nan")
        rows.append(dict(stage=stage, measure=measure, value=round(float(value), 3), unit=unit,
                         baseline=baseline, baseline_value=round(float(baseline_value), 3), ratio=round(ratio, 2)))

    if stage == "env":
        base = df.set_index("mode")["steps_per_s"]
        for mode, v in base.items():
            add(f"env steps/s, {mode}", v, "steps/s", "cameras_off", base.get("cameras_off", float("nan")))
    elif stage == "demos":
        base = df.set_index("workers")["steps_per_s"]
        for w, v in base.items():
            add(f"demo generation, {w} worker(s)", v, "steps/s", "1 worker", base.get(1, float("nan")))
    elif stage == "policy":
        for _, r in df.iterrows():
            add(f"policy {r['device']} batch {r['batch']} N={r['flow_steps']}{_variant(r)}", r["total_ms"], "ms",
                "image encode", r["encode_ms"])
    elif stage == "flow":
        n_ref = int(df["flow_steps"].max())  # the bench's ratio_p50 is against this N at the same threads/batch
        for _, r in df.iterrows():
            # iterrows upcasts the int columns to float beside the ms ones
            name = f"flow loop {int(r['threads'])} thread(s) batch {int(r['batch'])} N={int(r['flow_steps'])}"
            add(name, r["flow_ms_p50"], "ms", f"N={n_ref}", r["flow_ms_p50"] / r["ratio_p50"])
    elif stage == "train":
        first = df.iloc[0]
        for _, r in df.iterrows():
            add(f"train {r['mode']}, {r['processes']} proc", r["samples_per_s"], "samples/s",
                f"{first['mode']}, {first['processes']} proc", first["samples_per_s"])
    elif stage == "eval":
        first = df.iloc[0]
        for _, r in df.iterrows():
            batch = f", batch {r['batch_size']}" if "batch_size" in r else ""
            add(f"eval {r['harness']}, {r['workers']} worker(s){batch}", r["episodes_per_min"], "episodes/min",
                f"{first['harness']}", first["episodes_per_min"])
    return pd.DataFrame(rows)


def _variant(row) -> str:
    return f" ({row['variant']})" if "variant" in row and isinstance(row["variant"], str) and row["variant"] else ""
