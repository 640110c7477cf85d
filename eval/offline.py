"""``vla-flow sweep-offline``: how many flow steps N a checkpoint needs, measured on held-out demo frames
in seconds, without the simulator.

Per checkpoint, solver, time grid and N (on the frames of the checkpoint's validation split, with the
cached frozen features, K noise draws per frame, the same noise for every N):
- ``mse_demo``: action MSE (raw actions, clipped as ``predict`` clips them, chunk positions past an episode's
  end masked) against the demonstrated chunk;
- ``mse_ref``: the same against the reference solution from the same noise (Euler, ``--reference-steps``,
  default 100): the integration error alone, 0 for a perfectly straight flow at any N;
- ``straightness``: S = sum_k dt_k mean_d ((x1 - x0) - v(x_t_k, t_k))^2 along this N's own path
  (``policy.flow.straightness``; normalized action space); at the reference N it is the flow's S of the
  rectified-flow paper;
- ``noise_scale``: the start x0 = scale * N(0, I) (``--noise-scales``, default 1; 0 is the deterministic path
  from the centre that ``eval.noise_scale=0`` runs; the reference then starts from the same scaled x0);
- ``nfe`` (network calls) and ``flow_cpu_ms``: the CPU time of one single-row integration (what one policy
  call in a rollout pays for the flow loop; the image encode is not included).
Writes OUT/offline.csv, OUT/offline.png (errors against network calls, straightness against N) and
OUT/offline.json (settings); prints the table.
"""
from __future__ import annotations

import time
from pathlib import Path

DEFAULT_STEPS = "1,2,4,8,16,20,50,100"


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep-offline", help="offline N sweep: action error and flow straightness per N",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, nargs="+", action="extend", metavar="CKPT",
                   help="checkpoint(s) from `vla-flow train` / `vla-flow reflow` (several: one line each)")
    p.add_argument("--data", nargs="+", action="extend", default=None, metavar="FILE",
                   help="the demo file(s) the checkpoint was trained on (default: from its run folder)")
    p.add_argument("--out", required=True, help="folder for offline.csv, offline.png, offline.json")
    p.add_argument("--flow-steps", dest="flow_steps", default=DEFAULT_STEPS, help=f"N list (default {DEFAULT_STEPS})")
    p.add_argument("--solvers", default="euler", help="comma list of euler, midpoint (default euler)")
    p.add_argument("--time-grids", dest="time_grids", default="uniform",
                   help="comma list of uniform, cosine, early, late (default uniform)")
    p.add_argument("--noise-scales", dest="noise_scales", default="1",
                   help="comma list of initial-noise scales (default 1; 0 = start at the centre, as eval.noise_scale=0)")
    p.add_argument("--reference-steps", dest="reference_steps", type=int, default=100,
                   help="Euler steps of the reference solution (default 100)")
    p.add_argument("--max-frames", dest="max_frames", type=int, default=256, help="held-out frames (default 256)")
    p.add_argument("--noise-samples", dest="noise_samples", type=int, default=2, help="noise draws per frame")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def parse_settings(args) -> dict:
    """Validated sweep settings from the CLI arguments (UserError naming the bad flag)."""
    from eval.config import parse_int_list
    from policy import flow
    from vla_flow.errors import UserError

    try:
        steps = parse_int_list(args.flow_steps, "--flow-steps")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    solvers = [s for s in args.solvers.split(",") if s]
    grids = [g for g in args.time_grids.split(",") if g]
    try:
        for n in steps + [args.reference_steps]:
            flow.check_solver(n)
        for s in solvers:
            flow.check_solver(1, s)
        for g in grids:
            flow.check_solver(1, "euler", g)
    except ValueError as exc:
        raise UserError(f"sweep-offline: {exc} (e.g. --flow-steps 1,2,4 --solvers euler,midpoint)") from None
    try:
        scales = [flow.check_noise_scale(float(x)) for x in args.noise_scales.split(",") if x.strip()]
    except ValueError:
        scales = []
    if not scales:
        raise UserError(f"--noise-scales {args.noise_scales!r}: expected a comma list of numbers in [0, 10], e.g. 1,0")
    if args.max_frames < 1 or args.noise_samples < 1:
        raise UserError("--max-frames and --noise-samples: expected positive integers")
    seen: dict[str, str] = {}
    for ck in args.checkpoint:  # offline.csv names each checkpoint by its label; reports.fewstep joins on it
        label = checkpoint_label(ck)
        if label in seen and Path(seen[label]).resolve() != Path(ck).resolve():
            raise UserError(f"sweep-offline: {seen[label]} and {ck} would both be labelled {label!r} in offline.csv; "
                            "sweep them one at a time, each into its own --out folder")
        seen[label] = ck
    return {"flow_steps": sorted(set(steps)), "solvers": solvers, "time_grids": grids,
            "noise_scales": list(dict.fromkeys(scales)),
            "reference_steps": args.reference_steps, "max_frames": args.max_frames,
            "noise_samples": args.noise_samples, "seed": args.seed}


def checkpoint_label(checkpoint: str) -> str:
    """The name a checkpoint goes by in tables: its run folder (RUN/checkpoints/last.pt -> RUN), else the stem."""
    p = Path(checkpoint).resolve()
    return p.parent.parent.name if p.parent.name == "checkpoints" else p.stem


def _flow_cpu_ms(policy, cond, x0, n: int, solver: str, grid: str, reps: int = 5) -> float:
    """CPU milliseconds of one single-row integration (hoisted sampler included, as in ``predict``), the
    fastest of ``reps``. CPU time of this process, not wall time: on a CPU shared with other jobs the wall
    time of a 1 ms loop measured 0.9-30 ms depending on preemption, its CPU time does not move (set
    OMP_NUM_THREADS=1, else the threads' CPU time adds up)."""
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        policy.sample_normalized(cond[:1], n, x0[:1], solver, grid)
        times.append((time.process_time() - t0) * 1e3)
    return float(min(times))


