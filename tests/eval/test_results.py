"""The episode store: exact columns, dedup, error rows replaced on resume, shard merge, run.json guard."""
import json

import pandas as pd
import pytest

from eval.results import COLUMNS, ResultStore, write_run_json
from vla_flow.errors import UserError


def row(init=0, n=1, status="ok", success=False, **kw):
    r = {"task": "t", "task_index": 0, "init_state": init, "flow_steps": n, "seed": 0, "success": success,
         "status": status, "steps": 5, "policy_calls": 1, "wall_s": 1.0, "policy_ms_p50": 2.0,
         "policy_ms_p95": 3.0, "encode_ms_mean": 1.0, "flow_ms_mean": 1.0, "env_ms_mean": 4.0, "video": "",
         "error": ""}
    r.update(kw)
    return r


def test_append_writes_exact_columns_and_reloads(tmp_path):
    store = ResultStore(tmp_path)
    store.append(row(0))
    store.append(row(1, success=True))
    df = pd.read_parquet(tmp_path / "episodes.parquet")
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 and df.success.tolist() == [False, True]
    assert ResultStore(tmp_path).finished() == {(0, 0, 1, 0), (0, 1, 1, 0)}
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_error_rows_are_not_finished_and_get_replaced(tmp_path):
    store = ResultStore(tmp_path)
    store.append(row(0, status="error", error="boom"))
    assert store.finished() == set()
    again = ResultStore(tmp_path)
    again.append(row(0, status="ok", success=True))
    df = again.all_rows()
    assert len(df) == 1 and df.status[0] == "ok"
    again.append(row(0, status="ok", success=True))  # a duplicate never adds a row
    assert len(pd.read_parquet(tmp_path / "episodes.parquet")) == 1


def test_missing_column_is_an_error(tmp_path):
    bad = row(0)
    del bad["video"]
    with pytest.raises(ValueError, match="video"):
        ResultStore(tmp_path).append(bad)


def test_rank_shards_merge_into_one_table(tmp_path):
    ResultStore(tmp_path, 0, 2).append(row(0))
    ResultStore(tmp_path, 1, 2).append(row(1))
    assert ResultStore(tmp_path, 0, 2).finished() == {(0, 0, 1, 0), (0, 1, 1, 0)}
    df = ResultStore(tmp_path, 0, 2).merge()
    assert sorted(df.init_state) == [0, 1]
    assert not list((tmp_path / "shards").glob("*.parquet"))
    assert len(pd.read_parquet(tmp_path / "episodes.parquet")) == 2


def test_run_json_refuses_another_checkpoint(tmp_path):
    write_run_json(tmp_path, {"checkpoint_sha256": "a", "suite": "libero_spatial", "start_time": "t0"})
    meta = write_run_json(tmp_path, {"checkpoint_sha256": "a", "suite": "libero_spatial", "start_time": "t1"})
    assert meta["start_time"] == "t0" and len(meta["resumed_at"]) == 1
    assert json.loads((tmp_path / "run.json").read_text())["start_time"] == "t0"
    with pytest.raises(UserError, match="new --out"):
        write_run_json(tmp_path, {"checkpoint_sha256": "b", "suite": "libero_spatial"})


def test_run_json_keeps_every_invocations_grid(tmp_path):
    """A folder filled by several calls (N=10, then N=1) records each call's grid, not just the latest."""
    base = {"checkpoint_sha256": "a", "suite": "libero_spatial"}
    write_run_json(tmp_path, {**base, "command": "eval --flow-steps 10", "start_time": "t0",
                              "config": {"tasks": [0, 1], "init_states": [0, 1], "flow_steps": [10], "seeds": [0]}})
    meta = write_run_json(tmp_path, {**base, "command": "eval --flow-steps 1", "start_time": "t1",
                                     "config": {"tasks": [0, 1], "init_states": [0], "flow_steps": [1], "seeds": [0]}})
    calls = json.loads((tmp_path / "run.json").read_text())["invocations"]
    assert calls == meta["invocations"] and [c["command"] for c in calls] == ["eval --flow-steps 10", "eval --flow-steps 1"]
    assert [c["flow_steps"] for c in calls] == [[10], [1]] and calls[1]["init_states"] == [0]
    # a run.json written before invocations were recorded: its own call is recovered from command/config
    (tmp_path / "run.json").write_text(json.dumps({**base, "command": "old", "start_time": "t0",
                                                   "config": {"flow_steps": [5]}}))
    calls = write_run_json(tmp_path, {**base, "command": "new", "config": {"flow_steps": [2]}})["invocations"]
    assert [(c["command"], c["flow_steps"], c["time"]) for c in calls][0] == ("old", [5], "t0")
    assert calls[1]["command"] == "new"
