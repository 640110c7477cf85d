"""Stateless rectified-flow math, used by both training and sampling. The convention, stated once:

    t = 0 is noise, t = 1 is data.
    x0 ~ N(0, I)  (noise),  x1 = normalized action (chunk)  (data)
    x_t = t * x1 + (1 - t) * x0            (straight-line interpolation; Liu et al. 2022, "Flow Straight and Fast")
    target velocity  u = dx_t/dt = x1 - x0  (the network v(x_t, t, cond) regresses it with an MSE loss)
    sampling: integrate dx/dt = v(x, t) from t=0 (noise) to t=1 (action) in N steps of a solver on a time grid.

Solvers (``integrate``; N is always the number of solver STEPS, the network is called ``nfe(N, solver)`` times):
- "euler" (default; 1 evaluation per step): x_{k+1} = x_k + dt_k v(x_k, t_k). A perfectly straight flow
  (Liu et al. 2022) is integrated exactly by one Euler step, which is why rectified flow is cheap to sample.
- "midpoint" (2nd order, 2 evaluations per step): x_{k+1} = x_k + dt_k v(x_k + dt_k/2 v(x_k, t_k), t_k + dt_k/2);
  exact whenever v is affine in t along the path. Compare it with Euler at equal evaluations (midpoint N vs
  Euler 2N), not at equal N.
Time grids (``time_grid``; t_0 = 0 < ... < t_N = 1): "uniform" t_k = k/N (default); "cosine"
t_k = (1 - cos(pi k/N)) / 2, denser at both ends; "early" t_k = (k/N)^2, denser near the noise; "late"
t_k = 1 - (1 - k/N)^2, denser near the data. Straightness (``straightness``): the rectified-flow paper's
S = int_0^1 E || (x1 - x0) - v(x_t, t) ||^2 dt along the integrated path, 0 exactly for a straight flow.

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

import math
from typing import Callable

import torch

TimeSampling = str  # "uniform" | "logit_normal" | "beta"
PI0_S = 0.999
SOLVERS = ("euler", "midpoint")
TIME_GRIDS = ("uniform", "cosine", "early", "late")


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


def check_solver(num_steps, solver: str = "euler", time_grid: str = "uniform") -> None:
    """Raise ValueError naming the bad argument (a non-positive N, an unknown solver or grid) and the fix."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: {num_steps!r}; expected a positive integer (N >= 1 solver steps)")
    if solver not in SOLVERS:
        raise ValueError(f"solver: {solver!r} does not exist; expected one of {', '.join(SOLVERS)}")
    if time_grid not in TIME_GRIDS:
        raise ValueError(f"time_grid: {time_grid!r} does not exist; expected one of {', '.join(TIME_GRIDS)}")


def check_noise_scale(scale) -> float:
    """The initial-noise scale as a float (``policy.noise_scale``, ``eval.noise_scale``, ``--noise-scales``);
    ValueError naming it unless it is a number in [0, 10] (1 = N(0, I); 0 = start at x0 = 0)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= scale <= 10.0:
        raise ValueError(f"noise_scale: {scale!r}; expected a number in [0, 10] (1 = N(0, I) noise, 0 = x0 = 0)")
    return float(scale)


def nfe(num_steps: int, solver: str = "euler") -> int:
    """Network evaluations of ``num_steps`` steps of ``solver``."""
    return num_steps * (2 if solver == "midpoint" else 1)


def time_grid(num_steps: int, kind: str = "uniform") -> list[float]:
    """The N + 1 grid times t_0 = 0 < ... < t_N = 1 (python floats; see the module docstring)."""
    check_solver(num_steps, "euler", kind)
    u = [k / num_steps for k in range(num_steps + 1)]
    if kind == "cosine":
        u = [(1.0 - math.cos(math.pi * x)) / 2.0 for x in u]
    elif kind == "early":
        u = [x * x for x in u]
    elif kind == "late":
        u = [1.0 - (1.0 - x) ** 2 for x in u]
    u[0], u[-1] = 0.0, 1.0
    return u


def eval_times(num_steps: int, solver: str = "euler", kind: str = "uniform") -> list[float]:
    """Every time at which ``integrate`` calls the network, in call order (for hoisting time embeddings)."""
    grid = time_grid(num_steps, kind)
    if solver == "euler":
        return grid[:-1]
    return [t for a, b in zip(grid[:-1], grid[1:]) for t in (a, a + (b - a) / 2)]


def integrate(velocity_fn: VelocityFn, x0: torch.Tensor, num_steps: int, solver: str = "euler",
              time_grid_kind: str = "uniform", record: list | None = None) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t=0 to t=1: ``num_steps`` steps of ``solver`` on the grid.

    velocity_fn(x (B, ...), t (B,)) -> (B, ...); returns x at t=1, same shape as x0. ``record``, if a list,
    receives (t, dt, v) for each velocity that moved x (Euler: v(x_k, t_k); midpoint: the midpoint
    velocity), so ``straightness`` can be computed from the same calls. Euler on the uniform grid is
    ``euler_integrate`` bit for bit; every solver keeps its "running mean" property (a constant field gives
    exactly x0 + v for every N).
    """
    check_solver(num_steps, solver, time_grid_kind)
    if solver == "euler" and time_grid_kind == "uniform" and record is None:
        return euler_integrate(velocity_fn, x0, num_steps)
    grid = time_grid(num_steps, time_grid_kind)
    batch = x0.shape[0]
    x, mean_v = x0, torch.zeros_like(x0)
    uniform = time_grid_kind == "uniform"

    def at(t: float) -> torch.Tensor:
        return torch.full((batch,), t, device=x0.device, dtype=x0.dtype)

    for k in range(num_steps):
        t, dt = grid[k], grid[k + 1] - grid[k]
        v = velocity_fn(x, at(t))
        if solver == "midpoint":
            t_mid = t + dt / 2
            v = velocity_fn(x + (dt / 2) * v, at(t_mid))
            t = t_mid
        if record is not None:
            record.append((t, dt, v))
        # weighted running mean of the velocities: x_{k+1} = x0 + t_{k+1} * mean_v (see euler_integrate)
        mean_v = mean_v + (v - mean_v) / (k + 1) if uniform else mean_v + (v - mean_v) * (dt / grid[k + 1])
        x = x0 + (((k + 1) / num_steps) if uniform else grid[k + 1]) * mean_v
    return x


def straightness(x0: torch.Tensor, x1: torch.Tensor, record: list) -> torch.Tensor:
    """S per sample, shape (B,): sum_k dt_k * mean_d ((x1 - x0) - v_k)^2 over the velocities ``record``ed by
    ``integrate`` (a Riemann sum of the paper's integral; the squared norm is divided by the number of
    action dimensions so that S reads on the same scale as a per-dimension action MSE). 0 for a straight path."""
    delta = (x1 - x0).flatten(1)
    s = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    for _, dt, v in record:
        s = s + dt * (delta - v.flatten(1)).pow(2).mean(dim=1)
    return s


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
