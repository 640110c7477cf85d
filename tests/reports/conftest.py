"""Fixtures for the reports tests: real evaluation directories (parquet + run.json + MP4s) built on disk.

``make_eval_dir`` writes exactly what docs/interfaces.md promises the evaluator writes, so the report is
tested against the contract while the evaluator is built in parallel.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TASKS = ["pick up the black bowl next to the plate and place it on the plate",
         "pick up the <b>alphabet</b> soup & place it in the basket"]  # markup: must come out escaped


def episode_rows(tasks=TASKS, inits=(0, 1, 2), flow_steps=(1, 5, 10), seeds=(0,), seed=0) -> pd.DataFrame:
    """A synthetic episodes table in the contract's columns; success is likelier at larger N."""
    rng = np.random.default_rng(seed)
    rows = []
    for ti, task in enumerate(tasks):
        for init in inits:
            for s in seeds:
                for n in flow_steps:
                    ok = rng.random() < min(0.9, 0.3 + 0.1 * n)
                    p50 = 4.0 + 1.5 * n + rng.random()
                    rows.append(dict(
                        task=task, task_index=ti, init_state=init, flow_steps=n, seed=s, success=bool(ok),
                        status="ok", steps=int(rng.integers(60, 200)) if ok else 220, policy_calls=40,
                        wall_s=float(5 + rng.random()), policy_ms_p50=p50, policy_ms_p95=p50 * 1.3,
                        encode_ms_mean=3.0, flow_ms_mean=1.5 * n, env_ms_mean=2.0,
                        video=f"videos/t{ti}_init{init}_N{n}_seed{s}_{'success' if ok else 'failure'}.mp4",
                        error=""))
    return pd.DataFrame(rows)


def write_video(path: Path, color: tuple[int, int, int], frames: int = 12, size: int = 64) -> None:
    """A small real H.264 MP4 (a square moving across a coloured background)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=10, codec="libx264", macro_block_size=16,
                            ffmpeg_log_level="error") as w:
        for i in range(frames):
            img = np.zeros((size, size, 3), np.uint8)
            img[:] = color
            x = 4 + i * (size - 20) // frames
            img[24:40, x:x + 16] = 255
            w.append_data(img)


RUN_META = {
    "checkpoint": {"path": "runs/demo/checkpoint.pt", "sha256": "ab" * 32},
    "encoder": {"name": "ViT-B-32", "pretrained": "none", "random_init": True},
    "suite": "libero_spatial", "device": "cpu", "render": {"mode": "fast", "camera_size": 128},
    "step_limits": {"libero_spatial": 220}, "settle_steps": 10,
    "versions": {"torch": "2.14.1", "mujoco": "3.3.2", "robosuite": "1.4.0", "libero": "0.1.1"},
    "command": "vla-flow eval --flow-steps 1 5 10 </script><script>alert(1)</script>",
    "start_time": "2026-11-25T10:00:00",
}


def make_eval_dir(path: Path, df: pd.DataFrame | None = None, videos: bool = True,
                  meta: dict | None = None) -> Path:
    """Write ``episodes.parquet``, ``run.json`` and (optionally) one real MP4 per episode under ``path``."""
    df = episode_rows() if df is None else df
    path.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "episodes.parquet", index=False)
    (path / "run.json").write_text(json.dumps(RUN_META if meta is None else meta))
    if videos:
        cache: dict[str, Path] = {}
        for video, ok in zip(df["video"], df["success"]):
            if not video:
                continue
            kind = "ok" if ok else "fail"
            if kind not in cache:  # encode one clip per outcome, copy the rest (fast)
                cache[kind] = path / f"_{kind}.mp4"
                write_video(cache[kind], (30, 120, 60) if ok else (140, 40, 40))
            (path / video).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cache[kind], path / video)
    return path


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory) -> Path:
    """A small real evaluation directory shared by the CLI and browser tests (read-only for them)."""
    df = episode_rows()
    df.loc[3, ["status", "success", "error"]] = ["error", False, "RuntimeError: <worker> crashed"]
    return make_eval_dir(tmp_path_factory.mktemp("eval") / "run_a", df)


@pytest.fixture(scope="session")
def report_out(eval_dir) -> Path:
    """`vla-flow report` of ``eval_dir`` into a sibling folder ``out`` (videos linked as ../run_a/...)."""
    from vla_flow.cli import main

    out = eval_dir.parent / "out"
    assert main(["report", str(eval_dir), "--out", str(out)]) == 0
    return out
