"""The suite table: its pooled row equals the pooled counts of the episodes table, errors apart."""
from __future__ import annotations

import pytest

from reports.stats import wilson_interval
from reports.suite import SUITE_ROW, format_suite, published_for, suite_grid, suite_table
from tests.reports.conftest import episode_rows


def test_suite_row_equals_pooled_counts():
    df = episode_rows(inits=range(7), flow_steps=(1, 10), seed=3)
    df.loc[2, ["status", "success"]] = ["error", False]
    table = suite_table(df)
    for n in (1, 10):
        part = df[(df["flow_steps"] == n) & (df["status"] == "ok")]
        row = table[(table["task"] == SUITE_ROW) & (table["flow_steps"] == n)].iloc[0]
        assert (row["successes"], row["n_valid"]) == (int(part["success"].sum()), len(part))
        assert row["n_error"] == int(((df["flow_steps"] == n) & (df["status"] != "ok")).sum())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(row["successes"], row["n_valid"]))
        per_task = table[(table["task"] != SUITE_ROW) & (table["flow_steps"] == n)]
        assert per_task["successes"].sum() == row["successes"] and per_task["n_valid"].sum() == row["n_valid"]
    grid = suite_grid(df)
    assert grid["ns"] == [1, 10] and grid["rows"][0]["task"] == SUITE_ROW
    text = format_suite(df).splitlines()
    assert text[1].startswith("suite") and len(text) == 2 + df["task"].nunique()


def test_published_figures_are_per_suite():
    assert {p.method for p in published_for("libero_spatial")} >= {"OpenVLA", "pi0", "OpenVLA-OFT"}
    assert published_for("libero_spatial_swap") == []


def test_throughput_floor_is_the_work_over_the_cores():
    from reports.throughput import throughput_table

    df = episode_rows(inits=range(3), flow_steps=(1, 10))
    df["env_ms_mean"], df["encode_ms_mean"], df["flow_ms_mean"] = 50.0, 200.0, 10.0
    df["steps"], df["policy_calls"] = 100, 10
    n = len(df)
    work = n * (100 * 0.05 + 10 * 0.2 + 10 * 0.01)  # s
    table = throughput_table(df, cores=2, wall_s=work).set_index("what")
    assert table.loc["physics + render", "seconds"] == pytest.approx(n * 5.0)
    assert table.loc["floor: work / 2 cores", "seconds"] == pytest.approx(work / 2)
    assert table.loc["this run (wall clock)", "of_floor"] == pytest.approx(0.5)  # took twice the floor
