"""Reflow (2-rectified flow) and one-step distillation of a trained flow policy (Liu, Gong, Liu 2022,
"Flow Straight and Fast", Sec. 2.2-2.3).

Why: a 1-rectified flow trained on independent (noise, action) pairs has curved paths wherever the action
distribution given the observation has several modes, so few Euler steps land between the modes. Reflow
draws noise x0 for every training condition, integrates the trained flow with a fine solver to x1 (a
deterministic coupling), and trains a new flow on the (x0, x1) pairs: its paths are straighter, so N=1 gets
close to the teacher's fine solution. Distillation (optional, after reflow) trains only t = 0, i.e. the
one-step map x0 -> x1 directly.

What is retrained: only the velocity head. The conditioning part of the policy (attention pool, proprio
MLPs, fusion) is the teacher's, frozen, so the conditioning vectors cond (F, D) of the training frames are
computed once; pair generation and training then cost only head calls (seconds to minutes on a CPU instead
of a full training run). The student is saved in the same checkpoint format and runs in ``vla-flow eval``.

Shapes: F training frames, K noise draws per frame, P = F * K pairs; x0, x1 (P, H, A) in NORMALIZED action
space (x1 unclipped, as the ODE ends); cond (F, D); mask (F, H) (chunk positions past an episode's end).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from policy import flow
from vla_flow.errors import UserError


from train.reflow_config import ReflowConfig  # noqa: E402,F401 (re-exported; a light module for the CLI)


# -------------------------------------------------------------------------- generic: any VelocityHead
@torch.no_grad()
def integrate_pairs(head, cond: torch.Tensor, frame: torch.Tensor, x0: torch.Tensor, steps: int, solver: str,
                    batch: int = 2048, desc: str = "reflow pairs", progress: bool = True) -> torch.Tensor:
    """x1 (P, H, A): ``head`` integrated from x0 (P, H, A) under cond[frame] (frame (P,) indexes cond (F, D))."""
    from tqdm import tqdm

    out = torch.empty_like(x0)
    for i in tqdm(range(0, x0.shape[0], batch), desc=desc, unit="batch", disable=not progress):
        c = cond[frame[i:i + batch]]
        out[i:i + batch] = flow.integrate(head.sampler(c, steps, solver), x0[i:i + batch], steps, solver)
    return out


def fit_head(head, cond: torch.Tensor, frame: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
             mask: torch.Tensor | None = None, *, steps: int, batch_size: int, lr: float,
             time_sampling: str = "uniform", fixed_t: float | None = None, seed: int = 0,
             desc: str = "reflow", progress: bool = True) -> list[float]:
    """Train ``head`` (in place) to regress the straight-line velocity x1 - x0 at x_t = t x1 + (1-t) x0.

    Pairs (x0, x1) as given: independent (noise, data) pairs make this ordinary rectified-flow training,
    flow-generated pairs make it reflow; ``fixed_t=0`` trains the one-step map only (distillation).
    mask (F, H) weights chunk positions of cond row ``frame``. AdamW, cosine lr to 0.1 lr. Returns the
    per-step losses."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    head.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, x0.shape[0], (batch_size,), generator=g)
        a, b, f = x0[idx], x1[idx], frame[idx]
        t = torch.full((batch_size,), float(fixed_t)) if fixed_t is not None else \
            flow.sample_time(batch_size, time_sampling, generator=g)
        err = (head(flow.interpolate(a, b, t), t, cond[f]) - flow.target(a, b)).pow(2)
        if mask is None:
            loss = err.mean()
        else:
            m = mask[f].to(err.dtype)[..., None]
            loss = (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    head.eval()
    return losses


# -------------------------------------------------------------------------- checkpoint + its data
def checkpoint_data_paths(checkpoint: str | Path, ckpt: dict, given: list[str] | None) -> list[str]:
    """The demo files a checkpoint was trained on: ``given``, else the config's train.data, else the run
    folder's run.json ("data"). Missing or unreadable -> UserError naming the fix (--data)."""
    checkpoint = Path(checkpoint)
    paths = list(given or [])
    where = "--data"
    if not paths:
        paths = list(((ckpt.get("extra") or {}).get("experiment") or {}).get("train", {}).get("data") or [])
        where = "its config's train.data"
    run_json = checkpoint.resolve().parent.parent / "run.json"
    if not paths and run_json.is_file():
        paths = list(json.loads(run_json.read_text()).get("data") or [])
        where = str(run_json)
    if not paths:
        raise UserError(f"{checkpoint}: its training data is unknown (no --data, no train.data in its config, no "
                        f"run.json beside its checkpoints/ folder); pass --data FILE.hdf5, the demo file(s) it was "
                        "trained on")
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"training data {p} (from {where}) is not accessible: no such file; pass --data "
                            f"FILE.hdf5 with the demo file(s) {checkpoint} was trained on")
    return paths


