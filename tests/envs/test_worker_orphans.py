"""Workers die with their main process, even when it is SIGKILLed (no cleanup runs).

A ``ProcessPoolExecutor`` worker holds both ends of its call queue and never sees EOF, so without
``die_with_parent`` a killed ``vla-flow demos`` left its simulator workers running (seen here)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = r"""
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from envs.workers import EnvWorker, die_with_parent

def block(_):
    time.sleep(3600)  # a worker busy in a long episode

if __name__ == "__main__":
    w = EnvWorker(0)  # the evaluator's worker (env built lazily: nothing to simulate yet)
    pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=die_with_parent,
                               initargs=(os.getpid(),))
    pool.submit(block, 0)
    while not pool._processes:
        time.sleep(0.05)
    print(w.proc.pid, *pool._processes, flush=True)
    time.sleep(3600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (reaped later by init) is not running
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_workers_die_when_the_main_process_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling for the condition, bounded by the deadline
        assert not any(alive(p) for p in pids), f"orphaned workers {pids}"
    finally:
        parent.kill()
