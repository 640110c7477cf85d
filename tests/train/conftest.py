"""Fixtures: small real HDF5 files in the LIBERO/robomimic layout, written by ``train.synthetic``."""
from __future__ import annotations

from pathlib import Path

import pytest

from train.synthetic import write_demo_file


@pytest.fixture
def demo_file(tmp_path) -> Path:
    return write_demo_file(tmp_path / "task_demo.hdf5")
