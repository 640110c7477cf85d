"""The expert ceiling of a robustness run (``vla-flow ceiling``): real benchmark files, the real simulator."""
from __future__ import annotations

import pandas as pd
import pytest

from vla_flow.errors import UserError


def test_plan_pairs_tasks_and_clips_init_states_like_the_robustness_run():
    from eval.ceiling import plan

    plans = plan("libero_spatial_with_milk,libero_spatial_lan", "1", list(range(12)))
    assert [s for s, _, _ in plans] == ["libero_spatial", "libero_spatial_with_milk", "libero_spatial_lan"]
    assert [[t.index for t in specs] for _, specs, _ in plans] == [[1], [5], [1]]  # with_milk lists it 5th
    assert [len(states) for _, _, states in plans] == [12, 10, 12]
    with pytest.raises(UserError, match="unknown task index \\[10\\]"):
        plan("robustness_spatial", "10", [0])
    with pytest.raises(UserError, match="did you mean libero_spatial_swap"):
        plan("libero_spatial_swpa", "0", [0])


@pytest.mark.sim
def test_ceiling_runs_the_expert_and_the_settle_check_and_resumes(tmp_path, capsys):
    """Task 0, init state 0, on the base and _swap: the expert solves both (it reads _swap's own goal), the
    objects stay put after settling, the report-side summary counts them, and a rerun runs nothing."""
    from eval.ceiling import load_ceiling, summarize
    from vla_flow.cli import main

    cmd = ["ceiling", "--suites", "libero_spatial,libero_spatial_swap", "--tasks", "0", "--init-states", "0",
           "--workers", "1", "--out", str(tmp_path)]
    assert main(cmd) == 0
    printed = capsys.readouterr().out
    assert "libero_spatial_swap" in printed and "1/1" in printed
    df = load_ceiling(tmp_path)
    assert sorted(df.suite) == ["libero_spatial", "libero_spatial_swap"]
    assert df.status.tolist() == ["ok", "ok"] and df.success.all() and (df.steps > 20).all()
    assert (df.drift_mm < 1.0).all() and (df.n_warnings == 0).all() and (df.base_task == 0).all()
    s = summarize(df)
    assert s.expert_successes.tolist() == [1, 1] and s.expert_rate.tolist() == [1.0, 1.0]
    files = sorted((tmp_path / "expert").glob("*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert main(cmd) == 0  # resume: every suite's file covers the grid
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert len(pd.read_parquet(files[0])) == 1
    # a file written before a settle column existed: the rerun fills it in without rerunning the expert
    old = pd.read_parquet(files[1]).drop(columns=["drift_object"]).assign(steps=7)
    old.to_parquet(files[1], index=False)
    assert main(cmd) == 0
    new = pd.read_parquet(files[1])
    assert new.drift_object.tolist() != [""] and new.steps.tolist() == [7]  # expert rows kept as they were
    assert new.drift_mm.tolist() == pytest.approx(df[df.suite == "libero_spatial_swap"].drift_mm.tolist())


def test_bad_input_is_one_line_before_any_simulator(tmp_path, capsys, monkeypatch):
    import envs.workers
    from vla_flow.cli import main

    monkeypatch.setattr(envs.workers.EnvWorker, "__init__", lambda *a, **k: pytest.fail("a worker started"))
    cases = [(["--suites", "libero_spatial,libero_spatial_with_milk", "--init-states", "10-12"],
              "libero_spatial_with_milk ships 10 init states"),
             (["--suites", "libero_spatial", "--workers", "0"], "--workers 0"),
             (["--suites", "libero_spatial", "--init-states", "a-b"], "--init-states")]
    for flags, message in cases:
        assert main(["ceiling", "--out", str(tmp_path / "o"), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)
