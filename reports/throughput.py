"""Where an evaluation's time goes, and how close its throughput came to what the machine allows.

The floor: every episode needs its physics and rendering (``env_ms_mean`` x ``steps``, measured inside the
worker), its image encodes (``encode_ms_mean`` x ``policy_calls``) and its flow loops (``flow_ms_mean`` x
``policy_calls``). On ``cores`` cores, perfectly packed with no other cost, the run cannot take less than
(sum of that work) / cores, so the floor throughput is episodes / that time. A run's measured throughput
(episodes / its wall-clock time) over the floor says how much of the machine the harness turned into
episodes; the rest went to resets, settle steps, waiting, video encoding and process overhead, which the
floor leaves out on purpose (they are the overhead to find).

    python -m reports.throughput DIR [--cores 2] [--wall-s S]

``--wall-s`` defaults to the ``elapsed_s`` that ``vla-flow eval`` records in ``run.json``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def work_seconds(df: "pd.DataFrame") -> dict[str, float]:
    """Summed per-episode work (s) by component over the valid (status ``ok``) episodes."""
    ok = df[df["status"] == "ok"]
    env = (ok["env_ms_mean"].fillna(0) * ok["steps"]).sum() / 1e3
    encode = (ok["encode_ms_mean"].fillna(0) * ok["policy_calls"]).sum() / 1e3
    flow = (ok["flow_ms_mean"].fillna(0) * ok["policy_calls"]).sum() / 1e3
    return {"physics + render": float(env), "image encode": float(encode), "flow loop": float(flow)}


def throughput_table(df: "pd.DataFrame", cores: int, wall_s: float | None) -> "pd.DataFrame":
    """Rows: each work component (seconds, share), the floor and, given ``wall_s``, the measured run.

    Columns: ``what``, ``seconds``, ``share`` (of the work), ``episodes_per_min``, ``of_floor``.
    """
    import pandas as pd

    if cores < 1:
        raise ValueError(f"cores: {cores} must be >= 1")
    work = work_seconds(df)
    total = sum(work.values())
    n = int((df["status"] == "ok").sum())
    rows = [{"what": k, "seconds": v, "share": v / total if total else float("nan"),
             "episodes_per_min": float("nan"), "of_floor": float("nan")} for k, v in work.items()]
    floor_s = total / cores
    floor_rate = 60.0 * n / floor_s if floor_s > 0 else float("nan")
    rows.append({"what": f"floor: work / {cores} cores", "seconds": floor_s, "share": float("nan"),
                 "episodes_per_min": floor_rate, "of_floor": 1.0})
    if wall_s:
        rate = 60.0 * n / wall_s
        rows.append({"what": "this run (wall clock)", "seconds": float(wall_s), "share": float("nan"),
                     "episodes_per_min": rate, "of_floor": rate / floor_rate if floor_rate else float("nan")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    p = argparse.ArgumentParser(prog="python -m reports.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="an evaluation folder (episodes.parquet, run.json)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the run had (default: this machine's)")
    p.add_argument("--wall-s", dest="wall_s", type=float, help="the run's wall-clock seconds (default: run.json)")
    args = p.parse_args(argv)
    d = Path(args.dir)
    df = pd.read_parquet(d / "episodes.parquet")
    wall = args.wall_s
    if wall is None and (d / "run.json").is_file():
        wall = json.loads((d / "run.json").read_text()).get("elapsed_s")
    table = throughput_table(df, args.cores, wall)
    with pd.option_context("display.float_format", lambda x: f"{x:.3g}", "display.width", 120):
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
