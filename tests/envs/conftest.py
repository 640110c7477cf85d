"""Shared simulator fixtures: envs are expensive (seconds to build), so each is built once per session.

All use libero_spatial task 5 (the black bowl on the ramekin, the init states most sensitive to the
MuJoCo version). ``spatial_env`` renders agentview + wrist at 128x128 like the protocol, but resets softly
(0.25 s instead of ~1.5 s; ``test_soft_reset_is_bit_identical_to_hard_reset`` shows it changes nothing).
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TASK = 5


@pytest.fixture(scope="session")
def spatial_env():
    from envs.config import EnvConfig
    from envs.libero import LiberoEnv

    env = LiberoEnv(cfg=EnvConfig(suite="libero_spatial", task=TASK, reset="soft"))
    yield env
    env.close()


@pytest.fixture(scope="session")
def physics_envs():
    """(hard, soft) reset envs of the same task without cameras (no GL context): for equivalence checks."""
    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv

    envs = [LiberoEnv(cfg=EnvConfig(suite="libero_spatial", task=TASK, reset=mode, render=RenderConfig(cameras=[])))
            for mode in ("hard", "soft")]
    yield envs
    for env in envs:
        env.close()
