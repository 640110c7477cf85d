"""Stateless rectified-flow math, used by both training and sampling. The convention, stated once:

    t = 0 is noise, t = 1 is data.
    x0 ~ N(0, I)  (noise),  x1 = normalized action (chunk)  (data)
    x_t = t * x1 + (1 - t) * x0            (straight-line interpolation; Liu et al. 2022, "Flow Straight and Fast")
    target velocity  u = dx_t/dt = x1 - x0  (the network v(x_t, t, cond) regresses it with an MSE loss)
    sampling: integrate dx/dt = v(x, t) from t=0 (noise) to t=1 (action) with N Euler steps.

Time distribution for training (``sample_time``):
- "uniform" (default): t ~ U[0, 1], the original rectified flow. Our sweeps evaluate N in {1, 2, 5, 10, 50},
  so the sampler visits every part of [0, 1) (N=1 only t=0, N=50 everywhere); a uniform t trains all of
  those times equally, with no extra hyperparameter.
- "logit_normal": t = sigmoid(n), n ~ N(0, 1) (SD3, Esser et al. 2024): puts weight on the middle times, where
  the velocity is hardest to predict; fewer samples near t=0, which the N=1 sampler relies on.
- "beta": pi0's choice (Black et al. 2024), written in our direction: t = s * (1 - u), u ~ Beta(1.5, 1),
  s = 0.999. Density rises toward t = 0 (the noisy end), which pi0 argues matters most for action chunks
  conditioned on a rich observation, and never samples t > s.
The step count N is always a call argument, never part of a model.
"""
from __future__ import annotations

from typing import Callable

import torch

TimeSampling = str  # "uniform" | "logit_normal" | "beta"
PI0_S = 0.999


def sample_time(batch_size: int, kind: str = "uniform", *, device=None, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Training times t, shape (B,), in [0, 1], from the named distribution (see the module docstring)."""
    if kind == "uniform":
        return torch.rand(batch_size, device=device, generator=generator, dtype=dtype)
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(batch_size, device=device, generator=generator, dtype=dtype))
    if kind == "beta":
        # Beta(1.5, 1) by inverse CDF: F(u) = u^1.5, so u = r^(1/1.5); uses the generator, unlike torch.distributions.
        r = torch.rand(batch_size, device=device, generator=generator, dtype=dtype)
        return PI0_S * (1.0 - r.pow(1.0 / 1.5))
    raise ValueError(f"time_sampling: {kind!r}; expected 'uniform', 'logit_normal' or 'beta'")


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts against ``like`` (B, ...)."""
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1))).to(like.dtype)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * x1 + (1 - t) * x0. x0, x1: (B, ...); t: (B,)."""
    tb = _bcast(t, x1)
    return tb * x1 + (1.0 - tb) * x0


def target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The regression target u = x1 - x0 (the constant velocity of the straight path)."""
    return x1 - x0


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_integrate(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t=0 to t=1 with ``num_steps`` uniform Euler steps.

    velocity_fn(x (B, ...), t (B,)) -> (B, ...). Returns x at t=1, same shape as x0.

    Written in the equivalent "running mean" form: after k steps x_k = x0 + t_k * a_k, where a_k is the mean
    of the k velocities seen so far (a_{k+1} = a_k + (v_k - a_k) / (k + 1)). In exact arithmetic this is
    identical to x_{k+1} = x_k + v_k / N; in floating point it has one extra property the tests rely on: for a
    constant velocity field a_k == v bit for bit, so every N gives exactly x0 + v (N=1 equals N=50 exactly).
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: {num_steps!r}; expected a positive integer")
    batch = x0.shape[0]
    x = x0
    mean_v = torch.zeros_like(x0)
    for k in range(num_steps):
        t = torch.full((batch,), k / num_steps, device=x0.device, dtype=x0.dtype)
        v = velocity_fn(x, t)
        mean_v = mean_v + (v - mean_v) / (k + 1)
        x = x0 + ((k + 1) / num_steps) * mean_v
    return x
