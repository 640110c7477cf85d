"""reports.versus: two evaluations of the same keys compared per task (pure logic on small tables)."""
import pandas as pd
import pytest

from reports.versus import main, paired_by_task, read_episodes


def table(successes: dict, n: int = 10, status: str = "ok") -> pd.DataFrame:
    rows = [{"task_index": t, "init_state": k, "seed": 0, "flow_steps": n, "success": s, "status": status}
            for (t, k), s in successes.items()]
    return pd.DataFrame(rows)


def test_counts_gained_lost_and_pooled_row():
    base = table({(0, 0): True, (0, 1): True, (0, 2): False, (1, 0): False, (1, 1): False})
    new = table({(0, 0): True, (0, 1): False, (0, 2): True, (1, 0): True, (1, 1): True, (1, 9): True})
    out = paired_by_task(new, base, 10).set_index("task")
    assert out.loc[0, ["n", "base", "new", "gained", "lost"]].tolist() == [3, 2, 2, 1, 1]
    assert out.loc[1, ["n", "base", "new", "gained", "lost"]].tolist() == [2, 0, 2, 2, 0]  # (1, 9): not in base
    assert out.loc["pooled", ["n", "base", "new", "gained", "lost"]].tolist() == [5, 2, 4, 3, 1]
    assert out.loc["pooled", "McNemar p"] == pytest.approx(0.625)  # two-sided exact binomial: 1 of 4 discordant


def test_other_n_and_errored_episodes_do_not_pair():
    base = table({(0, 0): True, (0, 1): True})
    new = pd.concat([table({(0, 0): False}), table({(0, 1): False}, status="error"), table({(0, 1): True}, n=1)])
    out = paired_by_task(new, base, 10).set_index("task")
    assert out.loc["pooled", "n"] == 1 and out.loc["pooled", "lost"] == 1


def test_cli_reads_folders_and_refuses_overlap_and_missing(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    table({(0, 0): True, (0, 1): False}).to_parquet(a / "episodes.parquet")
    table({(0, 0): False, (0, 1): False}).to_parquet(b / "episodes.parquet")
    assert main([str(a), "--base", str(b)]) == 0
    assert "pooled" in capsys.readouterr().out
    with pytest.raises(ValueError, match="overlap"):
        read_episodes([a, a / "episodes.parquet"])
    assert main([str(a), str(a), "--base", str(b)]) == 2
    assert main([str(tmp_path / "nope"), "--base", str(b)]) == 2
    assert main([str(a), "--base", str(b), "--flow-steps", "1"]) == 2
    assert capsys.readouterr().err.count("error: ") == 3


def test_a_one_step_run_against_the_base_at_another_n(tmp_path, capsys):
    """--base-flow-steps: the student's N=1 paired with the teacher's N=10 on the same keys."""
    base = pd.concat([table({(0, 0): True, (0, 1): True}), table({(0, 0): False, (0, 1): False}, n=1)])
    new = table({(0, 0): True, (0, 1): False}, n=1)
    out = paired_by_task(new, base, 1, base_flow_steps=10).set_index("task")
    assert out.loc["pooled", ["n", "base", "new", "gained", "lost"]].tolist() == [2, 2, 1, 0, 1]
    assert paired_by_task(new, base, 1).set_index("task").loc["pooled", "base"] == 0  # same N: base's N=1 rows
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    new.to_parquet(a / "episodes.parquet")
    base.to_parquet(b / "episodes.parquet")
    assert main([str(a), "--base", str(b), "--flow-steps", "1", "--base-flow-steps", "10"]) == 0
    assert main([str(a), "--base", str(b), "--flow-steps", "1", "--base-flow-steps", "5"]) == 2
    assert "base at N=5" in capsys.readouterr().err
