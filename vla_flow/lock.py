"""One writer per output folder: an advisory ``fcntl.flock`` on ``DIR/.vla-flow.lock``.

Why flock: the kernel releases it when the holding process dies, however it dies (SIGKILL, OOM, power
loss of a network client aside), so a stale lock can never block a rerun; there is nothing to clean up.
The lock file is never deleted or replaced (that would hand out a second, different lock); it holds the
holder's PID, command line and start time, read by a refused writer to say who holds the folder.

Who locks what (docs/interfaces.md): ``vla-flow eval``, ``train`` and ``demos`` hold their output folder
for the whole run, and a second writer is refused at once (``FolderBusy``, exit 2) before any model load.
Under torchrun rank 0 holds the folder lock; in sharded evaluation every other rank r also holds
``DIR/shards/.rank<r>.lock`` for the shard file it alone writes. Locks are re-entrant within one process
(``vla-flow quickstart`` runs the stages in-process; ``evaluate()`` locks what its command already holds).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from vla_flow.errors import UserError
from vla_flow.io import disk_errors

LOCK_NAME = ".vla-flow.lock"
_HELD: dict[str, list] = {}  # realpath of the lock file -> [fd, depth] held by this process


class FolderBusy(UserError):
    """Another process holds the folder's lock; the message names its PID and command."""


def _holder(fd: int) -> dict:
    """The holder's record; it writes it right after locking, so wait up to 1 s for it to appear."""
    deadline = time.monotonic() + 1.0
    while True:
        raw = os.pread(fd, 4096, 0)
        try:
            return json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError):
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.05)


def _busy_message(folder: Path, info: dict, flag: str) -> str:
    pid = info.get("pid", "unknown")
    cmd = info.get("command", "unknown command")
    since = info.get("started", "?")
    return (f"{folder} is in use by another writer: PID {pid} (`{cmd}`, started {since}); two writers "
            f"would overwrite each other's results. Wait for it to finish (or stop it: kill {pid}), or "
            f"pick another {flag}")


def acquire(path: str | Path, flag: str = "--out", command: Optional[str] = None) -> Path:
    """Lock the lock file ``path`` (created if missing) for this process; FolderBusy if another holds it."""
    path = Path(path)
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        return path
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _holder(fd)
        os.close(fd)
        raise FolderBusy(_busy_message(path.parent if path.name == LOCK_NAME else path, info, flag)) from None
    record = {"pid": os.getpid(), "command": command or " ".join(["vla-flow", *sys.argv[1:]]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        with disk_errors(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
    except BaseException:
        os.close(fd)  # closing releases the lock
        raise
    _HELD[key] = [fd, 1]
    return path


def release(path: str | Path) -> None:
    """Drop one level of this process's hold on ``path``; the last one unlocks (closing the fd)."""
    key = os.path.realpath(path)
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _HELD[key]
        os.close(entry[0])


@contextlib.contextmanager
def hold(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Hold the lock file ``path`` for the block (see ``acquire``)."""
    acquire(path, flag)
    try:
        yield Path(path)
    finally:
        release(path)


def folder_lock(folder: str | Path) -> Path:
    """The lock file of an output folder."""
    return Path(folder) / LOCK_NAME


@contextlib.contextmanager
def hold_folder(folder: str | Path, flag: str = "--out", rank: int | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; under torchrun (``RANK`` > 0) hold nothing: rank 0 holds it."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    if rank != 0:
        yield
        return
    with hold(folder_lock(folder), flag):
        yield