def load_checkpoint_data(checkpoint: str | Path, data_paths: list[str] | None, device="cpu",
                         mismatch: str | None = None):
    """(sections env/policy/train, TrainData with cached features, ckpt dict, matches) for a checkpoint.

    The split is recomputed from the checkpoint's own config (train.val_fraction, train.seed), so ``data.val``
    is its held-out validation split. ``matches``: the train split's normalization statistics equal the
    checkpoint's, i.e. the files are the ones it was trained on (same split). ``mismatch``: when given, the
    UserError message raised if they do not, before the feature cache is built or read."""
    from types import SimpleNamespace

    from envs.config import EnvConfig
    from policy.checkpoint import read_checkpoint
    from policy.configuration import PolicyConfig
    from train.config import TrainConfig
    from train.data import load_train_data
    from vla_flow import config as cfgmod

    ckpt = read_checkpoint(checkpoint)
    exp_dict = (ckpt.get("extra") or {}).get("experiment")
    if not exp_dict:
        raise UserError(f"{checkpoint}: holds no training config (extra.experiment), so its data split is unknown; "
                        "use a checkpoint written by `vla-flow train` or `vla-flow reflow`")
    paths = checkpoint_data_paths(checkpoint, ckpt, data_paths)
    # the sections training used (a stage builds no ExperimentConfig: that is the roof's, docs/interfaces.md)
    exp = SimpleNamespace(**{k: cfgmod.from_dict(cls, exp_dict.get(k) or {}, prefix=k) for k, cls in
                             (("env", EnvConfig), ("policy", PolicyConfig), ("train", TrainConfig))})
    exp.train.features, exp.train.augment = "cached", False
    saved, found = ckpt.get("stats") or {}, {}

    def check(policy):
        mine = {k: {s: v.numpy() for s, v in d.items()} for k, d in policy.normalizer.get_stats().items()}
        found["matches"] = set(saved) == set(mine) and all(
            np.allclose(np.asarray(saved[k][s]), mine[k][s], rtol=1e-5, atol=1e-6) for k in mine for s in mine[k])
        if mismatch and not found["matches"]:
            raise UserError(mismatch)

    data = load_train_data(exp, paths, device, check=check)
    return exp, data, ckpt, found["matches"]


