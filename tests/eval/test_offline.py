"""`vla-flow sweep-offline` on a real tiny checkpoint: table, CSV, PNG, the held-out split, bad input."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.train.test_reflow import train_tiny
from vla_flow.cli import main as cli_main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("tiny_offline"))


def test_sweep_writes_table_csv_png_on_the_validation_split(tiny_run, tmp_path, capsys):
    ckpt, _ = tiny_run
    out = tmp_path / "off"
    code = cli_main(["sweep-offline", "--checkpoint", str(ckpt), "--out", str(out), "--flow-steps", "1,2,4",
                     "--solvers", "euler,midpoint", "--reference-steps", "4", "--max-frames", "8",
                     "--noise-scales", "1,0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mse_ref" in printed and "straightness" in printed
    both = pd.read_csv(out / "offline.csv")
    assert list(both.columns) == ["checkpoint", "solver", "time_grid", "noise_scale", "N", "nfe", "mse_demo",
                                  "mse_ref", "straightness", "flow_cpu_ms"]
    assert len(both) == 12 and sorted(set(both.noise_scale)) == [0.0, 1.0]
    df, zero = both[both.noise_scale == 1.0], both[both.noise_scale == 0.0].set_index(["solver", "N"])
    assert zero.loc[("euler", 4), "mse_ref"] == 0.0  # its reference starts from the same (zero) x0
    # from the centre the path is another one: the scale reaches the sampler
    assert not (zero["mse_demo"].to_numpy() == df.set_index(["solver", "N"])["mse_demo"].to_numpy()).any()
    assert len(df) == 6 and (df.checkpoint == "run").all()
    euler, mid = df[df.solver == "euler"].set_index("N"), df[df.solver == "midpoint"].set_index("N")
    assert euler.loc[4, "mse_ref"] == 0.0  # the reference is Euler with 4 steps from the same noise
    assert list(mid.nfe) == [2, 4, 8] and list(euler.nfe) == [1, 2, 4]
    assert euler.loc[1, "straightness"] < 1e-10  # one velocity: a one-step path is straight by construction
    assert (df.straightness >= 0).all() and (df.mse_demo > 0).all() and (df.flow_cpu_ms >= 0).all()
    assert (out / "offline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    used = json.loads((out / "offline.json").read_text())["checkpoints"][0]
    assert used["split"] == "validation" and 0 < used["frames"] <= 8 and used["samples"] == 2 * used["frames"]


@pytest.mark.parametrize("flags,message", [
    (["--flow-steps", "0,1"], "num_steps: 0; expected a positive integer"),
    (["--solvers", "rk4"], "solver: 'rk4' does not exist; expected one of euler, midpoint"),
    (["--time-grids", "log"], "time_grid: 'log' does not exist"),
    (["--flow-steps", "x"], "cannot parse"),
    (["--noise-scales", "1,-1"], "--noise-scales '1,-1': expected a comma list of numbers in [0, 10]"),
])
def test_bad_input_exits_2_before_loading(flags, message, tmp_path, capsys):
    code = cli_main(["sweep-offline", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")] + flags)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_checkpoint_and_missing_data_are_clear_errors(tiny_run, tmp_path, capsys):
    ckpt, _ = tiny_run
    assert cli_main(["sweep-offline", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert cli_main(["sweep-offline", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                     "--data", str(tmp_path / "gone.hdf5")]) == 2
    assert "is not accessible" in capsys.readouterr().err


def test_two_checkpoints_with_one_label_are_refused_before_loading(tmp_path, capsys):
    """offline.csv names a checkpoint by its run folder or file stem; two exported ``policy.pt`` files of
    different runs would be indistinguishable there (and in reports.fewstep's join)."""
    a, b = tmp_path / "run_a" / "policy.pt", tmp_path / "run_b" / "policy.pt"
    code = cli_main(["sweep-offline", "--checkpoint", str(a), str(b), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "both be labelled 'policy'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
