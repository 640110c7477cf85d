"""Exact tests of the rectified-flow math (policy/flow.py)."""
import math

import pytest
import torch

from policy import flow


def test_convention_interpolate_and_target():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(3, 2, 7, generator=g), torch.randn(3, 2, 7, generator=g)
    assert torch.equal(flow.interpolate(x0, x1, torch.zeros(3)), x0)  # t=0 is noise
    assert torch.equal(flow.interpolate(x0, x1, torch.ones(3)), x1)  # t=1 is data
    t = torch.tensor([0.25, 0.5, 0.75])
    xt = flow.interpolate(x0, x1, t)
    assert torch.allclose(xt, x0 + t[:, None, None] * flow.target(x0, x1), atol=1e-6)


def test_constant_field_n1_equals_n50_exactly():
    g = torch.Generator().manual_seed(1)
    x0, v = torch.randn(5, 3, 7, generator=g), torch.randn(5, 3, 7, generator=g)
    results = [flow.euler_integrate(lambda x, t: v, x0, n) for n in (1, 2, 3, 7, 10, 50)]
    for r in results[1:]:
        assert torch.equal(r, results[0])
    assert torch.equal(results[0], x0 + v)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 50])
def test_euler_matches_closed_form(n):
    x0 = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    a = -0.7
    # Linear field v = a x: Euler gives x0 (1 + a/N)^N exactly; the ODE solution is x0 e^a.
    out = flow.euler_integrate(lambda x, t: a * x, x0, n)
    assert torch.allclose(out, x0 * (1 + a / n) ** n, rtol=1e-12, atol=1e-12)
    if n == 50:
        assert torch.allclose(out, x0 * math.exp(a), rtol=1e-2)
    # Time-only field v = t: Euler sums k/N * 1/N = (N - 1) / (2N); the ODE solution is x0 + 1/2.
    out = flow.euler_integrate(lambda x, t: t[:, None].expand_as(x), x0, n)
    assert torch.allclose(out, x0 + (n - 1) / (2 * n), rtol=1e-12, atol=1e-12)


def test_euler_visits_uniform_times():
    seen = []
    flow.euler_integrate(lambda x, t: seen.append(t.clone()) or torch.zeros_like(x), torch.zeros(2, 7), 4)
    assert [float(t[0]) for t in seen] == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize("kind", ["uniform", "logit_normal", "beta"])
def test_sample_time_range_and_reproducible(kind):
    t1 = flow.sample_time(4096, kind, generator=torch.Generator().manual_seed(3))
    t2 = flow.sample_time(4096, kind, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2) and t1.shape == (4096,)
    assert float(t1.min()) >= 0.0 and float(t1.max()) <= 1.0
    if kind == "beta":  # pi0's: more weight near t=0 (noise), never above s
        assert float(t1.mean()) < 0.45 and float(t1.max()) <= flow.PI0_S
    else:
        assert abs(float(t1.mean()) - 0.5) < 0.03


def test_bad_arguments():
    with pytest.raises(ValueError, match="time_sampling"):
        flow.sample_time(2, "gaussian")
    with pytest.raises(ValueError, match="num_steps"):
        flow.euler_integrate(lambda x, t: x, torch.zeros(1, 7), 0)
