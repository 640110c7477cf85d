"""`vla-flow report` on a real small evaluation directory (parquet + run.json + MP4s)."""
import html
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from tests.reports.conftest import RUN_META, TASKS, episode_rows, make_eval_dir
from vla_flow.cli import main

# report_out (conftest): `vla-flow report <tmp>/run_a --out <tmp>/out`, shared with the browser test.


def test_report_writes_all_outputs(report_out, capsys):
    for name in ("summary.csv", "summary.parquet", "speed_quality.png", "report.html"):
        assert (report_out / name).stat().st_size > 0, name
    assert (report_out / "speed_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv, pq = pd.read_csv(report_out / "summary.csv"), pd.read_parquet(report_out / "summary.parquet")
    assert len(csv) == len(pq) == 2 * 3 + 3  # 2 tasks x 3 N, plus 3 all-tasks rows
    row = pq[(pq.task == TASKS[0]) & (pq.flow_steps == 1)].iloc[0]
    assert (row.n, row.n_error, row.n_valid) == (3, 1, 2)  # the fixture's error episode


def test_report_prints_table(eval_dir, tmp_path, capsys):
    assert main(["report", str(eval_dir), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "successes / valid episodes" in printed and "(all tasks)" in printed
    assert re.search(r"\d+\.\d% \[\s*\d+\.\d,\s*\d+\.\d\]", printed)


def test_report_html_escapes_file_text_and_links_videos(report_out, eval_dir):
    page = (report_out / "report.html").read_text()
    assert "<b>alphabet</b>" not in page and html.escape(TASKS[1]) in page
    assert "<script>alert(1)" not in page  # run.json command line is data, not markup
    assert "random_init: true" in page  # the red warning banner
    data = re.search(r'<script type="application/json" id="episodes-data">(.*?)</script>', page, re.S)
    rows = json.loads(data.group(1))["rows"]
    assert len(rows) == 18
    video = rows[0][json.loads(data.group(1))["fields"].index("video")]
    assert video.startswith("../run_a/videos/") and (report_out / video).is_file()


def test_default_out_is_dir_and_several_dirs(tmp_path, capsys):
    a = make_eval_dir(tmp_path / "a", videos=False)
    b = make_eval_dir(tmp_path / "b", episode_rows(seed=1), videos=False)
    assert main(["report", str(a)]) == 0 and (a / "report.html").is_file()
    assert main(["report", str(a), str(b)]) == 2  # several DIRs need --out
    assert "pass --out" in capsys.readouterr().err
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    table = pd.read_csv(tmp_path / "ab" / "summary.csv")
    assert set(table.run) == {"a", "b"}
    page = (tmp_path / "ab" / "report.html").read_text()
    assert "run a (A) vs run b (B) at N=5" in page
    # one random-init warning naming every such run, not one banner (and one clause) per run
    assert page.count('class="banner danger"') == 1 and "runs a, b used a randomly initialised" in page
    assert page.count("<strong>random-init</strong> CLIP") == 1


def test_empty_table_is_a_clear_error(tmp_path, capsys):
    empty = make_eval_dir(tmp_path / "empty", episode_rows().iloc[:0], videos=False)
    assert main(["report", str(empty)]) == 2
    assert "no episodes yet" in capsys.readouterr().err


def test_missing_and_corrupt_episodes_file_exit_2(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "episodes.parquet").write_bytes(b"\x00garbage")
    for d, pattern in ((tmp_path / "empty", "no episodes table at"), (tmp_path / "broken", "cannot read")):
        proc = subprocess.run([sys.executable, "-m", "vla_flow", "report", str(d)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and pattern in proc.stderr and "Traceback" not in proc.stderr


def test_a_homed_run_is_labelled_policy_plus_homing(tmp_path):
    plain = make_eval_dir(tmp_path / "plain", videos=False)
    homed = make_eval_dir(tmp_path / "homed", videos=False, meta={**RUN_META, "home_arm": True})
    assert main(["report", str(plain)]) == 0 and main(["report", str(homed)]) == 0
    assert "policy + homing prefix" not in (plain / "report.html").read_text()
    page = (homed / "report.html").read_text()
    assert "Run homed: policy + homing prefix" in page and "eval.home_arm: true" in page