@torch.no_grad()
def frame_conditions(policy, data, table, rows=None, batch: int = 256, hasher=None) -> tuple[torch.Tensor, dict]:
    """cond (F, D) of ``policy`` for ``rows`` of ``table`` (all by default) and their batch arrays
    (actions (F, H, 7) raw, action_mask (F, H)), from the cached features. ``hasher`` (a hashlib object), when
    given, is fed the bytes of every input the conditions are computed from (cached features, proprio, actions):
    the identity of the frames, which, unlike cond's own bits, does not depend on the torch thread count."""
    rows = np.arange(len(table)) if rows is None else np.asarray(rows)
    conds, actions, masks = [], [], []
    for i in range(0, len(rows), batch):
        b = data.gather(table, rows[i:i + batch], 0, "cpu", augment=False)
        if hasher is not None:
            for name in sorted(k for k, v in b.items() if isinstance(v, torch.Tensor)):
                hasher.update(f"{name}:{tuple(b[name].shape)}".encode())
                hasher.update(b[name].detach().to("cpu").contiguous().numpy().tobytes())
        conds.append(policy.condition(b["image_feat"], b["text_feat"], b["joints"], b["ee_pose"], b.get("gripper"),
                                      b.get("wrist_feat")))
        actions.append(b["actions"].float())
        masks.append(b["action_mask"].float())
    return torch.cat(conds), {"actions": torch.cat(actions), "action_mask": torch.cat(masks)}


# -------------------------------------------------------------------------- pairs kept for a rerun
def pairs_key(policy: torch.nn.Module, frames_digest: str, cfg: ReflowConfig) -> str:
    """sha256 of everything the pairs depend on: the teacher's weights past the frozen encoder (conditioning
    and head; the encoder's output is in the cached features), the frames' inputs (``frames_digest``, from
    ``frame_conditions(..., hasher=)``) and the settings that draw x0 and integrate (K, pair solver and steps,
    seed). Content, not file names or times; and not the conditions' float bits, which change with the torch
    thread count (a rerun with another --threads integrated its pairs anew)."""
    h = hashlib.sha256()
    for name, t in policy.state_dict().items():
        if name.startswith("encoder."):
            continue
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(frames_digest.encode())
    settings = [cfg.samples_per_frame, cfg.pair_steps, cfg.pair_solver, cfg.seed]
    if cfg.noise_scale != 1.0:  # appended only when not the default, so pairs kept before the option still match
        settings.append(cfg.noise_scale)
    h.update(json.dumps(settings).encode())
    return h.hexdigest()


