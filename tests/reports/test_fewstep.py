"""reports.fewstep: closed-loop points beside the offline sweep (pure table logic on real files)."""
from __future__ import annotations

import pandas as pd
import pytest

from reports.fewstep import fewstep_table, main
from tests.reports.conftest import RUN_META, episode_rows, make_eval_dir


def _meta(checkpoint: str, solver: str | None = None) -> dict:
    return {**RUN_META, "checkpoint": f"/somewhere/runs/{checkpoint}/checkpoints/last.pt",
            "config": {"solver": solver, "time_grid": None}}


def _with_success(df: pd.DataFrame, n: int, wins: list[bool]) -> pd.DataFrame:
    sub = df[df["flow_steps"] == n].copy()
    sub["success"] = wins
    return sub


@pytest.fixture()
def dirs(tmp_path):
    """teacher N=1/10, student N=1, midpoint N=5; 6 keys each (2 tasks x 3 inits), outcomes chosen by hand."""
    base = episode_rows(flow_steps=(1, 5, 10))
    teacher = pd.concat([_with_success(base, 10, [True, True, True, True, True, False]),
                         _with_success(base, 1, [True, False, False, True, False, False])])
    student = _with_success(base, 1, [True, True, True, False, True, False])
    mid = _with_success(base, 5, [True, True, False, True, True, False])
    return [make_eval_dir(tmp_path / "teacher", teacher, videos=False, meta=_meta("base")),
            make_eval_dir(tmp_path / "student", student, videos=False, meta=_meta("reflow")),
            make_eval_dir(tmp_path / "mid", mid, videos=False, meta=_meta("base", "midpoint"))]


def _offline(path):
    rows = [("base", "euler", 1, 0.010, 0.040, 0.0), ("base", "euler", 10, 0.0002, 0.041, 0.05),
            ("base", "euler", 100, 0.0, 0.042, 0.06), ("reflow", "euler", 1, 0.002, 0.039, 0.0),
            ("reflow", "euler", 100, 0.0, 0.040, 0.008), ("base", "midpoint", 5, 0.001, 0.041, 0.05)]
    path.mkdir()
    pd.DataFrame([{"checkpoint": c, "solver": s, "time_grid": "uniform", "N": n, "nfe": n, "mse_ref": r,
                   "mse_demo": d, "straightness": st, "flow_cpu_ms": 1.0} for c, s, n, r, d, st in rows]
                 ).to_csv(path / "offline.csv", index=False)
    return path


def test_points_reference_and_offline(dirs, tmp_path):
    table, agreement = fewstep_table(dirs, _offline(tmp_path / "off"))
    t = table.set_index(["run", "N"])
    assert list(table["run"]) == ["teacher", "teacher", "student", "mid"]
    assert t.loc[("teacher", 10), "successes"] == 5 and t.loc[("student", 1), "successes"] == 4
    assert t.loc[("mid", 5), ["solver", "nfe"]].tolist() == ["midpoint", 10]
    # student N=1 against teacher N=10 on the same keys: teacher only at key 4, student only at none
    assert t.loc[("student", 1), ["ref_only", "point_only"]].tolist() == [1, 0]
    assert t.loc[("student", 1), "drop_pts"] == pytest.approx(100 / 6)
    assert t.loc[("teacher", 1), ["ref_only", "point_only"]].tolist() == [3, 0]
    assert pd.isna(t.loc[("teacher", 10), "p_ref"])
    assert t.loc[("student", 1), "S_fine"] == pytest.approx(0.008)
    assert t.loc[("student", 1), "mse_ref"] == pytest.approx(0.002)
    # successes 2 (teacher N=1), 4 (student N=1), 4 (mid N=5), 5 (teacher N=10); mse_ref orders them the same
    # way (ties aside), mse_demo does not
    assert agreement["mse_ref"]["points"] == 4
    assert agreement["mse_ref"]["rho"] > 0.9
    assert agreement["mse_demo"]["rho"] < agreement["mse_ref"]["rho"]


def test_cli_bad_ref_is_one_line_error(dirs, capsys):
    assert main([str(d) for d in dirs] + ["--ref", "teacher@7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --ref teacher@7: no such point") and err.count("\n") == 1


def test_rank_agreement_p_is_exact_for_few_points():
    """Four points in perfect order: rho = 1 with exact two-sided p = 2/4! (scipy's t approximation says 0)."""
    from reports.fewstep import rank_agreement

    table = pd.DataFrame({"success_rate": [0.5, 0.6, 0.7, 0.8], "mse_ref": [4.0, 3.0, 2.0, 1.0],
                          "mse_demo": [1.0, 2.0, 4.0, 3.0]})
    a = rank_agreement(table)
    assert a["mse_ref"]["rho"] == pytest.approx(1.0) and a["mse_ref"]["p"] == pytest.approx(2 / 24)
    assert a["mse_demo"]["rho"] == pytest.approx(-0.8) and a["mse_demo"]["p"] == pytest.approx(8 / 24)


def test_a_zero_noise_run_joins_the_offline_rows_of_its_own_scale(tmp_path):
    base = episode_rows(flow_steps=(1, 10))
    meta = {**_meta("base"), "inference": {"solver": "euler", "time_grid": "uniform", "noise_scale": 0.0}}
    dirs = [make_eval_dir(tmp_path / "teacher", base, videos=False, meta=_meta("base")),
            make_eval_dir(tmp_path / "zero", _with_success(base, 1, [True] * 6), videos=False, meta=meta)]
    off = tmp_path / "off"
    off.mkdir()
    pd.DataFrame([{"checkpoint": "base", "solver": "euler", "time_grid": "uniform", "noise_scale": s, "N": n,
                   "nfe": n, "mse_ref": r, "mse_demo": d, "straightness": 0.01, "flow_cpu_ms": 1.0}
                  for s, n, r, d in [(1.0, 1, 0.01, 0.04), (1.0, 10, 0.001, 0.03), (0.0, 1, 0.002, 0.02)]]
                 ).to_csv(off / "offline.csv", index=False)
    table, _ = fewstep_table(dirs, off)
    t = table.set_index(["run", "N"])
    assert t.loc[("zero", 1), "noise_scale"] == 0.0 and t.loc[("teacher", 1), "noise_scale"] == 1.0
    assert t.loc[("zero", 1), "mse_demo"] == pytest.approx(0.02)  # its own scale's row, not the N(0, I) one
    assert t.loc[("teacher", 1), "mse_demo"] == pytest.approx(0.04)
