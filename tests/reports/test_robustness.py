"""The robustness report on real folders: robustness.json + one evaluation folder per suite (parquet, MP4s).

The variant below lists its tasks in another order than the base (as ``libero_spatial_with_milk`` does), so
a report that paired by task index instead of by the recorded base task would get other numbers.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reports.robustness import load_episodes, load_meta, paired_drop, robustness_table
from reports.stats import mcnemar_exact
from tests.reports.conftest import RUN_META, make_eval_dir

BASE, VAR = "libero_spatial", "libero_spatial_with_milk"
NAMES = {BASE: ["t_between", "t_next_to_ramekin"], VAR: ["v_between", "v_a", "v_b", "v_c", "v_d", "v_next_to_ramekin"]}
PAIRS = {BASE: {0: 0, 1: 1}, VAR: {0: 0, 5: 1}}  # variant task index -> base task index


def rows(suite: str, outcome, inits=range(6), ns=(1, 10)) -> pd.DataFrame:
    """Episodes of ``suite``; ``outcome(base_task, init, n) -> status`` ('ok-1', 'ok-0' or 'error')."""
    out = []
    for ti, bt in PAIRS[suite].items():
        for init in inits:
            for n in ns:
                status, _, ok = outcome(bt, init, n).partition("-")
                out.append(dict(task=NAMES[suite][ti], task_index=ti, init_state=init, flow_steps=n, seed=0,
                                success=ok == "1", status=status, steps=100, policy_calls=20, wall_s=3.0,
                                policy_ms_p50=50.0, policy_ms_p95=60.0, encode_ms_mean=40.0, flow_ms_mean=5.0,
                                env_ms_mean=2.0, video=f"videos/t{ti}_init{init}_N{n}.mp4" if init < 2 else "",
                                error="" if status == "ok" else "boom"))
    return pd.DataFrame(out)


def base_outcome(bt, init, n):
    return "ok-1" if (init + bt + n) % 3 else "ok-0"


def var_outcome(bt, init, n):
    if (bt, init, n) == (1, 4, 10):
        return "error-0"
    return "ok-1" if (init * 2 + bt) % 4 == 0 or (bt == 0 and init % 2) else "ok-0"


@pytest.fixture(scope="module")
def robust_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust") / "run"
    for suite, outcome in ((BASE, base_outcome), (VAR, var_outcome)):
        make_eval_dir(d / suite, rows(suite, outcome), meta={**RUN_META, "suite": suite})
    info = {s: {"differs": [] if s == BASE else ["scene (objects added)"],
                "pairs": [{"index": i, "base_task": b, "instruction": f"<b>{NAMES[s][i]}</b>", "instruction_source": "base"}
                          for i, b in PAIRS[s].items()]} for s in (BASE, VAR)}
    (d / "robustness.json").write_text(json.dumps({
        "base_suite": BASE, "suites": [BASE, VAR], "suite_info": info, "pairing": "by name"}))
    return d


def test_pairs_follow_the_recorded_base_task_and_drop_equals_pooled_counts(robust_dir):
    meta = load_meta(robust_dir)
    df = load_episodes(robust_dir, meta)
    assert set(df.loc[df.suite == VAR, "base_task"]) == {0, 1}
    assert set(df.loc[(df.suite == VAR) & (df.base_task == 1), "task_index"]) == {5}
    table = robustness_table(df, BASE, [BASE, VAR])
    assert list(table.suite) == [BASE, BASE, VAR, VAR]
    for n in (1, 10):
        r = table[(table.suite == VAR) & (table.flow_steps == n)].iloc[0]
        # pooled counts by hand, over keys valid on both sides
        keys = [(bt, i) for bt in (0, 1) for i in range(6) if var_outcome(bt, i, n).startswith("ok")]
        base_ok = sum(base_outcome(bt, i, n) == "ok-1" for bt, i in keys)
        var_ok = sum(var_outcome(bt, i, n) == "ok-1" for bt, i in keys)
        assert r.n_pairs == len(keys) == (11 if n == 10 else 12)
        assert r.drop_vs_base == pytest.approx((base_ok - var_ok) / len(keys))
        assert r.b10 - r.b01 == base_ok - var_ok
        assert r.p_value == pytest.approx(mcnemar_exact(int(r.b01), int(r.b10)))
        assert r.n_error == (1 if n == 10 else 0) and r.successes == var_ok
    assert table[table.suite == BASE].n_pairs.isna().all()


def test_pairing_by_index_would_differ(robust_dir):
    """Guard for the fixture itself: pairing variant task 5 by index finds nothing, by base task it does."""
    df = load_episodes(robust_dir, load_meta(robust_dir))
    base, var = df[(df.suite == BASE) & (df.flow_steps == 1)], df[(df.suite == VAR) & (df.flow_steps == 1)]
    by_index = var.assign(base_task=var.task_index)
    assert paired_drop(base, by_index)["n_pairs"] == 6 < paired_drop(base, var)["n_pairs"] == 12


def test_duplicate_keys_are_refused(robust_dir):
    from vla_flow.errors import UserError

    df = load_episodes(robust_dir, load_meta(robust_dir))
    base = df[(df.suite == BASE) & (df.flow_steps == 1)]
    with pytest.raises(UserError, match="ambiguous"):
        paired_drop(base, pd.concat([base, base]))


def test_cli_report_writes_table_plot_and_side_by_side_videos(robust_dir, tmp_path, capsys):
    from vla_flow.cli import main

    out = tmp_path / "rep"
    assert main(["report", str(robust_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert VAR in printed and "drop" in printed
    csv = pd.read_csv(out / "robustness.csv")
    assert len(csv) == 4 and np.isfinite(csv.loc[2, "p_value"])
    png = (out / "robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    html = (out / "robustness.html").read_text()
    assert "<b>v_between</b>" not in html and "&lt;b&gt;v_between&lt;/b&gt;" in html  # escaped
    # the group (base task 1, init 0, seed 0, N=1) shows the base's task 1 and the variant's task 5
    assert "run/libero_spatial/videos/t1_init0_N1.mp4\"" in html
    assert "run/libero_spatial_with_milk/videos/t5_init0_N1.mp4\"" in html
    assert html.count("<h3>base task") == 2 * 2 * 2  # 2 base tasks x init 0-1 x 2 N have videos


def test_missing_or_foreign_folders_are_user_errors(robust_dir, tmp_path, capsys):
    from vla_flow.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "robustness.json").write_text(json.dumps({"suites": [BASE]}))
    assert main(["report", str(bad)]) == 2
    assert "base_suite" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "robustness.json").write_text((robust_dir / "robustness.json").read_text())
    assert main(["report", str(empty)]) == 2
    assert "no episodes yet" in capsys.readouterr().err


def test_report_puts_the_expert_ceiling_beside_each_suite(robust_dir, tmp_path, capsys):
    """With DIR/expert/<suite>.parquet (`vla-flow ceiling`), each suite's rows carry the expert's successes over
    its ok episodes (an error is not a failure) and the settle maxima; the page shows them."""
    import shutil

    from vla_flow.cli import main

    d = tmp_path / "run"
    shutil.copytree(robust_dir, d)
    (d / "expert").mkdir()
    # init state 9: a start the policy never ran (episodes use 0-5): cut from the comparison
    for suite, succ, drift in ((BASE, [True, True, True, False], [0.01, 0.02, 0.0, 9.0]),
                               (VAR, [True, False, True, False], [0.1, 2.5, 0.0, 9.0])):
        pd.DataFrame({"suite": suite, "task_index": 0, "base_task": 0, "init_state": [0, 1, 2, 9],
                      "status": ["ok", "ok", "error" if suite == VAR else "ok", "ok"], "success": succ,
                      "steps": 100, "drift_mm": drift, "bowl_tilt_deg": [0.0, 3.0, 1.0, 0.0],
                      "n_warnings": 0}).to_parquet(d / "expert" / f"{suite}.parquet")
    out = tmp_path / "rep"
    assert main(["report", str(d), "--out", str(out)]) == 0
    assert "expert 1/2, drift 2.50 mm" in capsys.readouterr().out
    csv = pd.read_csv(out / "robustness.csv")
    var = csv[csv.suite == VAR].iloc[0]
    assert (var.expert_successes, var.expert_n, var.expert_errors) == (1, 2, 1) and var.drift_mm_max == 2.5
    assert csv[csv.suite == BASE].expert_rate.tolist() == [1.0, 1.0]
    html = (out / "robustness.html").read_text()
    assert "expert (same starts)" in html and "2.50 mm" in html
