"""Atomic writes: a failure mid-write leaves the previous file intact and no temp files behind."""
import json

import pytest

from vla_flow.io import atomic_path, atomic_write_json


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "result.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_atomic_write_uses_the_umask_mode_not_0600(tmp_path):
    import os
    target = tmp_path / "r.json"
    atomic_write_json(target, {})
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_check_run_record_refuses_only_another_commands_record(tmp_path):
    """Each command accepts its own run.json (a resume), no run.json and an unreadable one (its writer moves
    that aside); it refuses a record another command wrote, naming that command."""
    import json

    import pytest

    from vla_flow.errors import UserError
    from vla_flow.io import RUN_RECORD_MARKERS, check_run_record

    records = {cmd: {keys[0]: 1, "data": []} for cmd, keys in RUN_RECORD_MARKERS.items()}
    for mine in RUN_RECORD_MARKERS:
        check_run_record(tmp_path / "none", mine)
        for writer, rec in records.items():
            d = tmp_path / f"{mine}_{writer}"
            d.mkdir()
            (d / "run.json").write_text(json.dumps(rec))
            if writer == mine:
                check_run_record(d, mine)
            else:
                with pytest.raises(UserError, match=f"the record of a `vla-flow {writer}` run, which "
                                                    f"`vla-flow {mine}` would overwrite"):
                    check_run_record(d, mine)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    check_run_record(bad, "eval")
    (bad / "run.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(UserError, match="not a `vla-flow eval` record"):
        check_run_record(bad, "eval")