def load_pairs(path: Path, key: str, shape: torch.Size) -> torch.Tensor | None:
    """x1 (P, H, A) from an earlier run of the same reflow stopped after its pairs (the most expensive
    stage: ~2/3 of a suite reflow), or None when there is none or it was made from other inputs."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unreadable file is recomputed, never trusted
        print(f"warning: {path}: unreadable ({type(exc).__name__}); the pairs are integrated again", file=sys.stderr)
        return None
    if saved.get("key") != key or tuple(saved["x1"].shape) != tuple(shape):
        print(f"warning: {path} holds pairs of other inputs (teacher, data or pair settings); integrating anew",
              file=sys.stderr)
        return None
    return saved["x1"]


def save_pairs(path: Path, key: str, x1: torch.Tensor) -> None:
    from vla_flow.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"key": key, "x1": x1.contiguous()}, tmp)


# -------------------------------------------------------------------------- the command's work
def draws_per_frame(cfg: ReflowConfig) -> int:
    """Noise draws per frame: cfg.samples_per_frame, or 1 when the pairs start at x0 = 0 (noise_scale 0), where
    every draw is the same pair."""
    if cfg.noise_scale == 0 and cfg.samples_per_frame > 1:
        print(f"note: reflow.noise_scale 0: every pair starts at x0 = 0, so one draw per frame instead of "
              f"{cfg.samples_per_frame}", file=sys.stderr)
        return 1
    return cfg.samples_per_frame


def reflow(checkpoint: str | Path, data_paths: list[str] | None, out: str | Path, cfg: ReflowConfig,
           progress: bool = True) -> dict:
    """Reflow (and optionally distil) ``checkpoint``; writes OUT/checkpoints/last.pt, OUT/run.json,
    OUT/metrics.csv. Returns the run.json dict (cost in seconds per stage)."""
    from policy.checkpoint import load_policy, save_checkpoint
    from vla_flow.io import atomic_write_json, atomic_write_text

    out = Path(out)
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        raise UserError(f"{out} already holds a reflow run ({last}); pick a new --out")
    from vla_flow.io import check_run_record

    check_run_record(out, "reflow")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    exp, data, ckpt, matches = load_checkpoint_data(
        checkpoint, data_paths, mismatch=None if cfg.other_data else
        f"--data does not match {checkpoint}'s training data (the normalization statistics of its train split "
        "differ); pass the demo file(s) it was trained on, or --other-data to reflow on other demos of its tasks")
    if not matches:
        print(f"warning: --data is not {checkpoint}'s training data (--other-data): the pairs' conditions come from "
              "these files' train split, normalized with the teacher's statistics", file=sys.stderr)
    teacher = load_policy(checkpoint)
    t_load = time.perf_counter()
    frames = hashlib.sha256()
    cond, arrays = frame_conditions(teacher, data, data.train, hasher=frames)
    n_frames, k = cond.shape[0], draws_per_frame(cfg)
    frame = torch.arange(n_frames).repeat_interleave(k)
    g = torch.Generator().manual_seed(cfg.seed)
    x0 = torch.randn((n_frames * k, teacher.cfg.chunk_size, teacher.cfg.action_dim), generator=g) * cfg.noise_scale
    t_cond = time.perf_counter()
    pairs_file, key = out / "pairs.pt", pairs_key(teacher, frames.hexdigest(), cfg)
    x1 = load_pairs(pairs_file, key, x0.shape)
    reused = x1 is not None
    if x1 is None:
        x1 = integrate_pairs(teacher.head, cond, frame, x0, cfg.pair_steps, cfg.pair_solver, progress=progress)
        save_pairs(pairs_file, key, x1)
    t_pairs = time.perf_counter()
    student = load_policy(checkpoint)
    sampling = cfg.time_sampling or teacher.cfg.time_sampling
    mask = arrays["action_mask"]
    losses = fit_head(student.head, cond, frame, x0, x1, mask, steps=cfg.steps, batch_size=cfg.batch_size,
                      lr=cfg.lr, time_sampling=sampling, seed=cfg.seed, progress=progress)
    t_train = time.perf_counter()
    dlosses = fit_head(student.head, cond, frame, x0, x1, mask, steps=cfg.distill_steps, batch_size=cfg.batch_size,
                       lr=cfg.lr, fixed_t=0.0, seed=cfg.seed + 1, desc="distil (t=0)", progress=progress) \
        if cfg.distill_steps else []
    t_distill = time.perf_counter()
    from vla_flow import config as cfgmod

    info = {"teacher": str(Path(checkpoint).resolve()), "data": [str(df.path) for df in data.files],
            "config": cfgmod.to_dict(cfg), "time_sampling": sampling, "train_frames": n_frames, "pairs": n_frames * k,
            "noise_scale": cfg.noise_scale,
            "pair_nfe": flow.nfe(cfg.pair_steps, cfg.pair_solver), "pairs_reused": reused,
            "data_matches_teacher": bool(matches),
            "final_loss": float(np.mean(losses[-50:])),
            "final_distill_loss": float(np.mean(dlosses[-50:])) if dlosses else None,
            "seconds": {"load_and_features": t_load - t_start, "conditions": t_cond - t_load,
                        "pairs": t_pairs - t_cond, "train": t_train - t_pairs, "distill": t_distill - t_train}}
    student.eval()
    student.cfg.noise_scale = cfg.noise_scale  # sample from where the pairs started (eval.noise_scale overrides)
    save_checkpoint(last, student, experiment=ckpt["extra"]["experiment"], reflow=info, step=cfg.steps)
    info["seconds"]["total"] = time.perf_counter() - t_start
    rows = [f"{i + 1},reflow,{v:.6f}" for i, v in enumerate(losses)] + \
        [f"{i + 1},distill,{v:.6f}" for i, v in enumerate(dlosses)]
    atomic_write_text(out / "metrics.csv", "step,stage,loss\n" + "\n".join(rows) + "\n")
    atomic_write_json(out / "run.json", info)
    return info
