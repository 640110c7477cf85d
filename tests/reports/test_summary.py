"""load / summary / paired on hand-made episodes tables and real parquet files."""
import math

import pandas as pd
import pytest

import reports
from reports.summary import (ALL_TASKS, flow_step_pairs, report_summary, short_task_names,
                             standard_comparisons)
from tests.reports.conftest import episode_rows, make_eval_dir
from vla_flow.errors import UserError


def ep(task, init, n, success, status="ok", steps=100, seed=0, p50=10.0, wall=6.0):
    return dict(task=task, task_index=0, init_state=init, flow_steps=n, seed=seed, success=success,
                status=status, steps=steps, policy_calls=20, wall_s=wall, policy_ms_p50=p50,
                policy_ms_p95=2 * p50, encode_ms_mean=1.0, flow_ms_mean=1.0, env_ms_mean=1.0, video="",
                error="" if status == "ok" else "boom")


def test_summary_counts_errors_apart_from_failures():
    df = pd.DataFrame([
        ep("A", 0, 1, True, steps=80, p50=10), ep("A", 1, 1, True, steps=120, p50=12),
        ep("A", 2, 1, False, steps=220, p50=14),
        ep("A", 3, 1, True, status="error", steps=5, p50=100),   # success flag ignored: not valid
        ep("A", 4, 1, False, status="sim_unstable", p50=100),
    ])
    row = reports.summary(df).iloc[0]
    assert (row.n, row.n_error, row.n_valid, row.successes) == (5, 2, 3, 2)
    assert row.success_rate == pytest.approx(2 / 3)           # over valid episodes, not 2/5
    low, high = reports.summary(df)[["ci_low", "ci_high"]].iloc[0]
    assert (low, high) == pytest.approx((0.2077, 0.9385), abs=1e-4)  # Wilson 2/3
    assert row.steps_mean == 100 and row.steps_median == 100  # successes only
    assert row.policy_ms_p50 == 12 and row.policy_ms_p95 == 24  # valid episodes only
    assert row.episodes_per_min == pytest.approx(60 * 5 / 30)


def test_summary_groups_and_all_error_group():
    df = pd.DataFrame([ep("A", 0, 1, True), ep("A", 0, 5, False), ep("B", 0, 1, False, status="timeout")])
    s = reports.summary(df, by=["task", "flow_steps"])
    assert list(zip(s.task, s.flow_steps)) == [("A", 1), ("A", 5), ("B", 1)]
    b = s[s.task == "B"].iloc[0]
    assert b.n_error == 1 and b.n_valid == 0 and math.isnan(b.success_rate) and math.isnan(b.ci_low)
    overall = report_summary(df)
    assert list(overall[overall.task == ALL_TASKS].flow_steps) == [1, 5]
    assert list(reports.summary(df.iloc[:0]).columns[:3]) == ["task", "flow_steps", "n"]
    with pytest.raises(UserError, match="unknown grouping column"):
        reports.summary(df, by=["policy"])


def paired_table():
    """Task A, inits 0..5 at N=1 and N=10: b01 = 3 (inits 0,1,2), b10 = 1 (init 3), init 4 both
    succeed, init 5 errors at N=10 (excluded)."""
    a = [False, False, False, True, True, True]
    b = [True, True, True, False, True, True]
    rows = [ep("A", i, 1, s) for i, s in enumerate(a)]
    rows += [ep("A", i, 10, s, status="error" if i == 5 else "ok") for i, s in enumerate(b)]
    return pd.DataFrame(rows)


def test_paired_discordant_counts_and_exact_p():
    out = reports.paired(paired_table(), a=1, b=10)
    row = out[out.task == ALL_TASKS].iloc[0]
    assert (row.n_pairs, row.n_excluded, row.b01, row.b10) == (5, 1, 3, 1)
    assert row.rate_a == pytest.approx(2 / 5) and row.rate_b == pytest.approx(4 / 5)
    assert row.rate_diff == pytest.approx(0.4)
    assert row.p_value == pytest.approx(0.625)  # 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16


def test_paired_refuses_unpaired_keys():
    df = paired_table()
    df = df[~((df.flow_steps == 10) & (df.init_state.isin([1, 2])))]
    with pytest.raises(UserError) as exc:
        reports.paired(df, a=1, b=10)
    msg = str(exc.value)
    assert "2 key(s) only in N=1" in msg and "('A', 1, 0)" in msg and "('A', 2, 0)" in msg


def test_paired_refuses_duplicate_keys_and_missing_n():
    df = paired_table()
    df = pd.concat([df, df.iloc[[0]]])
    with pytest.raises(UserError, match="sharing an episode key"):
        reports.paired(df, a=1, b=10)
    with pytest.raises(UserError, match="no episodes with flow_steps=7"):
        reports.paired(paired_table(), a=1, b=7)


def test_paired_runs_across_checkpoints(tmp_path):
    base = paired_table()
    other = base.copy()
    other["success"] = ~other["success"]
    make_eval_dir(tmp_path / "ckpt1", base, videos=False)
    make_eval_dir(tmp_path / "ckpt2", other, videos=False)
    df = reports.load([tmp_path / "ckpt1", tmp_path / "ckpt2"])
    assert sorted(df.run.unique()) == ["ckpt1", "ckpt2"]
    out = reports.paired_runs(df, "ckpt1", "ckpt2", flow_steps=1)
    row = out[out.task == ALL_TASKS].iloc[0]
    assert (row.n_pairs, row.b01, row.b10) == (6, 3, 3)
    with pytest.raises(UserError, match="several runs"):
        reports.paired(df, a=1, b=10)
    assert reports.paired(df, a=1, b=10, run="ckpt2").iloc[-1].n_pairs == 5
    titles = [c.title for c in standard_comparisons(df)]
    assert "run ckpt1 (A) vs run ckpt2 (B) at N=10" in titles


def test_flow_step_pairs():
    assert flow_step_pairs([10, 1, 5, 20]) == [(1, 5), (5, 10), (10, 20), (1, 20), (5, 20)]
    assert flow_step_pairs([4]) == []


def test_load_missing_corrupt_and_incomplete(tmp_path):
    with pytest.raises(UserError, match=r"no episodes table at .*episodes\.parquet.*does not exist"):
        reports.load(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "episodes.parquet").write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(UserError, match=r"cannot read .*episodes\.parquet.*rerun `vla-flow eval`"):
        reports.load(bad)
    make_eval_dir(tmp_path / "old", episode_rows().drop(columns=["policy_ms_p95"]), videos=False)
    with pytest.raises(UserError, match=r"lacks required column\(s\) \['policy_ms_p95'\]"):
        reports.load(tmp_path / "old")
    (tmp_path / "old" / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot parse .*run.json"):
        reports.load_run_meta(tmp_path / "old")


def test_short_task_names_keep_what_differs():
    names = ["pick_up_the_black_bowl_on_the_stove_and_place_it_on_the_plate",
             "pick_up_the_black_bowl_next_to_the_plate_and_place_it_on_the_plate", ALL_TASKS]
    short, note = short_task_names(names)
    assert short[names[0]] == "… on the stove …" and short[names[1]] == "… next to the plate …"
    assert short[ALL_TASKS] == ALL_TASKS and note == "pick up the black bowl … and place it on the plate"
    assert short_task_names(["put_a", "put_a_b"]) == ({"put_a": "put a", "put_a_b": "put a b"}, "")
