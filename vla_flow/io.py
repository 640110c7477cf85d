"""Atomic file writes and disk faults: a crash, SIGKILL or full disk never leaves a truncated file.

Write to a temp file in the same folder (same filesystem, so the rename is atomic), fsync, then
``os.replace`` onto the final name. Readers see either the old file or the new one, never half of one.

Disk faults (full disk, read-only filesystem, no permission, file size limit) are translated into one
``UserError`` line that names the file and the fix (``disk_error``); every atomic write does it, and the
commands wrap their whole run in ``disk_errors`` for writers that do not go through ``atomic_path``.
``check_output_dir`` validates an output folder before any expensive work (model load, cache, simulation).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from vla_flow.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)

KEPT = "rerun the same command (finished work is kept)"
# Libraries that wrap the OS error in their own type (pyarrow, h5py, imageio's ffmpeg) keep its text.
_PHRASES = {"no space left on device": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
            "read-only file system": errno.EROFS, "file too large": errno.EFBIG}
_ERRNO_RE = re.compile(r"\[errno (\d+)\]|errno = (\d+)")
_TEXT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def _errno_of(exc: BaseException) -> Optional[int]:
    """The disk-related errno behind ``exc``: its own or a cause's ``OSError.errno``, else one its text
    names (``[Errno 28]``, "No space left on device", ...; wrappers such as pyarrow or ffmpeg keep only
    the text). None when ``exc`` is not a disk fault."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 6:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in (*_TEXT_ERRNOS, errno.EACCES, errno.EPERM):
            return e.errno
    for e in chain:
        text = str(e).lower()
        m = _ERRNO_RE.search(text)
        if m and int(m.group(1) or m.group(2)) in _TEXT_ERRNOS:
            return int(m.group(1) or m.group(2))
        for phrase, code in _PHRASES.items():
            if phrase in text:
                return code
    return None


def disk_error(exc: BaseException, path: str | Path) -> Optional[UserError]:
    """A one-line UserError for a disk fault while writing ``path``, or None if ``exc`` is not one."""
    if isinstance(exc, UserError):
        return None
    code = _errno_of(exc)
    cause, depth = exc, 0
    while cause is not None and not (isinstance(cause, OSError) and cause.filename) and depth < 6:
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    if isinstance(cause, OSError) and cause.filename:
        path = cause.filename  # the file itself, when the OS error names it
    if code in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"no space left on device while writing {path}; free space and {KEPT}")
    if code == errno.EFBIG:
        return UserError(f"file size limit reached while writing {path} (ulimit -f); raise the limit or "
                         f"free space and {KEPT}")
    if code == errno.EROFS:
        return UserError(f"cannot write {path}: read-only file system; write to a writable folder (another "
                         f"--out) or remount it read-write, then {KEPT}")
    if code in (errno.EACCES, errno.EPERM):
        return UserError(f"cannot write {path}: permission denied; write to a folder you can write to "
                         f"(another --out) or fix its permissions, then {KEPT}")
    return None


@contextlib.contextmanager
def disk_errors(path: str | Path) -> Iterator[None]:
    """Re-raise a disk fault inside the block as ``disk_error(exc, path)``; anything else unchanged."""
    try:
        yield
    except Exception as exc:
        err = disk_error(exc, path)
        if err is None:
            raise
        raise err from exc


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create ``path`` if needed and prove it writable (a 1-byte probe file); raise UserError with the fix.

    Catches, before any expensive work: a path that is a file, a path under a file, a folder that cannot
    be created (``/proc/x``), a read-only filesystem, no permission, and a disk with no space left.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: is an existing file, not a folder; pick another {flag} "
                        "(or move the file away)")
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise UserError(f"{flag} {p}: {anc} is a file, so no folder can be created under it; "
                        f"pick another {flag}")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=p)
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        err = disk_error(exc, p)
        if err is not None and exc.errno not in (errno.EACCES, errno.EPERM):
            raise err from None
        raise UserError(f"{flag} {p}: cannot create or write this folder ({exc.strerror or exc}); "
                        f"pick a folder you can write to as {flag}") from None
    return p


# Keys that mark each command's DIR/run.json (present in every record it ever wrote, none in another's).
RUN_RECORD_MARKERS = {"eval": ("checkpoint_sha256",), "train": ("total_steps",), "reflow": ("teacher",)}


def check_run_record(path: str | Path, command: str, flag: str = "--out") -> None:
    """Refuse an output folder whose ``run.json`` is another command's record, before any work.

    Why: each command writes DIR/run.json; `vla-flow eval --out` pointed at a reflow or training folder
    merged its record into theirs (the only check compared keys the foreign record lacks) and the
    reflow's run record was lost. ``command``: a key of ``RUN_RECORD_MARKERS``. A record that is not
    valid JSON is left to the writer (which moves it aside)."""
    rec_path = Path(path) / "run.json"
    if not rec_path.is_file():
        return
    try:
        rec = json.loads(rec_path.read_text())
    except (ValueError, UnicodeDecodeError, OSError):
        return
    if not isinstance(rec, dict) or any(k in rec for k in RUN_RECORD_MARKERS[command]):
        return
    other = next((c for c, keys in RUN_RECORD_MARKERS.items() if any(k in rec for k in keys)), None)
    what = f"the record of a `vla-flow {other}` run" if other else "not a `vla-flow " + command + "` record"
    raise UserError(f"{flag} {path}: its run.json is {what}, which `vla-flow {command}` would overwrite; "
                    f"pick a new {flag} folder (e.g. {Path(path).name}_{command})")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on clean exit it is renamed onto ``path``, else removed.

    A disk fault (full disk, read-only, ...) anywhere in the block becomes a UserError naming ``path``."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable by others
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
