"""Fault injection, as a hostile but fair user would try it: real CLI processes, real files, real disks.

Every case ends with exit 2 and one ``error:`` line that names the problem and the fix (no traceback),
leaves existing files as they were, and after the fix the same command completes. Full and read-only
disks are small tmpfs mounts (we run as root); where ``mount`` is not allowed the full-disk case falls back
to a file size limit (RLIMIT_FSIZE, as ``ulimit -f``), which fails writes with EFBIG instead of ENOSPC.
The README's "Reliability" section lists these cases and their outcomes.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.eval.test_cli import make_checkpoint
from tests.reports.conftest import make_eval_dir
from train.synthetic import write_demo_file
from vla_flow.errors import UserError
from vla_flow.worklog import ENV_VAR as WORK_LOG

KEPT = "rerun the same command (finished work is kept)"


# ------------------------------------------------------------------------------------------ helpers

def cli(*args, timeout: float = 600, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m vla_flow ARGS`` as a user would. ``.work``: the expensive stages it started
    (``vla_flow.worklog``: model, simulator, worker), empty when it stopped before any of them."""
    def limit():  # `ulimit -f` in the child only
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "work.log"
        proc = subprocess.run([sys.executable, "-m", "vla_flow", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "MUJOCO_GL": "egl", WORK_LOG: str(log)},
                              preexec_fn=limit if limit_bytes else None)
        proc.work = [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []
    return proc


def assert_user_error(proc, *words: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line, holding every one of ``words``; returns it."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder`` (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Tmpfs:
    """A small tmpfs at ``path`` (root only); ``usable`` is False where mounting is not allowed."""

    def __init__(self, path: Path, size: str, ro: bool = False):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (",ro" if ro else "")
        self.usable = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                     capture_output=True).returncode == 0

    def fill(self) -> Path:
        """Write a filler file until the disk is full; returns it (delete it to free the space)."""
        filler = self.path / "filler"
        with pytest.raises(OSError), open(filler, "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        return filler

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def close(self) -> None:
        if self.usable:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(name: str, size: str = "256k", ro: bool = False) -> Tmpfs:
        fs = Tmpfs(tmp_path / name, size, ro)
        mounts.append(fs)
        return fs

    yield make
    for fs in mounts:
        fs.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, a tiny demo file, an eval folder for the report and a soft-reset eval config."""
    d = tmp_path_factory.mktemp("faults")
    exp = d / "exp.yaml"
    exp.write_text(yaml.safe_dump({"env": {"reset": "soft"}, "eval": {"call_timeout_s": 240}}))
    return {"ckpt": make_checkpoint(d / "tiny.pt"), "demo": write_demo_file(d / "data" / "task_demo.hdf5"),
            "report_dir": make_eval_dir(d / "evaldir", videos=False), "exp": exp, "dir": d}


def eval_args(files, out, init_states: str = "0") -> list:
    return ["eval", "--checkpoint", files["ckpt"], "--out", out, "--config", files["exp"], "--tasks", "0",
            "--init-states", init_states, "--flow-steps", "1", "--max-steps", "2", "--workers", "1",
            "--videos", "none", "--no-progress"]


def train_args(files, out, *extra) -> list:
    return ["train", "--config", "tiny", "--out", out, "--data", files["demo"], "train.max_steps=2",
            "train.save_every=2", "train.val_every=0", "train.log_every=1", *extra]


# ------------------------------------------------------------------------------- one writer per folder

@pytest.mark.sim
def test_second_writer_is_refused_at_once_and_no_row_is_lost(files, tmp_path):
    """Two evals into one folder (the issue's case): the second is refused while the first runs, naming
    its PID and command. Rerun after the first: both rows, once."""
    out = tmp_path / "ev"
    first = subprocess.Popen([sys.executable, "-m", "vla_flow", *map(str, eval_args(files, out, "0"))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "MUJOCO_GL": "egl"})
    lock = out / ".vla-flow.lock"
    wait_for(lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text(), 120, "the first eval's lock")
    second = cli(*eval_args(files, out, "1"))
    assert_user_error(second, f"PID {first.pid}", "vla-flow eval", "in use", "--out")
    assert second.work == [], second.work  # refused before loading the policy or starting a simulator
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    first.stdout.close(), first.stderr.close()
    again = cli(*eval_args(files, out, "1"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {"model", "worker", "simulator"} <= set(again.work), again.work  # the log sees real work
    df = pd.read_parquet(out / "episodes.parquet")
    assert sorted(df.init_state) == [0, 1] and not df.duplicated(["init_state", "flow_steps", "seed"]).any()
    assert (df.attempts == 1).all() and (df.last_worker_error == "").all()


def test_train_and_demos_refuse_a_held_folder_and_a_killed_holder_leaves_no_stale_lock(files, tmp_path):
    from vla_flow.lock import FolderBusy, acquire, folder_lock, hold, release

    lock = folder_lock(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from vla_flow.lock import acquire; "
                               f"acquire({str(lock)!r}, command='holder'); sys.stdin.read()"],
                              stdin=subprocess.PIPE)
    try:
        wait_for(lambda: lock.exists() and f'"pid": {holder.pid}' in lock.read_text(), 60, "the holder's lock")
        with pytest.raises(FolderBusy, match=f"PID {holder.pid} \\(`holder`"):
            acquire(lock)
        for args in (train_args(files, tmp_path), ["demos", "--task", "0", "--episodes", "1", "--out", tmp_path]):
            assert_user_error(cli(*args), f"PID {holder.pid} (`holder`", "in use", "--out")
        assert holder.poll() is None  # the refusals happened while it held the folder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with hold(lock):  # the kernel dropped the dead holder's lock
        acquire(lock)  # re-entrant in one process (quickstart runs the stages in-process)
        release(lock)
    assert lock.exists()  # never deleted: deleting would hand out a second lock


def test_writers_of_one_table_never_drop_each_others_rows(tmp_path):
    from eval.results import ResultStore
    from tests.eval.test_results import row

    a, b = ResultStore(tmp_path), ResultStore(tmp_path)
    a.append(row(0))
    b.append(row(1))  # b re-reads the file a changed before writing
    a.append(row(2))
    df = pd.read_parquet(tmp_path / "episodes.parquet")
    assert sorted(df.init_state) == [0, 1, 2]


# ---------------------------------------------------------------------------------------- output paths

def test_bad_output_paths_fail_before_any_work(files, tmp_path, tmpfs):
    """--out under /proc, an existing file, a path under a file, a read-only filesystem: exit 2 at once,
    nothing changed. One command per case (all four share vla_flow.io.check_output_dir)."""
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    ro = tmpfs("ro", ro=True)
    cases = [(eval_args(files, "/proc/vla_flow_out"), ["/proc/vla_flow_out", "cannot create or write"]),
             (train_args(files, a_file), ["is an existing file", "pick another --out"]),
             (["demos", "--task", "0", "--episodes", "1", "--out", a_file / "sub"], ["is a file, so no folder"]),
             (["report", files["report_dir"], "--out", a_file / "sub"], ["is a file, so no folder"])]
    if ro.usable:
        cases.append((eval_args(files, ro.path / "ev"), ["read-only file system", "rerun the same command"]))
    for args, words in cases:
        proc = cli(*args)
        assert_user_error(proc, *words)
        assert proc.work == [], (args[0], proc.work)  # no model load, no simulation
    assert a_file.read_text() == "keep me"


def test_check_output_dir_cases(tmp_path, tmpfs):
    from vla_flow.io import check_output_dir

    (tmp_path / "f").write_text("x")
    for bad, words in [(tmp_path / "f", "is an existing file"), (tmp_path / "f" / "a" / "b", "is a file, so"),
                       (Path("/proc/x"), "cannot create or write")]:
        with pytest.raises(UserError, match=words):
            check_output_dir(bad)
    assert check_output_dir(tmp_path / "new" / "run").is_dir()
    full = tmpfs("full", "64k")
    if full.usable:
        full.fill()
        with pytest.raises(UserError, match="no space left on device while writing"):
            check_output_dir(full.path / "out")


# -------------------------------------------------------------------------------------------- full disk

def test_full_disk_at_start_is_one_clear_error_and_the_rerun_completes(files, tmpfs):
    fs = tmpfs("disk", "256k")
    if not fs.usable:
        pytest.skip("mount is not allowed here: the full-disk-at-start case needs a tmpfs (RLIMIT_FSIZE cannot "
                    "fill a disk); the checkpoint case below falls back to it")
    filler = fs.fill()
    for args in (eval_args(files, fs.path / "ev"), train_args(files, fs.path / "tr"),
                 ["demos", "--task", "0", "--episodes", "1", "--out", fs.path / "de"],
                 ["report", files["report_dir"], "--out", fs.path / "re"]):
        proc = cli(*args)
        assert_user_error(proc, "no space left on device while writing", KEPT)
        assert proc.work == [], (args[0], proc.work)
    filler.unlink()
    proc = cli("report", files["report_dir"], "--out", fs.path / "re")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (fs.path / "re" / "report.html").is_file()


def test_disk_full_during_a_checkpoint_save_then_the_same_command_completes(files, tmpfs):
    """The issue's "unexpected pos 914496 vs 914384": now one line naming the checkpoint, no temp file."""
    fs = tmpfs("ckdisk", "1m")  # the run's small files fit, a 1.5 MB checkpoint does not
    out = (fs.path if fs.usable else files["dir"] / "ck_limit") / "run"
    proc = cli(*train_args(files, out), limit_bytes=None if fs.usable else 1 << 20)
    words = ("no space left on device" if fs.usable else "file size limit reached", "while writing",
             str(out / "checkpoints" / "step_2.pt"), KEPT)
    assert_user_error(proc, *words)
    assert not list((out / "checkpoints").glob("*")), "a half-written checkpoint or temp file was left"
    if fs.usable:
        fs.resize("16m")
    again = cli(*train_args(files, out))
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.step.tolist() == [1, 2]  # no duplicate or missing row
    assert (out / "checkpoints" / "last.pt").is_file()


def test_every_writer_turns_a_full_disk_into_one_clear_error(tmpfs):
    """Parquet, checkpoint, HDF5, video and feature-cache writes on a full disk: UserError naming the file,
    the existing file unchanged, no temp file left."""
    from envs.demo_files import write_part
    from eval.results import ResultStore
    from eval.video import write_mp4
    from policy.checkpoint import load_policy, save_checkpoint
    from tests.eval.test_results import row
    from vla_flow.io import atomic_path, disk_errors

    fs = tmpfs("writers", "512k")
    if not fs.usable:
        pytest.skip("mount is not allowed here; the CLI checkpoint case covers RLIMIT_FSIZE")
    store = ResultStore(fs.path / "ev")
    store.append(row(0))
    policy = load_policy(make_checkpoint(fs.path / "tiny.pt"))
    before = snapshot(fs.path)
    filler = fs.fill()
    rng = np.random.default_rng(0)
    part = {"index": 0, "init_state": 0, "seed": 0, "success": True, "steps": 4,
            "arrays": {"actions": np.zeros((4, 7)), "states": np.zeros((4, 9)),
                       "obs/agentview_rgb": rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)}}

    def feature_cache():  # as train/features.py writes it
        with atomic_path(fs.path / "cache" / "0123.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, image_feat=rng.random((400, 100)))

    writers = {"episodes.parquet": lambda: store.append(row(1)),
               "tiny.pt": lambda: save_checkpoint(fs.path / "tiny.pt", policy),
               "ep_000000.hdf5": lambda: write_part(fs.path / "parts", part, {}, compression=None),
               "a.mp4": lambda: write_mp4(fs.path / "videos" / "a.mp4", rng.integers(0, 256, (8, 64, 64, 3), np.uint8)),
               "0123.npz": feature_cache}
    for name, write in writers.items():
        with pytest.raises(UserError, match=f"no space left on device while writing .*{name}; free space"):
            with disk_errors(fs.path):  # what every command wraps its run in (the video thread's errors)
                write()
    filler.unlink()
    assert snapshot(fs.path) == before  # nothing changed, nothing half-written, no temp file


# ------------------------------------------------------------------------------------ corrupt results

@pytest.mark.sim
def test_corrupt_table_is_moved_aside_and_rebuilt_as_the_report_advises(files, tmp_path):
    out = tmp_path / "ev"
    out.mkdir()
    junk = b"PAR1 this is not a parquet file" * 10
    (out / "episodes.parquet").write_bytes(junk)
    assert_user_error(cli("report", out), "rerun `vla-flow eval` into this directory")
    proc = cli(*eval_args(files, out, "0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "moved it to" in proc.stderr and "episodes will be run again" in proc.stderr
    aside = list(out.glob("episodes.parquet.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == junk  # kept for the user
    df = pd.read_parquet(out / "episodes.parquet")
    assert df.init_state.tolist() == [0] and df.status.tolist() == ["ok"]


# ------------------------------------------------------------------------------------- bad checkpoints