def sweep_checkpoint(checkpoint: str, data_paths, s: dict, progress: bool = True) -> tuple[list[dict], dict]:
    """Rows of the sweep for one checkpoint, and a dict saying which frames were used."""
    import numpy as np
    import torch

    from policy import flow
    from policy.checkpoint import load_policy
    from train.reflow import frame_conditions, load_checkpoint_data

    _, data, _, matches = load_checkpoint_data(checkpoint, data_paths)
    policy = load_policy(checkpoint)
    held_out = matches and data.val is not None
    # other files than its training data: their train split, held out only if it never saw those demos (a
    # subset of its training demos, e.g. fewer episodes of the same layouts, is not held out)
    table = data.val if held_out else data.train
    rows = np.unique(np.linspace(0, len(table) - 1, min(s["max_frames"], len(table))).round().astype(np.int64))
    with torch.no_grad():
        cond, arrays = frame_conditions(policy, data, table, rows)
        k = s["noise_samples"]
        frame = torch.arange(cond.shape[0]).repeat_interleave(k)
        noise = torch.randn((len(frame), policy.cfg.chunk_size, policy.cfg.action_dim),
                            generator=torch.Generator().manual_seed(s["seed"]))
        c, demo, mask = cond[frame], arrays["actions"][frame], arrays["action_mask"][frame][..., None]

        def raw(x):
            return policy.normalizer.unnormalize("actions", x).clamp(-1.0, 1.0)

        def mse(a, b):
            return float(((a - b).pow(2) * mask).sum() / (mask.sum() * a.shape[-1]))

        out = []
        for scale in s["noise_scales"]:
            x0 = noise * scale  # as predict scales it (policy.noise_scale)
            ref = raw(policy.sample_normalized(c, s["reference_steps"], x0, "euler", "uniform"))
            for solver in s["solvers"]:
                for grid in s["time_grids"]:
                    for n in s["flow_steps"]:
                        record: list = []
                        x1 = policy.sample_normalized(c, n, x0, solver, grid, record=record)
                        out.append({"checkpoint": checkpoint_label(checkpoint), "solver": solver, "time_grid": grid,
                                    "noise_scale": float(scale), "N": n, "nfe": flow.nfe(n, solver),
                                    "mse_demo": mse(raw(x1), demo), "mse_ref": mse(raw(x1), ref),
                                    "straightness": float(flow.straightness(x0, x1, record).mean()),
                                    "flow_cpu_ms": _flow_cpu_ms(policy, c, x0, n, solver, grid)})
    used = {"checkpoint": str(checkpoint), "frames": int(len(rows)), "samples": int(len(frame)),
            "split": "validation" if held_out else
            "train split of --data, not its training data: held out only if it never saw these demos",
            "data": [str(df.path) for df in data.files]}
    return out, used


def plot(df, path: Path) -> Path:
    """Three panels: MSE vs demo and vs reference against network calls (log-log), straightness against N."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vla_flow.io import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    # one colour per checkpoint and noise scale, one line style per solver, one marker per time grid: with
    # three checkpoints, two solvers and two grids, twelve cycled colours repeated and two curves looked like one
    if "noise_scale" not in df:  # offline.csv files written before --noise-scales
        df = df.assign(noise_scale=1.0)
    colors = {k: f"C{i % 10}" for i, k in enumerate(dict.fromkeys(zip(df["checkpoint"], df["noise_scale"])))}
    styles, markers = {"euler": "-", "midpoint": "--"}, {"uniform": "o", "cosine": "s", "early": "^", "late": "v"}
    for (ck, scale, solver, grid), g in df.groupby(["checkpoint", "noise_scale", "solver", "time_grid"], sort=False):
        label = (f"{ck} {solver}" + ("" if grid == "uniform" else f" {grid}")
                 + ("" if scale == 1.0 else f" x0*{scale:g}"))
        kw = {"marker": markers.get(grid, "o"), "ms": 4, "color": colors[(ck, scale)], "ls": styles.get(solver, ":"),
              "label": label}
        axes[0].plot(g["nfe"], g["mse_demo"], **kw)
        ref, bent = g[g["mse_ref"] > 1e-12], g[g["straightness"] > 1e-12]  # log axes: 0 by construction
        axes[1].plot(ref["nfe"], ref["mse_ref"], **kw)  # (the reference itself; a one-step path) left out
        axes[2].plot(bent["N"], bent["straightness"], **kw)
    titles = ("action MSE vs demonstration", "action MSE vs reference (integration error)",
              "straightness S along the path")
    for ax, title, xl in zip(axes, titles, ("network calls", "network calls", "solver steps N")):
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xl, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))  # outside: no curve hidden
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def run(args) -> int:
    import pandas as pd

    from vla_flow.io import atomic_write_json, atomic_write_text, check_output_dir

    s = parse_settings(args)
    out = check_output_dir(args.out)
    rows, used = [], []
    for ck in args.checkpoint:
        r, u = sweep_checkpoint(ck, args.data, s)
        rows += r
        used.append(u)
    df = pd.DataFrame(rows)
    atomic_write_text(out / "offline.csv", df.to_csv(index=False))
    atomic_write_json(out / "offline.json", {"settings": s, "checkpoints": used})
    plot(df, out / "offline.png")
    with pd.option_context("display.width", 160, "display.float_format", "{:.5g}".format):
        print(df.to_string(index=False))
    print(f"wrote {out}/offline.csv, offline.png, offline.json")
    return 0
