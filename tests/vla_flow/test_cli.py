"""The ``vla-flow`` entry point: every stage's subcommands are registered and errors exit non-zero."""
import subprocess
import sys

import pytest

from vla_flow.cli import COMMAND_MODULES, build_parser, main

EXPECTED = ["tasks", "demos", "train", "predict", "eval", "report", "quickstart", "dagger", "bench"]


def test_all_subcommands_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [c for c in EXPECTED if c not in sub.choices]
    assert not missing, f"subcommands missing from vla-flow: {missing} (modules: {COMMAND_MODULES})"


def test_python_dash_m_and_console_script_agree():
    out = subprocess.run([sys.executable, "-m", "vla_flow", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for command in EXPECTED:
        assert command in out.stdout


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
