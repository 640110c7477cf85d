"""Action and proprio normalization, with statistics stored as buffers in the policy's state dict.

Why a module with buffers: the statistics travel inside the checkpoint with the weights, so training and
evaluation can never disagree about them (LeRobot #2353 and openpi #773 were silent normalization bugs).
A policy whose statistics were never set refuses to run: the buffers start as NaN and every use checks them.

Statistics are per dimension (mean, std, min, max) computed from the TRAINING data (``compute_stats``).
The gripper action dimension is never rescaled: LIBERO's controller expects -1 (open) / +1 (close), and
mean/std scaling of a two-valued variable would only move those two points around.
Unnormalized actions are clipped to [-1, 1] (LIBERO's action range).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

STD_FLOOR = 1e-3  # a constant dimension (e.g. an unused joint) must not blow up to +-inf
STAT_NAMES = ("mean", "std", "min", "max")


def compute_stats(actions, joints, ee_pose, gripper=None) -> dict[str, dict[str, np.ndarray]]:
    """Per-dimension statistics of training arrays.

    actions (N, 7) or (N, H, 7); joints (N, 7); ee_pose (N, 7); gripper (N, 2) or None.
    Returns {"actions": {"mean","std","min","max": (D,) float32}, "joints": ..., "ee_pose": ..., "gripper": ...}.
    """
    arrays = {"actions": actions, "joints": joints, "ee_pose": ee_pose}
    if gripper is not None:
        arrays["gripper"] = gripper
    stats = {}
    for key, arr in arrays.items():
        a = np.asarray(arr, dtype=np.float64)
        a = a.reshape(-1, a.shape[-1])
        if a.shape[0] == 0 or not np.isfinite(a).all():
            raise ValueError(f"compute_stats: '{key}' is empty or has NaN/inf values")
        stats[key] = {"mean": a.mean(0), "std": a.std(0), "min": a.min(0), "max": a.max(0)}
        stats[key] = {k: v.astype(np.float32) for k, v in stats[key].items()}
    return stats


class Normalizer(nn.Module):
    """Holds the statistics of named features as buffers ``<key>_<stat>`` and applies them.

    kind: "mean_std" -> (x - mean) / std; "min_max" -> 2 (x - min) / (max - min) - 1.
    ``identity_dims``: {key: [dims]} left untouched (the gripper action dimension).
    """

    def __init__(self, dims: dict[str, int], kind: str = "mean_std", identity_dims: dict[str, list[int]] | None = None):
        super().__init__()
        if kind not in ("mean_std", "min_max"):
            raise ValueError(f"normalization: {kind!r}; expected 'mean_std' or 'min_max'")
        self.kind = kind
        self.dims = dict(dims)
        self.identity_dims = {k: list(v) for k, v in (identity_dims or {}).items()}
        for key, dim in self.dims.items():
            for stat in STAT_NAMES:
                self.register_buffer(f"{key}_{stat}", torch.full((dim,), float("nan")))

    def set_stats(self, stats: dict) -> None:
        """Copy statistics in; every key this normalizer needs must be present with the right shape."""
        for key, dim in self.dims.items():
            if key not in stats:
                raise KeyError(f"normalization stats: missing key '{key}' (have {sorted(stats)}); "
                               "compute them with policy.normalize.compute_stats on the training data")
            for stat in STAT_NAMES:
                if stat not in stats[key]:
                    raise KeyError(f"normalization stats: missing '{key}.{stat}'")
                value = torch.as_tensor(np.asarray(stats[key][stat]), dtype=torch.float32).reshape(-1)
                if value.shape[0] != dim:
                    raise ValueError(f"normalization stats: '{key}.{stat}' has {value.shape[0]} dims, expected {dim}")
                if not torch.isfinite(value).all():
                    raise ValueError(f"normalization stats: '{key}.{stat}' has NaN/inf values")
                getattr(self, f"{key}_{stat}").copy_(value)

    def get_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """Plain {key: {stat: tensor}} on CPU (what a checkpoint stores)."""
        return {k: {s: getattr(self, f"{k}_{s}").detach().cpu().clone() for s in STAT_NAMES} for k in self.dims}

    def _scale_shift(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) with normalized = (x - shift) / scale; identity dims get (1, 0)."""
        if key not in self.dims:
            raise KeyError(f"normalizer has no statistics for '{key}' (known: {sorted(self.dims)})")
        if torch.isnan(getattr(self, f"{key}_mean")).any():
            raise RuntimeError(f"normalization stats for '{key}' were never set: call policy.set_stats(stats) "
                               "with policy.normalize.compute_stats(...) of the training data, or load a checkpoint")
        if self.kind == "mean_std":
            shift = getattr(self, f"{key}_mean")
            scale = getattr(self, f"{key}_std").clamp_min(STD_FLOOR)
        else:
            lo, hi = getattr(self, f"{key}_min"), getattr(self, f"{key}_max")
            shift = (hi + lo) / 2
            scale = ((hi - lo) / 2).clamp_min(STD_FLOOR)
        dims = self.identity_dims.get(key, [])
        if dims:
            scale, shift = scale.clone(), shift.clone()
            scale[dims] = 1.0
            shift[dims] = 0.0
        return scale, shift

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) raw -> normalized."""
        scale, shift = self._scale_shift(key)
        return (x - shift.to(x.dtype)) / scale.to(x.dtype)

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """x (..., D) normalized -> raw."""
        scale, shift = self._scale_shift(key)
        return x * scale.to(x.dtype) + shift.to(x.dtype)
