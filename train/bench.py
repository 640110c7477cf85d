"""``bench_train``: training throughput, cached features vs on-the-fly encoding, 1 vs 2 gloo processes.

Each measurement is a real ``vla-flow train`` run in a subprocess, every process with the same
``threads_per_process`` (default 1, so 2 processes use 2 cores where 1 uses one: the DDP scaling question
on a 2-core CPU; more threads per process oversubscribe a shared machine), on a synthetic file in the LIBERO layout,
with the experiment config's policy (default: the seed's ViT-B/16, random init here because no weights can
be downloaded). samples/s is the global rate over the second half of the steps (the first half warms up),
validation and checkpoint time excluded. The feature-cache build is timed once, in process, and reported
as its own row (frames encoded per second).

Rows: ``mode`` (on_the_fly | cached | cached_bf16 (``train.bf16``, where bf16 is native) | cache_build), ``processes``, ``samples_per_s``, plus ``steps``,
``batch`` and ``threads`` (per process); the first row (on_the_fly, 1 process) is the baseline.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from train.logs import read_metrics
from train.synthetic import write_demo_file
from vla_flow import config as cfgmod


def _run_train(cfg_path: Path, data: Path, out: Path, processes: int, threads: int, overrides: list[str]) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "vla_flow", "train", "--config", str(cfg_path), "--out", str(out),
           "--data", str(data), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return float(read_metrics(out / "metrics.csv")[-1]["samples_per_s"])


def _build_cache(exp, data: Path, device: str, threads: int) -> float:
    """Build the feature cache in process; returns frames encoded per second (encode + write only)."""
    import torch

    from train.data import load_train_data

    torch.set_num_threads(threads)
    info = load_train_data(exp, [str(data)], torch.device(device)).cache_info[0]
    if not info["built"]:
        raise RuntimeError(f"bench expected to build a fresh feature cache, found {info['path']}")
    return info["frames"] / info["build_s"]


def bench_train(cfg=None, device: str = "cpu", quick: bool = False, batch: int = 64, workdir: str | None = None,
                threads_per_process: int = 1):
    """Rows of samples/s; ``cfg`` is an ExperimentConfig (default: configs/single_task_overfit.yaml with
    random-init encoders). ``quick``: fewer steps (smoke runs)."""
    from vla_flow.experiment import load_experiment

    exp = cfg or load_experiment("single_task_overfit", ["policy.vision.pretrained=none"])
    if workdir is None:  # a temp folder, removed afterwards (data, caches, runs)
        with tempfile.TemporaryDirectory(prefix="vla_flow_bench_train_") as tmp:
            return bench_train(exp, device, quick, batch, tmp, threads_per_process)
    threads = threads_per_process
    work = Path(workdir)
    n_demos, length = 4, batch // 4 + 2  # >= one batch of frames (steps wrap over epochs)
    data = write_demo_file(work / "bench_demo.hdf5", n_demos=n_demos, length=length, image_size=128)
    cfg_path = work / "bench.yaml"
    exp = dataclasses.replace(exp, env=dataclasses.replace(exp.env, suite="libero_spatial", task=0))  # the file's task
    cfg_path.write_text(json.dumps(cfgmod.to_dict(exp)))  # JSON is YAML
    cached_steps, fly_steps = (5, 1) if quick else (50, 1)
    common = [f"train.batch_size={batch}", "train.val_fraction=0.0", "train.epochs=100000", f"train.device={device}",
              "train.save_every=100000", "train.features=cached"]
    shutil.rmtree(work / "bench_demo.features", ignore_errors=True)  # time a fresh build
    rows = [{"mode": "cache_build", "processes": 1, "samples_per_s": _build_cache(exp, data, device, threads)}]
    runs = [("on_the_fly", 1, fly_steps), ("cached", 1, cached_steps), ("cached", 2, cached_steps)]
    from policy.encoders import cpu_native_bf16

    if device == "cuda" or cpu_native_bf16():
        runs.append(("cached_bf16", 1, cached_steps))  # train.bf16: autocast where bf16 is native
    for mode, procs, steps in runs:
        out = work / f"{mode}_{procs}"
        over = common + [f"train.max_steps={2 * steps}", f"train.log_every={steps}",
                         f"train.features={mode.removesuffix('_bf16')}", f"train.bf16={mode.endswith('_bf16')}"]
        rows.append({"mode": mode, "processes": procs,
                     "samples_per_s": _run_train(cfg_path, data, out, procs, threads, over),
                     "steps": steps, "batch": batch, "threads": threads})
    rows[0].update(steps=0, batch=0, threads=threads)
    rows = rows[1:] + rows[:1]  # baseline (on the fly, 1 process) first, the cache build last
    fly = rows[0]["samples_per_s"]
    for r in rows:
        r["vs_on_the_fly"] = r["samples_per_s"] / fly
    return rows


if __name__ == "__main__":
    import pandas as pd

    print(pd.DataFrame(bench_train(quick="--quick" in sys.argv)).to_string(index=False))
