"""Worker protocol without the simulator: the fault hook fires before the env is touched, so a step
sent to a fresh worker exercises error records, death and hang handling in ~1 s per spawn."""
import numpy as np
import pytest

from envs.workers import EnvWorker, FaultInjection, WorkerError

STEP = {"action": np.zeros(7), "want_obs": False, "want_frame": False}


@pytest.mark.parametrize("kind, expect", [("raise", "error"), ("exit", "died"), ("hang", "timeout")])
def test_failures_come_back_as_worker_errors_and_dead_workers_restart(kind, expect):
    w = EnvWorker(0, faults=(FaultInjection(kind, at_step=1),))
    try:
        first_pid = w.proc.pid
        with pytest.raises(WorkerError) as info:
            w.call("step", STEP, timeout=3.0 if kind == "hang" else 60.0)
        assert info.value.kind == expect
        if kind == "raise":
            assert "injected fault at step 1" in str(info.value) and "Traceback" in str(info.value)
            assert w.restarts == 0 and w.proc.is_alive()  # the worker survives an env exception
        else:
            assert w.restarts == 1 and w.proc.pid != first_pid and w.proc.is_alive()
            assert not _alive(first_pid)
        # the (new) worker still serves commands: an unknown one comes back as an error record
        with pytest.raises(WorkerError, match="unknown worker command"):
            w.call("jump", {}, timeout=60.0)
    finally:
        w.close()
    assert w.proc is None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); it must at least not be running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] not in ("Z", "X")
    except FileNotFoundError:
        return False
