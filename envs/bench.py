"""Env speed: creation time, reset time and control steps/s for each camera/render mode, side by side.

The four envs are built first, then stepped in interleaved blocks (round robin), so a machine shared
with other jobs slows every mode alike and the ratios stay meaningful. ``vla-flow bench env`` calls
``bench_env``; ``python -m envs.bench`` runs it directly. ``bench_demos`` (``vla-flow bench demos``) measures
scripted-demo generation with 1 vs 2 worker processes.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Optional, Union

import numpy as np

# mode -> (cameras, fast render)
MODES = {
    "cameras_off": ([], False),
    "one_camera": (["agentview"], False),
    "one_camera_fast": (["agentview"], True),
    "two_cameras": (["agentview", "robot0_eye_in_hand"], False),
}


def _actions(steps: int, seed: int = 0) -> np.ndarray:
    """A smooth deterministic action sequence (steps, 7): the arm moves, so physics has contacts to do."""
    t = np.arange(steps)[:, None]
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, (1, 6))
    a = 0.5 * np.sin(2 * np.pi * t / 40 + phase)
    grip = np.where((t // 30) % 2 == 0, -1.0, 1.0)
    return np.concatenate([a, grip], axis=1)


def bench_env(task: Union[int, str, "object"] = 0, steps: int = 100, suite: str = "libero_spatial",
              camera_size: int = 128, block: int = 10, modes: tuple[str, ...] = tuple(MODES)) -> list[dict]:
    """Rows ``{mode, cameras, fast, camera_size, create_s, reset_s, steps, steps_per_s, cpu_steps_per_s,
    render_ms, physics_ms, mujoco}``, one per mode. ``task``: a TaskSpec, or an index/name in ``suite``.

    ``steps_per_s`` is wall clock; ``cpu_steps_per_s`` divides by this process's CPU time (all its
    threads, Mesa's included), which is what the machine would give with a core to itself."""
    import mujoco

    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv, TaskSpec, resolve_task

    spec = task if isinstance(task, TaskSpec) else resolve_task(suite, task)
    envs, rows = {}, {}
    try:
        for mode in modes:
            cams, fast = MODES[mode]
            cfg = EnvConfig(suite=spec.suite, task=spec.index, max_steps=steps + 1,
                            render=RenderConfig(fast=fast, cameras=cams, camera_size=camera_size))
            env = envs[mode] = LiberoEnv(spec, cfg)
            t0 = time.perf_counter()
            env.reset(init_state=0)
            rows[mode] = {"mode": mode, "cameras": ",".join(cams), "fast": fast, "camera_size": camera_size,
                          "create_s": round(env.create_s, 3), "reset_s": round(time.perf_counter() - t0, 3),
                          "steps": steps, "mujoco": mujoco.__version__, "_wall": 0.0, "_cpu": 0.0, "_render": 0.0, "_phys": 0.0}
        actions = _actions(steps)
        for start in range(0, steps, block):
            for mode, env in envs.items():
                row = rows[mode]
                t0, c0 = time.perf_counter(), time.process_time()
                for a in actions[start:start + block]:
                    _, _, info = env.step(a)
                    row["_render"] += info["render_ms"]
                    row["_phys"] += info["physics_ms"]
                row["_wall"] += time.perf_counter() - t0
                row["_cpu"] += time.process_time() - c0
    finally:
        for env in envs.values():
            env.close()
    out = []
    for row in rows.values():
        wall, cpu, render, phys = row.pop("_wall"), row.pop("_cpu"), row.pop("_render"), row.pop("_phys")
        row.update(steps_per_s=round(steps / wall, 2), cpu_steps_per_s=round(steps / max(cpu, 1e-9), 2),
                   render_ms=round(render / steps, 2),
                   physics_ms=round(phys / steps, 2))
        out.append(row)
    return out


def _scaling_worker(mode: str, steps: int, barrier, out) -> None:
    """One process of ``bench_scaling``: build the env, wait for the others, step, report (wall, cpu)."""
    from envs.gl import ensure_gl_backend

    ensure_gl_backend()
    from envs.config import EnvConfig, RenderConfig
    from envs.libero import LiberoEnv

    cams, fast = MODES[mode]
    env = LiberoEnv(cfg=EnvConfig(task=0, reset="soft", max_steps=steps + 1,
                                  render=RenderConfig(cameras=cams, fast=fast)))
    env.reset(init_state=0)
    barrier.wait()  # every process has built its env: they step at the same time
    t0, c0 = time.perf_counter(), time.process_time()
    for a in _actions(steps):
        env.step(a)
    out.put((time.perf_counter() - t0, time.process_time() - c0))
    env.close()


def bench_scaling(steps: int = 2000, modes: tuple[str, ...] = ("cameras_off",), processes=(1, 2)) -> list[dict]:
    """This machine's ceiling for process parallelism: the same simulator loop (libero_spatial task 0) in
    P concurrent spawn-started processes, started together after every env is built. Rows ``{mode,
    processes, steps_per_s (all processes), ratio (vs the first P), cores_per_process (CPU / wall)}``.

    Why: worker-pool speedups (``bench_demos``) cannot exceed what the machine gives two independent
    single-threaded processes; on this 2-vCPU VM that varied from 1.48x to 1.96x between runs."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for mode in modes:
        base = None
        for n in processes:
            barrier, out = ctx.Barrier(n), ctx.Queue()
            procs = [ctx.Process(target=_scaling_worker, args=(mode, steps, barrier, out)) for _ in range(n)]
            for pr in procs:
                pr.start()
            res = [out.get() for _ in procs]
            for pr in procs:
                pr.join()
            rate = n * steps / max(r[0] for r in res)
            base = base or rate
            rows.append({"mode": mode, "processes": n, "steps_per_s": round(rate, 2), "ratio": round(rate / base, 2),
                         "cores_per_process": round(float(np.mean([c / w for w, c in res])), 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m envs.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="libero_spatial")
    ap.add_argument("--task", default="0")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--camera-size", type=int, default=128)
    ap.add_argument("--scaling", action="store_true",
                    help="instead: the machine's 1 vs 2 process ceiling (bench_scaling), --steps steps each")
    args = ap.parse_args(argv)
    if args.scaling:
        for row in bench_scaling(args.steps):
            print(json.dumps(row))
        return 0
    for row in bench_env(args.task, args.steps, suite=args.suite, camera_size=args.camera_size):
        print(json.dumps(row))
    return 0



def bench_demos(workers_list=(1, 2), episodes: Optional[int] = None, cfg=None, quick: bool = False,
                out_dir: Optional[str] = None) -> list[dict]:
    """Demo-generation throughput: rows ``{workers, episodes, steps_per_s}``.

    Each worker count runs ``episodes`` episodes *per worker* (default 3, 1 with ``quick``) of the
    experiment's task (``cfg``: an ExperimentConfig, default libero_spatial task 0) with cameras on, as
    ``vla-flow demos`` does; wall time includes worker start-up and env creation, as a user sees it.
    Files go to a temporary folder that is removed afterwards.
    """
    import tempfile

    from envs.config import DemoConfig, EnvConfig
    from envs.demos import generate_demos

    per_worker = episodes or (1 if quick else 3)
    env_cfg = cfg.env if cfg is not None else EnvConfig(reset="soft")
    rows = []
    for w in workers_list:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            rep = generate_demos(DemoConfig(episodes=per_worker * w, workers=w), env_cfg, tmp)
            rows.append({"workers": w, "episodes": rep.tried, "steps_per_s": round(rep.steps_per_s, 2)})
    return rows

if __name__ == "__main__":
    raise SystemExit(main())
