"""Solvers, time grids and straightness (policy/flow.py), and how the policy exposes them (exact tests)."""
import math

import numpy as np
import pytest
import torch

from eval.config import EvalConfig
from policy import flow
from policy.configuration import PolicyConfig
from policy.modeling import PolicyInputError
from tests.policy.test_modeling import inputs, make_policy

SETTINGS = [(s, g) for s in flow.SOLVERS for g in flow.TIME_GRIDS]


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("grid", flow.TIME_GRIDS)
def test_midpoint_is_exact_for_a_field_linear_in_t(n, grid):
    # v = a + b t: x(1) = x0 + a + b/2. Midpoint integrates a linear function of t exactly on any grid;
    # Euler does not (it misses b / (2N) on the uniform grid).
    x0 = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    a, b = torch.tensor([0.3, -1.1, 2.0], dtype=torch.float64), torch.tensor([1.5, 0.25, -3.0], dtype=torch.float64)
    field = lambda x, t: a + b * t[:, None]  # noqa: E731
    exact = x0 + a + b / 2
    assert torch.allclose(flow.integrate(field, x0, n, "midpoint", grid), exact, rtol=0, atol=1e-12)
    if grid == "uniform":
        assert torch.allclose(flow.integrate(field, x0, n, "euler", grid), exact - b / (2 * n), atol=1e-12)


def test_midpoint_is_second_order_and_euler_first_order():
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    exact = x0 * math.exp(-1.0)  # dx/dt = -x
    err = {s: [float((flow.integrate(lambda x, t: -x, x0, n, s) - exact).abs().max()) for n in (8, 16)]
           for s in flow.SOLVERS}
    assert 1.8 < err["euler"][0] / err["euler"][1] < 2.2
    assert 3.6 < err["midpoint"][0] / err["midpoint"][1] < 4.4


@pytest.mark.parametrize("solver,grid", SETTINGS)
def test_constant_field_is_exact_for_every_solver_grid_and_n(solver, grid):
    g = torch.Generator().manual_seed(1)
    x0, v = torch.randn(4, 3, 7, generator=g), torch.randn(4, 3, 7, generator=g)
    for n in (1, 2, 5, 13):
        assert torch.equal(flow.integrate(lambda x, t: v, x0, n, solver, grid), x0 + v)


def test_straightness_of_an_exactly_straight_field_is_zero_and_positive_for_a_curved_one():
    # Dyadic values: every sum is exact in float32, so S is exactly 0 (not merely small).
    x0 = torch.tensor([[0.5, -1.0, 2.0], [0.25, 0.0, -0.75]])
    v = torch.tensor([[1.0, 0.5, -2.0], [-0.25, 1.5, 0.125]])
    for solver, grid in SETTINGS:
        for n in (1, 4, 16):
            record: list = []
            x1 = flow.integrate(lambda x, t: v, x0, n, solver, grid, record=record)
            assert len(record) == n
            assert torch.equal(flow.straightness(x0, x1, record), torch.zeros(2))
    record = []
    x1 = flow.integrate(lambda x, t: -x, x0, 50, "euler", record=record)  # x0 e^{-t}: a curved path
    assert (flow.straightness(x0, x1, record) > 1e-3).all()


@pytest.mark.parametrize("solver,grid", SETTINGS)
def test_grid_and_eval_times_are_what_integrate_visits(solver, grid):
    n = 5
    ts = flow.time_grid(n, grid)
    assert ts[0] == 0.0 and ts[-1] == 1.0 and all(b > a for a, b in zip(ts, ts[1:]))
    seen = []
    flow.integrate(lambda x, t: seen.append(float(t[0])) or torch.zeros_like(x), torch.zeros(2, 7), n, solver, grid)
    expect = torch.tensor(flow.eval_times(n, solver, grid), dtype=torch.float32).tolist()
    assert seen == expect and len(seen) == flow.nfe(n, solver)


def test_euler_uniform_through_integrate_is_euler_integrate_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 4, 7, generator=g)
    w = torch.randn(7, 7, generator=g)
    field = lambda x, t: torch.tanh(x @ w) * (1 + t[:, None, None])  # noqa: E731
    for n in (1, 3, 10):
        record: list = []
        a = flow.euler_integrate(field, x0, n)
        assert torch.equal(flow.integrate(field, x0, n), a)
        assert torch.equal(flow.integrate(field, x0, n, record=record), a)  # the recording path too


