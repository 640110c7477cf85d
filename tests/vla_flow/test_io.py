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
