"""Training checkpoints ``RUN/checkpoints/step_<k>.pt`` and ``last.pt``, and resume.

Each file is a ``policy.checkpoint`` file (loadable by ``load_policy`` for evaluation) whose ``extra`` holds
the optimizer, scheduler, step, epoch, RNG states, the experiment config and the metrics window; all plain
tensors/data, readable with ``torch.load(weights_only=True)``. ``step_<k>.pt`` is written atomically (temp
file + ``os.replace``) and ``last.pt`` is then pointed at it by an atomic hard-link replace, so a killed
process leaves the previous ``last.pt`` intact, never a truncated one.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from vla_flow import config as cfgmod
from vla_flow.errors import UserError
from vla_flow.io import atomic_write_json, atomic_write_text


def ckpt_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _link_last(path: Path) -> None:
    last = path.parent / "last.pt"
    tmp = path.parent / f".last.pt.{os.getpid()}.tmp"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(path, tmp)
    except OSError:  # filesystem without hard links: copy, still atomic through the rename
        shutil.copyfile(path, tmp)
    os.replace(tmp, last)


def _prune(folder: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted((int(m.group(1)), p) for p in folder.glob("step_*.pt")
                   if (m := re.fullmatch(r"step_(\d+)\.pt", p.name)))
    for _, p in steps[:-keep]:
        p.unlink()


def save(out: Path, policy, opt, sched, step: int, epoch: int, exp, window: dict, keep_last: int) -> str:
    """Write step_<step>.pt and point last.pt at it; returns the step file's path."""
    from policy.checkpoint import save_checkpoint

    folder = ckpt_dir(out)
    path = folder / f"step_{step}.pt"
    save_checkpoint(path, policy, optimizer=opt.state_dict(), scheduler=sched.state_dict(), step=step,
                    epoch=epoch, rng=rng_state(), experiment=cfgmod.to_dict(exp), window=window)
    _link_last(path)
    _prune(folder, keep_last)
    return str(path)


def find_resume(resume: str | None, out: Path) -> Path | None:
    """``None`` -> fresh run (refused if RUN already has checkpoints); ``auto`` -> RUN's last.pt if any."""
    last = ckpt_dir(out) / "last.pt"
    if resume is None:
        if last.exists():
            raise UserError(f"{out} already holds a run ({last}); continue it with --resume auto, "
                            "or pick a new --out")
        return None
    if resume == "auto":
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise UserError(f"--resume {resume}: checkpoint not found (use --resume auto to continue {out} if possible)")
    return path


def resume_state(resume: str | None, out: Path, policy, opt, sched, device) -> dict:
    """Load model/optimizer/scheduler/RNG from the resume checkpoint; {"step": 0} for a fresh run."""
    from policy.checkpoint import check_finite_state, read_checkpoint

    path = find_resume(resume, out)
    for stale in ckpt_dir(out).glob(".*.tmp"):  # left by a process killed mid-write (SIGKILL skips cleanup)
        stale.unlink(missing_ok=True)
    if path is None:
        return {"step": 0}
    ckpt = read_checkpoint(path)
    check_finite_state(path, ckpt["state_dict"])
    extra = ckpt.get("extra", {})
    for key in ("optimizer", "scheduler", "step", "rng"):
        if key not in extra:
            raise UserError(f"{path}: no '{key}' in the checkpoint's extra: not a training checkpoint, "
                            "cannot resume from it")
    result = policy.load_state_dict(ckpt["state_dict"], strict=False)
    bad = [k for k in result.missing_keys if not k.startswith("encoder.")] + list(result.unexpected_keys)
    if bad:
        raise UserError(f"{path}: the checkpoint does not match this policy config (key '{bad[0]}'); "
                        "resume with the config the run was started with")
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    set_rng_state(extra["rng"])
    print(f"resuming from {path} at step {extra['step']}")
    return {"step": int(extra["step"]), "path": str(path), "window": extra.get("window")}


def write_run_info(out: Path, exp, data, sched, world: int, device) -> None:
    """RUN/config.yaml (the resolved experiment config) and RUN/run.json (data, cache, encoder, schedule)."""
    import yaml

    atomic_write_text(Path(out) / "config.yaml", yaml.safe_dump(cfgmod.to_dict(exp), sort_keys=False))
    atomic_write_json(Path(out) / "run.json", {
        "data": [str(df.path) for df in data.files], "instructions": [df.instruction for df in data.files],
        "train_frames": len(data.train), "val_frames": 0 if data.val is None else len(data.val),
        "features": data.mode, "cache": data.cache_info, "encoder": data.policy.provenance,
        "trainable_params": data.policy.num_trainable_params(), "steps_per_epoch": sched.steps_per_epoch,
        "total_steps": sched.total_steps, "world_size": world, "device": str(device),
        "torch": torch.__version__})


def check_init_from(path: str | None, pcfg) -> dict | None:
    """The checkpoint ``train.init_from`` names, read and checked against this run's policy config before any
    data or feature work (None when not fine-tuning). A different architecture or conditioning cannot start
    from these weights, so every differing ``policy.*`` key is named."""
    if not path:
        return None
    from policy.checkpoint import CheckpointError, read_checkpoint

    try:
        saved = read_checkpoint(path)
    except CheckpointError as exc:
        raise UserError(f"train.init_from: {exc}; give a policy checkpoint (a RUN/checkpoints/*.pt or an "
                        "exported policy.pt) or drop train.init_from to train from scratch") from None
    ours = cfgmod.to_dict(pcfg)
    # read as load_policy reads it: keys added since the checkpoint was saved take their defaults
    theirs = cfgmod.to_dict(cfgmod.from_dict(type(pcfg), saved["config"]))
    differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"policy.{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ[:3])
        raise UserError(f"train.init_from {path}: its policy config differs from this run's ({shown}"
                        + (f", and {len(differ) - 3} more" if len(differ) > 3 else "")
                        + "); fine-tune with the config it was trained with")
    return saved
