"""Policy checkpoints: tensors and plain data only, loadable with ``torch.load(weights_only=True)``.

Layout of the saved dict:
    format            "vla-flow-policy", format_version 1
    config            PolicyConfig as a plain dict
    state_dict        trainable weights + normalization buffers ("normalizer.*"); the frozen CLIP weights
                      ("encoder.*") only with include_encoder=True (150M parameters, ~600 MB for ViT-B/16)
    stats             the normalization statistics again as {key: {mean, std, min, max}} for readers
    provenance        encoder provenance: model, pretrained, random_init, init_seed, weights_file, fingerprint
    versions          torch / open_clip / numpy / python versions
    trainable_params  int
    extra             whatever the caller passed as **extra (optimizer / scheduler state, step, ...)

Without the encoder weights, loading rebuilds the frozen encoder from its provenance (the openai / local file,
or the same random-init seed) and compares its fingerprint; a mismatch is an error, never a silent change of
features. Missing, unexpected or mis-shaped keys are errors that name the key.
"""
from __future__ import annotations

import io
import math
import os
import platform
import zipfile
from pathlib import Path

import torch

from policy.configuration import PolicyConfig
from policy.modeling import FlowPolicy
from vla_flow import config as cfgmod
from vla_flow.errors import UserError
from vla_flow.io import atomic_path

FORMAT = "vla-flow-policy"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "config", "state_dict", "provenance")
ENCODER_PREFIX = "encoder."


class CheckpointError(UserError):
    """The checkpoint file is missing, unreadable, or does not match the policy code."""


def _versions() -> dict:
    import numpy
    import open_clip

    return {"torch": str(torch.__version__), "open_clip": str(open_clip.__version__), "numpy": str(numpy.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: str | Path, policy: FlowPolicy, include_encoder: bool = False, **extra) -> Path:
    """Write ``policy`` atomically to ``path``; ``extra`` must hold only tensors / plain data."""
    state = {k: v.detach().cpu() for k, v in policy.state_dict().items()
             if include_encoder or not k.startswith(ENCODER_PREFIX)}
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfgmod.to_dict(policy.cfg),
        "state_dict": state,
        "stats": {k: {s: v.numpy().tolist() for s, v in d.items()} for k, d in policy.normalizer.get_stats().items()},
        "provenance": policy.provenance,
        "versions": _versions(),
        "trainable_params": policy.num_trainable_params(),
        "includes_encoder": include_encoder,
        "extra": extra,
    }
    return _write(Path(path), ckpt)


def _write(path: Path, ckpt: dict) -> Path:
    buf = io.BytesIO()  # serialize in memory: a full disk then fails in a plain write, whose OSError (ENOSPC)
    torch.save(ckpt, buf)  # atomic_path turns into one clear error (torch's own writer says "unexpected pos")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
    return path


# What a training checkpoint carries only to resume training (train/checkpoints.py): Adam's two moments alone
# are twice the weights, so a published policy is a third of last.pt's size without them.
TRAINING_STATE = ("optimizer", "scheduler", "rng", "window")


def export_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write ``src`` to ``dst`` without its training state: the weights (bit for bit), config, statistics,
    provenance and ``extra`` minus :data:`TRAINING_STATE`, plus ``extra["exported_from"]``. The copy loads
    with ``load_policy`` / ``vla-flow eval`` / ``predict`` and predicts exactly as ``src``; it cannot resume
    training. ``src`` is checked by loading it first (keys, shapes, encoder fingerprint, finite weights)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise CheckpointError(f"--out {dst} is the checkpoint itself; pick another file name")
    load_policy(src)
    ckpt = read_checkpoint(src)
    extra = dict(ckpt.get("extra") or {})
    dropped = [k for k in TRAINING_STATE if extra.pop(k, None) is not None]
    extra["exported_from"] = {"path": str(src), "dropped": dropped}
    ckpt["extra"] = extra
    return _write(dst, ckpt)


def _intact_sibling(path: Path) -> Path | None:
    """The newest ``step_<k>.pt`` beside ``path`` (not ``path`` itself, nor a hard link to it) whose zip
    directory is intact: what to use instead of a damaged ``last.pt``."""
    steps = sorted(((int(p.stem[5:]), p) for p in path.parent.glob("step_*.pt") if p.stem[5:].isdigit()),
                   reverse=True)
    for _, cand in steps:
        try:
            if os.path.samefile(cand, path):
                continue
        except OSError:
            continue
        if zipfile.is_zipfile(cand):
            return cand
    return None


