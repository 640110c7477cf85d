"""Evaluation throughput: our harness against the naive loop of OpenVLA's / openpi's LIBERO scripts.

``bench_eval`` runs the same episodes (same keys, init states, noise, step limit) three ways, one after
another in one process, so the machine's load is as equal as it can be:

- ``naive``: one env in the main process, one episode after another, every camera rendered every step,
  one observation per policy call (OpenVLA ``run_libero_eval.py``, openpi ``examples/libero/main.py``);
- ``harness`` with 1 and with 2 workers: spawned workers, cameras rendered only on observed steps, policy
  calls of a fixed shape (``batch_size`` 1, and 2 = one call for both workers).

Besides episodes/min each row reports the harness overhead (main-process time spent neither in policy
calls nor blocked on a worker, over the run's wall time) and whether its action traces equal the naive
loop's bit for bit (expected with batch_size 1, whose calls have the naive loop's shape; calls padded to 2
rows change last bits, see ``PolicyCaller``).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _bench_policy(cfg, path: Path):
    """A random-weight policy checkpoint: ``cfg.policy`` (e.g. ViT-B/16) or the tiny test towers."""
    import torch

    from policy.checkpoint import save_checkpoint
    from policy.configuration import PolicyConfig, VisionConfig
    from policy.modeling import FlowPolicy
    from policy.normalize import compute_stats

    pcfg = cfg.policy if cfg is not None else PolicyConfig(
        vision=VisionConfig(model="tiny", pretrained="none"), chunk_size=8, n_action_steps=5)
    rng = np.random.default_rng(0)
    stats = compute_stats(rng.normal(0, 0.3, (64, 7)).clip(-1, 1), rng.normal(size=(64, 7)), rng.normal(size=(64, 7)))
    torch.manual_seed(0)
    save_checkpoint(path, FlowPolicy(pcfg, stats))
    return pcfg


def naive_loop(policy, keys, env_cfg, language: str, max_steps: int, n_action_steps: int, horizon: int):
    """One env, episodes in sequence, batch-1 policy calls; returns {key: actions (T, 7)} and wall s."""
    from envs.libero import LiberoEnv, policy_inputs, resolve_task
    from eval.episodes import NoiseStream
    from eval.rollout import PolicyCaller

    caller = PolicyCaller(policy, 1)
    traces, t0 = {}, time.perf_counter()
    env = LiberoEnv(resolve_task(env_cfg.suite, keys[0].task_index), env_cfg)
    try:
        for key in keys:
            obs, noise, trace = env.reset(init_state=key.init_state, seed=key.seed), NoiseStream(key, horizon), []
            while len(trace) < max_steps:
                chunk, _ = caller([policy_inputs(obs)], [language], noise.next()[None], key.flow_steps)
                for a in chunk[0][:n_action_steps]:
                    obs, success, _ = env.step(a)
                    trace.append(a)
                    if success or len(trace) >= max_steps:
                        break
                if success:
                    break
            traces[key] = np.asarray(trace)
    finally:
        env.close()
    return traces, time.perf_counter() - t0


def harness(policy, keys, env_cfg, language: str, settings, workers: int, batch_size: int):
    """Our rollouts; returns ({key: actions}, wall s, timers)."""
    from envs.workers import WorkerPool
    from eval.rollout import PolicyCaller, Rollouts

    t0 = time.perf_counter()
    with WorkerPool(workers) as pool:
        roll = Rollouts(pool, PolicyCaller(policy, batch_size), settings)
        traces = {r.key: np.asarray(r.actions) for r in roll.run([(k, False, language) for k in keys])}
    return traces, time.perf_counter() - t0, roll.timers


def bench_eval(cfg=None, quick: bool = False) -> list[dict]:
    """Rows ``harness, workers, episodes, episodes_per_min`` (+ overhead and trace equality), naive first.

    ``cfg``: an ExperimentConfig (its policy section picks the model; weights are random either way:
    throughput does not depend on them). Default: tiny policy, libero_spatial task 0, N=5.
    """
    import torch

    from envs.config import EnvConfig
    from envs.libero import resolve_task
    from eval.episodes import build_grid
    from eval.rollout import RolloutSettings
    from policy.checkpoint import load_policy
    from vla_flow.config import to_dict

    torch.set_num_threads(1)  # 2 simulator workers + the policy share 2 cores
    env_cfg = cfg.env if cfg is not None else EnvConfig(reset="soft")
    task = resolve_task(env_cfg.suite, 0)
    init_states, max_steps = ([0, 1], 20) if quick else ([0, 1, 2, 3], 100)
    keys = build_grid(env_cfg.suite, [(0, task.name)], init_states, [5], [0])
    with tempfile.TemporaryDirectory() as tmp:
        pcfg = _bench_policy(cfg, Path(tmp) / "bench.pt")
        policy = load_policy(Path(tmp) / "bench.pt", "cpu")
    n_act, horizon = pcfg.n_action_steps, pcfg.chunk_size
    policy.encode_text([task.language])
    settings = RolloutSettings(env_cfg=to_dict(env_cfg), max_steps=max_steps, n_action_steps=n_act, horizon=horizon)
    model = pcfg.vision.model
    base, wall = naive_loop(policy, keys, env_cfg, task.language, max_steps, n_act, horizon)
    rows = [_row("naive", 1, 1, keys, wall, None, True, model, max_steps)]
    for workers, batch in ((1, 1), (2, 1), (2, 2)):  # batch 1 makes the naive loop's policy calls
        traces, wall, timers = harness(policy, keys, env_cfg, task.language, settings, workers, batch)
        same = all(np.array_equal(traces[k], base[k]) for k in keys)
        rows.append(_row("harness", workers, batch, keys, wall, timers, same, model, max_steps))
    return rows


def _row(name, workers, batch, keys, wall, timers, same, model, max_steps) -> dict:
    overhead = float("nan")
    if timers:
        overhead = max(0.0, timers["total_s"] - timers["policy_s"] - timers["wait_s"]) / timers["total_s"]
    return {"harness": name, "workers": workers, "episodes": len(keys), "episodes_per_min": 60 * len(keys) / wall,
            "batch_size": batch,
            "wall_s": round(wall, 1), "overhead_frac": round(overhead, 4), "same_actions_as_naive": same,
            "policy": model, "max_steps": max_steps}