def test_bad_solver_grid_and_n_raise_errors_that_name_the_fix():
    with pytest.raises(ValueError, match="solver: 'rk4' does not exist; expected one of euler, midpoint"):
        flow.integrate(lambda x, t: x, torch.zeros(1, 7), 2, "rk4")
    with pytest.raises(ValueError, match="time_grid: 'log'"):
        flow.time_grid(3, "log")
    for n in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_steps"):
            flow.integrate(lambda x, t: x, torch.zeros(1, 7), n)
    with pytest.raises(ValueError, match="solver"):
        PolicyConfig(solver="rk4")
    with pytest.raises(ValueError, match="solver: 'heun' does not exist"):
        EvalConfig(solver="heun")
    with pytest.raises(ValueError, match="time_grid"):
        EvalConfig(time_grid="log")


def test_policy_default_is_unchanged_euler_and_solver_is_a_call_argument():
    policy = make_policy(chunk_size=4, n_action_steps=2)
    x = inputs(2)
    noise = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cond = policy.condition(policy.encode_images(x["images"]), policy.encode_text(x["instructions"]),
                                torch.as_tensor(x["joints"]).float(), torch.as_tensor(x["ee_pose"]).float())
        ref = flow.euler_integrate(lambda xt, t: policy.head(xt, t, cond), noise, 4)
        assert torch.allclose(policy.sample_normalized(cond, 4, noise), ref, atol=1e-6)  # default: euler, uniform
        for solver, grid in SETTINGS:  # the hoisted sampler equals the plain head on every grid
            slow = flow.integrate(lambda xt, t: policy.head(xt, t, cond), noise, 3, solver, grid)
            assert torch.allclose(policy.sample_normalized(cond, 3, noise, solver, grid), slow, atol=1e-5)
    a = policy.predict(**x, num_flow_steps=2, noise=noise)
    b = policy.predict(**x, num_flow_steps=2, noise=noise, solver="euler", time_grid="uniform")
    c = policy.predict(**x, num_flow_steps=2, noise=noise, solver="midpoint")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(PolicyInputError, match="solver: 'rk4'"):
        policy.predict(**x, num_flow_steps=2, noise=noise, solver="rk4")
    with pytest.raises(PolicyInputError, match="num_flow_steps"):
        policy.predict(**x, num_flow_steps=0, noise=noise)


def test_noise_scale_scales_the_start_and_zero_returns_the_head_at_the_centre():
    policy = make_policy(chunk_size=4, n_action_steps=2)
    x = inputs(2)
    g = torch.Generator().manual_seed(4)
    noise, other = torch.randn(2, 4, 7, generator=g), torch.randn(2, 4, 7, generator=g)
    with torch.no_grad():
        cond = policy.condition(policy.encode_images(x["images"]), policy.encode_text(x["instructions"]),
                                torch.as_tensor(x["joints"]).float(), torch.as_tensor(x["ee_pose"]).float())
        centre = policy.normalizer.unnormalize("actions", policy.head(torch.zeros(2, 4, 7), torch.zeros(2), cond))
    assert policy.cfg.noise_scale == 1.0  # default: N(0, I) as before
    full = policy.predict(**x, num_flow_steps=3, noise=noise)
    half_by_hand = policy.predict(**x, num_flow_steps=3, noise=noise * 0.5)
    policy.cfg.noise_scale = 0.5
    assert np.array_equal(policy.predict(**x, num_flow_steps=3, noise=noise), half_by_hand)
    policy.cfg.noise_scale = 0.0
    zero = policy.predict(**x, num_flow_steps=1, noise=noise)
    assert np.array_equal(zero, policy.predict(**x, num_flow_steps=1, noise=other))  # the noise no longer matters
    assert np.allclose(zero, centre.clamp(-1, 1).numpy(), atol=1e-6)  # one step from 0: v(0, 0) unnormalized
    assert not np.array_equal(policy.predict(**x, num_flow_steps=3, noise=noise), full)


@pytest.mark.parametrize("bad", [-0.5, 11, "a", True, float("nan")])
def test_bad_noise_scale_names_the_setting(bad):
    with pytest.raises(ValueError, match="noise_scale"):
        PolicyConfig(noise_scale=bad)
    with pytest.raises(ValueError, match="noise_scale"):
        EvalConfig(noise_scale=bad)
