"""Two evaluations of the same episodes, compared per task: successes, gained / lost and the exact McNemar p.

Why: a lever is measured by running the changed policy (or evaluation setting) on the episode keys an earlier
run already holds; only the discordant episodes say anything (``reports.stats``). Episodes pair by
(task_index, init_state, seed) at one N, and only keys both tables hold with ``status == ok`` count.

    python -m reports.versus runs/suite_home/eval --base docs/results/suite_long --flow-steps 10
    python -m reports.versus STUDENT_EVAL --base docs/results/suite_long --flow-steps 1 --base-flow-steps 10

Each of ``NEW`` / ``--base`` is an eval folder (its ``episodes.parquet``) or a parquet file; several ``NEW``
folders (each a part of the grid) are read as one table. ``reports.paired_runs`` does the same pairing on
a table loaded from several folders (``reports.load``); this module adds the per-task table with intervals
for folders that each hold a part of the grid, and a CLI. Not named ``paired``: ``reports.paired`` is the
package's function.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from reports.stats import mcnemar_exact, wilson_interval

KEY = ["task_index", "init_state", "seed"]


def read_episodes(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The episodes of eval folders / parquet files as one table; a key given twice is an error."""
    frames = []
    for p in map(Path, paths):
        f = p / "episodes.parquet" if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no episodes table; pass an eval --out folder or its episodes.parquet")
        frames.append(pd.read_parquet(f))
    table = pd.concat(frames, ignore_index=True)
    if table.duplicated(KEY + ["flow_steps"]).any():
        raise ValueError("the tables overlap (the same task, init state, seed and N twice); give each once")
    return table


def paired_by_task(new: pd.DataFrame, base: pd.DataFrame, flow_steps: int, names: tuple[str, str] = ("new", "base"),
                   base_flow_steps: int | None = None) -> pd.DataFrame:
    """One row per task of the keys both tables ran at ``flow_steps`` (both ``ok``), then ``pooled``:
    ``n``, the two success counts (named by ``names``), the new one's Wilson 95% interval, ``gained`` (only
    the new succeeds), ``lost`` (only the base) and the exact McNemar p. ``base_flow_steps``: the base's N when
    it differs (a few-step policy against its teacher's N=10 on the same keys)."""
    new_name, base_name = names
    cols = KEY + ["success"]
    base_n = flow_steps if base_flow_steps is None else base_flow_steps
    a = new[(new.flow_steps == flow_steps) & (new.status == "ok")][cols]
    b = base[(base.flow_steps == base_n) & (base.status == "ok")][cols]
    both = a.merge(b, on=KEY, suffixes=("_new", "_base"), validate="one_to_one")
    rows = []
    for task, g in [*both.groupby("task_index"), ("pooled", both)]:
        gained = int((g.success_new & ~g.success_base).sum())
        lost = int((~g.success_new & g.success_base).sum())
        lo, hi = wilson_interval(int(g.success_new.sum()), len(g))
        rows.append({"task": task, "n": len(g), base_name: int(g.success_base.sum()),
                     new_name: int(g.success_new.sum()), f"{new_name} 95% CI": f"[{lo:.2f}, {hi:.2f}]",
                     "gained": gained, "lost": lost, "McNemar p": mcnemar_exact(gained, lost)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports.versus", description=__doc__.split("\n\n")[0])
    p.add_argument("new", nargs="+", help="eval folders or episodes.parquet files of the changed run")
    p.add_argument("--base", required=True, help="eval folder or episodes.parquet of the reference run")
    p.add_argument("--flow-steps", type=int, default=10, help="the N compared (default 10)")
    p.add_argument("--base-flow-steps", type=int, help="the base's N, when it differs (default: --flow-steps)")
    args = p.parse_args(argv)
    try:
        table = paired_by_task(read_episodes(args.new), read_episodes([args.base]), args.flow_steps,
                               base_flow_steps=args.base_flow_steps)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if table.n.iloc[-1] == 0:
        base_n = args.flow_steps if args.base_flow_steps is None else args.base_flow_steps
        print(f"error: no episode key is in both tables (new at N={args.flow_steps}, base at N={base_n}); check "
              "--flow-steps, --base-flow-steps and the folders", file=sys.stderr)
        return 2
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
