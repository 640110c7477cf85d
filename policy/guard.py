"""The one check every policy output passes (``FlowPolicy.predict`` calls it last): finite and in [-1, 1].

Why one place: predict serves ``vla-flow predict``, evaluation and DAgger; a NaN weight or an overflow in
the head must stop all of them with the same clear error, never reach a robot (or a simulator, where it
looks like a policy failure). ``load_policy`` records the checkpoint path on the policy so the message can
name it.
"""
from __future__ import annotations

import numpy as np

from vla_flow.errors import UserError


class PolicyOutputError(UserError):
    """The policy produced NaN/inf or out-of-range actions; the message names the checkpoint."""


def check_actions(actions: np.ndarray, policy) -> np.ndarray:
    """Return ``actions`` (B, H, 7) unchanged if every value is finite and in [-1, 1]; else raise."""
    a = np.asarray(actions)
    finite = np.isfinite(a)
    if finite.all() and (a.size == 0 or float(np.abs(a).max()) <= 1.0):
        return actions
    source = getattr(policy, "checkpoint_path", None) or "this policy (not loaded from a checkpoint)"
    n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    what = (f"{n_nan} NaN and {n_inf} inf values" if not finite.all()
            else f"values outside [-1, 1] (max |a| = {float(np.abs(a).max()):.3g})")
    raise PolicyOutputError(
        f"checkpoint {source} produced {what} in a {a.shape} action batch; no action was used. "
        "Its weights or normalization stats are broken (e.g. a diverged run): use an earlier checkpoint "
        "(RUN/checkpoints/step_*.pt) or retrain")
