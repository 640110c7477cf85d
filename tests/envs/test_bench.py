"""The machine-ceiling probe behind the demo-throughput target: P processes step together, real simulator."""
from __future__ import annotations

import pytest


@pytest.mark.sim
def test_bench_scaling_runs_processes_together_and_reports_the_ratio():
    from envs.bench import bench_scaling

    rows = bench_scaling(steps=5)
    assert [(r["mode"], r["processes"]) for r in rows] == [("cameras_off", 1), ("cameras_off", 2)]
    assert rows[0]["ratio"] == 1.0 and rows[1]["steps_per_s"] > 0
    assert rows[1]["ratio"] == round(rows[1]["steps_per_s"] / rows[0]["steps_per_s"], 2)
    assert all(0 < r["cores_per_process"] <= 1.5 for r in rows)  # single-threaded physics, no cameras