def _unreadable(path: Path, reason: str) -> CheckpointError:
    """The error for a checkpoint file that cannot be loaded, with an intact sibling to use if there is one."""
    alt = _intact_sibling(path)
    fix = (f"An earlier checkpoint beside it looks intact: {alt} (train: --resume {alt}; eval/predict: "
           f"--checkpoint {alt})" if alt else "Use another checkpoint, or retrain")
    return CheckpointError(f"{path}: {reason}. {fix}")


def _load_file(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with a reason a person can act on when the file is not a checkpoint."""
    size = path.stat().st_size
    if size == 0:
        raise _unreadable(path, "the file is empty (0 bytes): not a checkpoint; a copy or save was cut off")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        kind = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "data"
        raise _unreadable(path, f"not a PyTorch checkpoint (it starts with {head!r}: {kind}, not a torch zip "
                                "archive); was another file renamed to .pt?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, non-plain objects
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = f"holds objects other than tensors and plain data, refused by torch.load(weights_only=True): {first}"
        else:
            reason = f"damaged or truncated ({type(exc).__name__}: {first}), size {size} bytes"
        raise _unreadable(path, reason) from exc


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict (weights_only=True), with its required keys checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = _load_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a vla-flow policy checkpoint (top level is {type(ckpt).__name__})")
    for key in REQUIRED:
        if key not in ckpt:
            raise CheckpointError(f"{path}: missing key '{key}' (not a vla-flow policy checkpoint, or truncated)")
    if ckpt["format"] != FORMAT or ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {ckpt['format']!r} v{ckpt['format_version']}, "
                              f"expected {FORMAT!r} v{FORMAT_VERSION}")
    return ckpt


def _check_state(path: Path, expected: dict, state: dict, includes_encoder: bool) -> None:
    want = {k: v for k, v in expected.items() if includes_encoder or not k.startswith(ENCODER_PREFIX)}
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing:
        raise CheckpointError(f"{path}: state_dict is missing key '{missing[0]}'"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{path}: state_dict has unexpected key '{unexpected[0]}'"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(want[key].shape):
            raise CheckpointError(f"{path}: key '{key}' has shape {tuple(tensor.shape)}, "
                                  f"the policy expects {tuple(want[key].shape)}")


def _check_fingerprint(path: Path, saved: dict, rebuilt: dict) -> None:
    a, b = saved.get("fingerprint"), rebuilt.get("fingerprint")
    if a is None or b is None:
        return
    if not all(math.isclose(x, y, rel_tol=1e-7, abs_tol=1e-6) for x, y in zip(a, b)):
        raise CheckpointError(f"{path}: the rebuilt frozen encoder differs from the one trained with "
                              f"(fingerprint {b} vs saved {a}; provenance {saved}). Use the same weights file / "
                              "library versions, or re-save the checkpoint with include_encoder=True")


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> FlowPolicy:
    """Rebuild the policy from ``path`` on ``device`` (eval mode)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    cfg = cfgmod.from_dict(PolicyConfig, ckpt["config"])
    policy = FlowPolicy(cfg)
    includes_encoder = bool(ckpt.get("includes_encoder", False))
    state = ckpt["state_dict"]
    _check_state(path, policy.state_dict(), state, includes_encoder)
    if not includes_encoder:
        _check_fingerprint(path, ckpt["provenance"], policy.provenance)
    check_finite_state(path, state)
    policy.load_state_dict(state, strict=includes_encoder)
    if torch.isnan(policy.normalizer.actions_mean).any():
        raise CheckpointError(f"{path}: normalization stats were never set before saving (NaN buffers)")
    policy.checkpoint_path = str(path)  # named by policy/guard.py if an output is ever not finite
    return policy.to(device).eval()


def check_finite_state(path: Path, state: dict) -> None:
    """Every floating tensor of ``state`` finite, except the normalizer (checked apart: NaN means unset)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
           and not k.startswith("normalizer.") and not bool(torch.isfinite(v).all())]
    if bad:
        alt = _intact_sibling(Path(path))
        raise CheckpointError(
            f"{path}: weight '{bad[0]}'" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            + " holds NaN or inf values; the run that saved it diverged or the file was damaged. "
            + (f"Try an earlier checkpoint, e.g. {alt}, or retrain" if alt else "Use an earlier checkpoint or retrain"))
